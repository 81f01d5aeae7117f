"""CODE-test (Ribeiro et al. 2020): 827 exams, 6 labels 1dAVb, RBBB, LBBB, SB, AF, ST; test split only.

Layout (Zenodo 3765780 + the GitHub `data/` folder):
    ROOT/ecg_tracings.hdf5                    dataset `tracings` (827, 4096, 12) float32, 400 Hz,
                                              leads DI DII DIII AVR AVL AVF V1..V6
    ROOT/annotations/gold_standard.csv        header 1dAVb,RBBB,LBBB,SB,AF,ST; row i <-> tracing i
    ROOT/attributes.csv                       (age,sex; not used)

Each tracing is 7 s or 10 s zero-padded on both sides to 4096 samples; the padding (samples that are exactly
zero on every lead at either end) is trimmed, then the exam is resampled to 500 Hz and right-padded / cut to 10 s
by `to_canonical`. Amplitudes are taken as millivolts (see `reading_cmelt.read_hdf5`). Labels are read by column
name, never by position.

CLI: `python -m cmelt.data.code_test ROOT`.
"""

from __future__ import annotations

import logging

import argparse
import os
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from cmelt.data.downstream import (
    DownstreamReport,
    RecordJob,
    add_common_cli_arguments,
    build_dataset_dict,
    downstream_features,
    finish_cli,
    label_columns,
    label_names,
)
from cmelt.data.labels import label_codes

LABEL_SET = "code_test"
TRACINGS_FILE = "ecg_tracings.hdf5"
GOLD_STANDARD_FILE = Path("annotations") / "gold_standard.csv"

__all__ = ["load_code_test", "label_names"]


def _num_tracings(path: Path, dataset: str) -> int:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if dataset not in handle:
                raise ValueError(f"{path}: no dataset {dataset!r} (found {sorted(handle.keys())})")
            return int(handle[dataset].shape[0])
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error})") from error


def load_code_test(
    root: str | os.PathLike,
    *,
    hdf5_dataset: str = "tracings",
    num_proc: int = 1,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
    output_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """CODE-test as a DatasetDict with only a "test" split (`seed` unused; kept for the common signature)."""
    del seed
    root = Path(root)
    tracings = root / TRACINGS_FILE
    if not tracings.is_file():
        candidates = sorted(root.glob("*.hdf5")) + sorted(root.glob("*.h5"))
        if len(candidates) != 1:
            raise ValueError(f"{root}: expected {TRACINGS_FILE} (found {[path.name for path in candidates]})")
        tracings = candidates[0]
    gold_path = root / GOLD_STANDARD_FILE
    if not gold_path.is_file():
        raise ValueError(f"{gold_path}: gold-standard annotations not found")
    codes = label_codes(LABEL_SET)
    gold = pd.read_csv(gold_path)
    missing = set(codes) - set(gold.columns)
    if missing:
        raise ValueError(f"{gold_path}: expected columns {','.join(codes)}; missing {sorted(missing)}")
    count = _num_tracings(tracings, hdf5_dataset)
    if count != len(gold):
        raise ValueError(f"{tracings} holds {count} tracings but {gold_path} has {len(gold)} rows; they must match")
    report = report if report is not None else DownstreamReport()
    values = gold[codes].to_numpy()
    jobs = [
        RecordJob(
            record_id=str(index),
            path=str(tracings),
            columns=label_columns([column for column in range(len(codes)) if values[index, column] == 1], len(codes)),
            read_kwargs={"hdf5_index": index, "hdf5_dataset": hdf5_dataset},
            trim_zero_edges=True,
        )
        for index in range(count)
    ]
    dataset_dict = build_dataset_dict(
        "code_test", {"test": jobs}, downstream_features(codes), report, num_proc=num_proc, cache_dir=cache_dir
    )
    report.print_and_save("CODE-test", output_dir)
    return dataset_dict


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description="Load CODE-test and print its size and class counts.")
    parser.add_argument("root", help=f"folder holding {TRACINGS_FILE} and {GOLD_STANDARD_FILE}")
    add_common_cli_arguments(parser)
    args = parser.parse_args(argv)
    dataset_dict = load_code_test(args.root, num_proc=args.num_proc, cache_dir=args.cache_dir, output_dir=args.output_dir)
    finish_cli("CODE-test", dataset_dict, args.output_dir)


if __name__ == "__main__":
    main()
