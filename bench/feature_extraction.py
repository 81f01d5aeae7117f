"""Throughput of CMELTFeatureExtractor: real WFDB files and in-memory arrays -> 12 x 5000 canonical input.

    python -m bench.feature_extraction [--repetitions 2000] [--workers 2]

Goal: >= 500 records/s for the 1000 Hz 15-channel PTB record s0010_re (read + resample + crop) on 2 cores.
Writes bench/results/feature_extraction.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor

from bench.machine import machine_info, write_result

REPO = Path(__file__).resolve().parents[1]
WFDB_DIR = REPO.parent / "shared" / "data" / "wfdb"
RESULTS = REPO / "bench" / "results" / "feature_extraction.json"


def _files_per_second(record: str, repetitions: int) -> float:
    extractor = CMELTFeatureExtractor()
    extractor(record)  # warm-up: imports scipy, fills the page cache
    start = time.perf_counter()
    for _ in range(repetitions):
        extractor(record)
    return repetitions / (time.perf_counter() - start)


def _files_per_second_parallel(record: str, repetitions: int, workers: int) -> float:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_files_per_second, [record] * workers, [10] * workers))  # start and warm the workers
        start = time.perf_counter()
        list(pool.map(_files_per_second, [record] * workers, [repetitions // workers] * workers))
        elapsed = time.perf_counter() - start
    return (repetitions // workers) * workers / elapsed


def _arrays_per_second(rate: int, channels: int, seconds: float, batch: int, repetitions: int) -> float:
    extractor = CMELTFeatureExtractor()
    rng = np.random.default_rng(0)
    arrays = rng.normal(size=(batch, channels, int(rate * seconds))).astype(np.float32)
    names = [*extractor_leads(), "vx", "vy", "vz"][:channels]
    extractor(arrays[:2], sampling_rate=rate, lead_names=names)
    start = time.perf_counter()
    for _ in range(repetitions):
        extractor(arrays, sampling_rate=rate, lead_names=names)
    return batch * repetitions / (time.perf_counter() - start)


def extractor_leads() -> list[str]:
    from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

    return list(CANONICAL_LEADS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=2000, help="records per file measurement")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for the parallel row")
    args = parser.parse_args()

    rows = []
    if (WFDB_DIR / "s0010_re.hea").is_file():
        record = str(WFDB_DIR / "s0010_re")
        rows.append(("WFDB s0010_re 1000 Hz 15 ch 38 s, 1 process", "records/s", _files_per_second(record, args.repetitions)))
        rows.append((f"WFDB s0010_re, {args.workers} processes", "records/s",
                     _files_per_second_parallel(record, args.repetitions, args.workers)))
        record_100 = str(WFDB_DIR / "100")
        rows.append(("WFDB 100 360 Hz fmt 212 2 ch 30 min, 1 process", "records/s",
                     _files_per_second(record_100, args.repetitions // 4)))
    else:
        print(f"shared data not found at {WFDB_DIR}: file rows skipped")
    for rate, channels, seconds in [(1000, 15, 10.0), (500, 12, 10.0), (360, 12, 10.0), (250, 12, 10.0)]:
        label = f"arrays {rate} Hz {channels} ch {seconds:g} s, batch 64"
        rows.append((label, "arrays/s", _arrays_per_second(rate, channels, seconds, 64, max(2, args.repetitions // 200))))

    width = max(len(label) for label, _, _ in rows)
    print(f"{'input':<{width}}  {'throughput':>12}  unit")
    for label, unit, value in rows:
        print(f"{label:<{width}}  {value:>12.1f}  {unit}")
    summary = {
        "name": "feature_extraction",
        "command": "python -m bench.feature_extraction " + " ".join(sys.argv[1:]),
        "goal": {"metric": "throughput", "op": ">=", "value": 500, "row": {"input": rows[0][0]}} if rows else None,
        "repetitions": args.repetitions,
        "rows": [{"input": label, "unit": unit, "throughput": round(value, 1)} for label, unit, value in rows],
        "machine": machine_info(),
    }
    write_result(RESULTS, summary)


if __name__ == "__main__":
    main()
