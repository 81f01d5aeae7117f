"""CPSC2018 (China Physiological Signal Challenge 2018): 9 classes AFIB, VPC, NORM, 1AVB, CRBBB, STE, PAC, CLBBB, STD.

Two layouts are recognised (chosen by whether a `REFERENCE.csv` exists in ROOT or one folder below):

- original ICBEB release: `REFERENCE.csv` (`Recording,First_label,Second_label,Third_label`, labels 1-9 =
  Normal, AF, I-AVB, LBBB, RBBB, PAC, PVC, STD, STE) + `TrainingSet1/A0001.mat ...` (MATLAB struct `ECG` with
  fields sex, age, data 12 x N mV, 500 Hz);
- PhysioNet/CinC challenge release: `g1/A0001.hea` + `A0001.mat` ... (any depth) with `#Dx:` SNOMED CT codes.

Random seeded split of the records, 70 / 10 / 20 % by default (the paper's protocol). (Paper Tab. 9's 4,950 / 551 /
1,376 correspond to MERL's test 20 % and validation 10 % of the rest: pass `split_fractions=(0.72, 0.08, 0.2)`.)
CPSC2018 publishes no patient ids, so rows have no `patient_id`. `split="merl"`: MERL's published rows and labels
(`icbeb_{train,val,test}.csv`, the benchmark of C-MELT's Tab. 2 / 3); shipped lists, or MERL's CSV folder with
`split_files=`.

CLI: `python -m cmelt.data.cpsc2018 ROOT`.
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
    add_common_cli_arguments,
    add_merl_split_cli_arguments,
    build_dataset_dict,
    check_split_source,
    downstream_features,
    finish_cli,
    header_class_indices,
    label_names,
    merl_record_jobs,
    split_record_jobs,
)
from cmelt.data.labels import label_codes, snomed_to_class_indices

LABEL_SET = "cpsc2018"
# REFERENCE.csv label number -> class code
REFERENCE_LABELS = {1: "NORM", 2: "AFIB", 3: "1AVB", 4: "CLBBB", 5: "CRBBB", 6: "PAC", 7: "VPC", 8: "STD", 9: "STE"}
REFERENCE_COLUMNS = ("First_label", "Second_label", "Third_label")

__all__ = ["load_cpsc2018", "label_names", "REFERENCE_LABELS"]


def find_reference_csv(root: Path) -> Path | None:
    for candidate in [root / "REFERENCE.csv", *sorted(root.glob("*/REFERENCE.csv"))]:
        if candidate.is_file():
            return candidate
    return None


def _original_layout_records(root: Path, reference: Path, report: DownstreamReport) -> list[tuple[str, str, list[int]]]:
    codes = label_codes(LABEL_SET)
    position = {code: index for index, code in enumerate(codes)}
    table = pd.read_csv(reference, dtype=str)
    missing = {"Recording", *REFERENCE_COLUMNS} - set(table.columns)
    if missing:
        raise ValueError(f"{reference}: expected columns Recording,First_label,Second_label,Third_label; missing {sorted(missing)}")
    mat_files = {path.stem: path for path in root.rglob("*.mat")}
    records = []
    for row in table.itertuples(index=False):
        record_id = str(row.Recording).strip()
        indices = []
        for column in REFERENCE_COLUMNS:
            value = getattr(row, column)
            if pd.isna(value) or not str(value).strip():
                continue
            try:
                number = int(float(value))
            except ValueError:
                number = None
            if number in REFERENCE_LABELS:
                indices.append(position[REFERENCE_LABELS[number]])
            else:
                report.codes_outside_label_set[f"REFERENCE label {str(value).strip()}"] += 1
        if not indices:
            report.dropped["no label of the task"] += 1
            continue
        path = mat_files.get(record_id)
        if path is None:
            report.skipped.skip(record_id, "signal or header file missing")
            continue
        records.append((record_id, str(path), indices))
    return records


def _challenge_layout_records(root: Path, report: DownstreamReport) -> list[tuple[str, str, list[int]]]:
    code_to_indices = snomed_to_class_indices(LABEL_SET)
    records = []
    for header in sorted(root.rglob("*.hea")):
        indices = header_class_indices(header.stem, header, code_to_indices, report)
        if indices is not None:
            records.append((header.stem, str(header.with_suffix(".mat")), indices))
    return records


def load_cpsc2018(
    root: str | os.PathLike,
    *,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    num_proc: int = 1,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
    output_dir: str | os.PathLike | None = None,
    split: str = "seeded",
    split_files: str | os.PathLike | None = None,
) -> DatasetDict:
    """CPSC2018 as train / validation / test (seeded random split of the records with a label of the task, or
    MERL's published rows and labels with `split="merl"`)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: CPSC2018 folder not found")
    check_split_source(split, "seeded")
    report = report if report is not None else DownstreamReport()
    codes = label_codes(LABEL_SET)
    if split == "merl":
        paths = {path.stem: str(path) for path in sorted(root.rglob("*.mat"))}
        jobs_by_split = merl_record_jobs(LABEL_SET, paths, split_files, report)
        dataset_dict = build_dataset_dict(
            "cpsc2018_merl", jobs_by_split, downstream_features(codes), report, num_proc=num_proc, cache_dir=cache_dir
        )
        report.print_and_save("CPSC2018", output_dir)
        return dataset_dict
    reference = find_reference_csv(root)
    if reference is not None:
        records = _original_layout_records(root, reference, report)
    else:
        records = _challenge_layout_records(root, report)
    if not records and report.skipped.total == 0:
        raise ValueError(f"{root}: no CPSC2018 records found (expected REFERENCE.csv + .mat files, or .hea + .mat)")
    jobs_by_split = split_record_jobs(records, len(codes), split_fractions, seed)
    dataset_dict = build_dataset_dict(
        "cpsc2018", jobs_by_split, downstream_features(codes), report, num_proc=num_proc, cache_dir=cache_dir,
        options={"fractions": list(split_fractions), "seed": seed},
    )
    report.print_and_save("CPSC2018", output_dir)
    return dataset_dict


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description="Load CPSC2018 and print split sizes and class counts.")
    parser.add_argument("root", help="CPSC2018 folder (REFERENCE.csv + TrainingSet*/, or challenge g*/ .hea + .mat)")
    add_common_cli_arguments(parser)
    add_merl_split_cli_arguments(parser, "seeded")
    args = parser.parse_args(argv)
    dataset_dict = load_cpsc2018(
        args.root, num_proc=args.num_proc, seed=args.seed, cache_dir=args.cache_dir, output_dir=args.output_dir,
        split=args.split, split_files=args.split_files,
    )
    finish_cli("CPSC2018", dataset_dict, args.output_dir)


if __name__ == "__main__":
    main()
