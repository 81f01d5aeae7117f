"""ECGs per second from the converted Arrow store into training tensors vs `wfdb.rdsamp` of the same records.

    python -m bench.loader [--subjects 700] [--batch_size 64] [--work_dir /tmp/cmelt_bench_loader]

Builds a synthetic MIMIC-IV-ECG tree (data.synthetic.write_mimic_tree), converts it (data.mimic_iv_ecg), then reads
every record in batches of 64 three ways: the store with `with_format("numpy")` + `decode_ecg` (what a training
loop does), the store through Arrow buffers (zero-copy int16 view + `decode_ecg`), and `wfdb.rdsamp` per record
(+ stacking into the same float32 (batch, 12, 5000) tensor). Goal: >= 2,000 ECG/s and >= 20x wfdb.
Prints a table and writes bench/results/loader.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cmelt.data.ecg_store import NUM_LEADS, NUM_SAMPLES, decode_ecg

RESULTS = Path(__file__).resolve().parent / "results"


def arrow_int16(table_column) -> np.ndarray:
    """(rows, 12, 5000) int16 view of an `ecg` Arrow column (Array2D storage: list<list<int16>>)."""
    chunks = []
    for chunk in table_column.chunks:
        storage = chunk.storage if hasattr(chunk, "storage") else chunk
        values = storage.flatten().flatten()
        chunks.append(values.to_numpy(zero_copy_only=False).reshape(len(chunk), NUM_LEADS, NUM_SAMPLES))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

from bench.machine import machine_info, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=700)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--work_dir", default="/tmp/cmelt_bench_loader")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from datasets import load_from_disk

    from cmelt.data.mimic_iv_ecg import convert_mimic_iv_ecg, load_mimic_index
    from cmelt.data.synthetic import write_mimic_tree

    work = Path(args.work_dir)
    root, out = work / "mimic", work / "converted"
    if not (root / "record_list.csv").is_file():
        write_mimic_tree(root, args.subjects, seed=0)
    if not (out / "dataset_dict.json").is_file():
        convert_mimic_iv_ecg(root, out, num_proc=2, valid_fraction=0.0, shard_size=500)
    dataset = load_from_disk(str(out))["train"]
    count = len(dataset)
    batch = args.batch_size

    def store_numpy():
        formatted = dataset.with_format("numpy", columns=["ecg", "lead_mask"])
        for start in range(0, count, batch):
            rows = formatted[start : start + batch]
            torch.from_numpy(decode_ecg(rows["ecg"])), torch.from_numpy(rows["lead_mask"])

    def store_arrow():
        formatted = dataset.with_format("arrow", columns=["ecg", "lead_mask"])
        for start in range(0, count, batch):
            rows = formatted[start : start + batch]
            torch.from_numpy(decode_ecg(arrow_int16(rows.column("ecg"))))

    paths = [str(root / path) for path in load_mimic_index(root)["path"]]
    wfdb_count = min(count, 1000)

    def with_wfdb():
        import wfdb

        for start in range(0, wfdb_count, batch):
            signals = [wfdb.rdsamp(path)[0].T for path in paths[start : start + batch]]
            torch.from_numpy(np.stack(signals).astype(np.float32))

    results = {}
    for name, function, records in (("store numpy format", store_numpy, count), ("store arrow view", store_arrow, count),
                                    ("wfdb.rdsamp", with_wfdb, wfdb_count)):
        function()  # warm the page cache and imports
        best = min(_timed(function) for _ in range(3))
        results[name] = {"records": records, "seconds": best, "ecg_per_second": records / best}
    wfdb_rate = results["wfdb.rdsamp"]["ecg_per_second"]
    print(f"{'reader':<20} {'records':>8} {'seconds':>9} {'ECG/s':>10} {'vs wfdb':>8}")
    for name, row in results.items():
        row["speedup_vs_wfdb"] = row["ecg_per_second"] / wfdb_rate
        print(f"{name:<20} {row['records']:>8} {row['seconds']:>9.3f} {row['ecg_per_second']:>10.0f} {row['speedup_vs_wfdb']:>7.1f}x")
    summary = {
        "name": "loader",
        "command": "python -m bench.loader " + " ".join(sys.argv[1:]),
        # the training path (numpy format + decode_ecg) must reach 2,000 ECG/s; the 20x-wfdb goal is in the rows
        "goal": {"metric": "ecg_per_second", "op": ">=", "value": 2000, "row": {"reader": "store numpy format"}},
        "batch_size": batch,
        "rows": [{"reader": name, **{k: round(v, 3) for k, v in row.items()}} for name, row in results.items()],
        "machine": machine_info(),
    }
    write_result(RESULTS / "loader.json", summary)


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
