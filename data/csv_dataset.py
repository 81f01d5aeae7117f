"""`cmelt-build-dataset`: your own ECGs, listed in a CSV of file paths and labels, as the DatasetDict that
cmelt-zero-shot / cmelt-linear-probe / cmelt-finetune take (`--dataset_path OUTPUT`).

    cmelt-build-dataset --csv ecgs.csv --path_column file --label_columns AFIB LBBB RBBB --output data/mine
    cmelt-build-dataset --csv ecgs.csv --path_column file --label_column diagnoses --separator ";" \
        --patient_column patient --output data/mine

Labels: `--label_columns` names one column per class (1 / true / yes / x mark a positive; the column names are the
class codes), or `--label_column` holds each record's codes separated by `--separator` (the classes are the codes
found, sorted). Paths may be relative to the CSV's folder; any format the readers take (WFDB, PhysioNet `.mat`,
CPSC `.mat`, `.npy` with `--sampling_rate`). Every record goes through the downstream loaders' machinery
(`data.downstream.build_dataset_dict`): read, canonicalised to 12 leads x 5000 samples at 500 Hz in mV (the models'
input), stored as int16 uV with `lead_mask`, `labels` (multi-hot) and `label_ids` (Sequence(ClassLabel) carrying
the class names). Splits are seeded (`--split_fractions`, default 0.7 / 0.1 / 0.2) and by patient when
`--patient_column` is given (no patient in two splits). Unreadable records are skipped, counted by reason and
listed in `OUTPUT/<name>_load_report.json`; the build never stops on one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import DatasetDict

from cmelt.data.downstream import (
    DownstreamReport,
    RecordJob,
    build_dataset_dict,
    downstream_features,
    label_columns,
    print_dataset_summary,
)
from cmelt.data.record_inputs import resolve_relative
from cmelt.data.splits import check_patient_leakage, random_split_indices

POSITIVE_MARKS = {"1", "1.0", "true", "yes", "y", "x", "+"}
SPLITS = ("train", "validation", "test")


def class_indices_from_columns(table: pd.DataFrame, columns: list[str]) -> list[list[int]]:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"label columns {missing} are not in the CSV (columns: {list(table.columns)})")
    marks = table[columns].fillna("").astype(str).apply(lambda column: column.str.strip().str.lower().isin(POSITIVE_MARKS))
    return [list(np.flatnonzero(row)) for row in marks.to_numpy()]


def class_indices_from_codes(table: pd.DataFrame, column: str, separator: str) -> tuple[list[str], list[list[int]]]:
    if column not in table.columns:
        raise ValueError(f"label column {column!r} is not in the CSV (columns: {list(table.columns)})")
    per_record = [
        [code.strip() for code in str(value).split(separator) if code.strip()] if isinstance(value, str) else []
        for value in table[column]
    ]
    codes = sorted({code for codes in per_record for code in codes})
    if not codes:
        raise ValueError(f"label column {column!r} holds no codes (separator {separator!r})")
    index = {code: position for position, code in enumerate(codes)}
    return codes, [[index[code] for code in codes_of_record] for codes_of_record in per_record]


def split_positions(num_records: int, patients: list[str] | None, fractions, seed: int) -> dict[str, np.ndarray]:
    """Row positions per split: seeded over records, or over patients (all of a patient's records together)."""
    if patients is None:
        return dict(zip(SPLITS, random_split_indices(num_records, fractions, seed)))
    unique = sorted(set(patients))
    parts = random_split_indices(len(unique), fractions, seed)
    split_of = {unique[i]: split for split, indices in zip(SPLITS, parts) for i in indices}
    assigned = np.array([split_of[patient] for patient in patients])
    return {split: np.flatnonzero(assigned == split) for split in SPLITS}


def build_csv_dataset(
    csv_path: str | Path,
    path_column: str = "path",
    class_columns: list[str] | None = None,
    label_column: str | None = None,
    separator: str = ",",
    patient_column: str | None = None,
    split_fractions=(0.7, 0.1, 0.2),
    seed: int = 42,
    sampling_rate: float | None = None,
    num_proc: int = 1,
    cache_dir: str | None = None,
) -> tuple[DatasetDict, DownstreamReport]:
    """The DatasetDict of a CSV of records and labels (see the module docstring) and its load report."""
    csv_path = Path(csv_path)
    if (class_columns is None) == (label_column is None):
        raise ValueError("give either class_columns (one column per class) or label_column (separated codes)")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if path_column not in table.columns:
        raise ValueError(f"{csv_path}: no path column {path_column!r} (columns: {list(table.columns)})")
    if class_columns is not None:
        codes, indices = list(class_columns), class_indices_from_columns(table, list(class_columns))
    else:
        codes, indices = class_indices_from_codes(table, label_column, separator)
    patients = None
    if patient_column is not None:
        if patient_column not in table.columns:
            raise ValueError(f"{csv_path}: no patient column {patient_column!r} (columns: {list(table.columns)})")
        patients = [value or f"row-{row}" for row, value in enumerate(table[patient_column])]
    jobs_by_split = {}
    for split, positions in split_positions(len(table), patients, split_fractions, seed).items():
        jobs_by_split[split] = []
        for position in positions:
            path = str(resolve_relative(table[path_column].iloc[position], csv_path.parent))
            columns = label_columns(indices[position], len(codes))
            if patients is not None:
                columns["patient_id"] = patients[position]
            read_kwargs = {"sampling_rate": sampling_rate} if path.lower().endswith(".npy") and sampling_rate else {}
            jobs_by_split[split].append(RecordJob(record_id=path, path=path, columns=columns, read_kwargs=read_kwargs))
    report = DownstreamReport()
    features = downstream_features(codes, with_patient_id=patients is not None)
    dataset_dict = build_dataset_dict(
        f"csv_{csv_path.stem}", jobs_by_split, features, report, num_proc=num_proc, cache_dir=cache_dir,
        options={"csv": str(csv_path.resolve())},
    )
    check_patient_leakage(dataset_dict)
    return dataset_dict, report


def main(argv: list[str] | None = None) -> DatasetDict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="CSV with one row per record")
    parser.add_argument("--path_column", default="path", help="column of record paths (relative to the CSV's folder)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--label_columns", nargs="+", help="one column per class; 1/true/yes/x = positive")
    labels.add_argument("--label_column", help="one column of separated class codes per record")
    parser.add_argument("--separator", default=",", help="separator of the codes in --label_column (default ',')")
    parser.add_argument("--patient_column", default=None, help="split by patient (no patient in two splits)")
    parser.add_argument("--split_fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sampling_rate", type=float, default=None, help="rate of .npy records, in Hz")
    parser.add_argument("--output", required=True, help="folder for the DatasetDict (save_to_disk)")
    parser.add_argument("--num_proc", type=int, default=1, help="worker processes reading records")
    parser.add_argument("--cache_dir", default=None, help="datasets cache directory (default: the HF cache)")
    args = parser.parse_args(argv)
    dataset_dict, report = build_csv_dataset(
        args.csv, args.path_column, args.label_columns, args.label_column, args.separator, args.patient_column,
        tuple(args.split_fractions), args.seed, args.sampling_rate, args.num_proc, args.cache_dir,
    )
    title = Path(args.output).name
    dataset_dict.save_to_disk(args.output)
    report.print_and_save(title, args.output)
    print_dataset_summary(title, dataset_dict)
    print(f"dataset saved to {args.output} (use: --dataset_path {args.output})")
    return dataset_dict


if __name__ == "__main__":
    main()
