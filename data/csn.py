"""CSN (Chapman-Shaoxing-Ningbo, PhysioNet `ecg-arrhythmia/1.0.0`): the 38-label set of MERL / C-MELT.

Layout:
    ROOT/ConditionNames_SNOMED-CT.csv           (Acronym Name,Full Name,Snomed_CT)
    ROOT/WFDBRecords/01/010/JS00001.{hea,mat}    (12 leads, 500 Hz, 10 s; `#Dx: 164889003,59118001,...`)

Labels: the `#Dx` SNOMED CT codes mapped to the 38 acronyms of `LABEL_SETS["csn"]` (codes as in the dataset's
ConditionNames table; other codes are counted in the report, and a record without any of the 38 is dropped).
Then, as MERL does, **labels with fewer than `min_records_per_label` (10) records are dropped**, counted on the
loaded data (after bad records were skipped, over all splits); rows left without a label are dropped too and the
removed labels are listed in the report. Seeded random split 70 / 10 / 20 % of the records. No patient ids.
`split="merl"`: MERL's published rows and labels (`chapman_{train,val,test}.csv`, all 38 labels, nothing dropped:
the published files define the benchmark); shipped lists, or MERL's CSV folder with `split_files=`.

CLI: `python -m cmelt.data.csn ROOT`.
"""

from __future__ import annotations

import logging

import argparse
import csv
import os
import warnings
from pathlib import Path

from datasets import DatasetDict

from cmelt.data.downstream import (
    DownstreamReport,
    add_common_cli_arguments,
    add_merl_split_cli_arguments,
    build_dataset_dict,
    check_split_source,
    downstream_features,
    drop_rare_labels,
    finish_cli,
    header_class_indices,
    label_names,
    merl_record_jobs,
    split_record_jobs,
)
from cmelt.data.labels import LABEL_SETS, label_codes, snomed_to_class_indices

LABEL_SET = "csn"
CONDITION_NAMES_FILE = "ConditionNames_SNOMED-CT.csv"

__all__ = ["load_csn", "label_names", "read_condition_names"]


def read_condition_names(path: str | os.PathLike) -> dict[str, str]:
    """Acronym -> SNOMED CT code from ConditionNames_SNOMED-CT.csv (BOM, stray spaces and the
    `AcronymName` header spelling tolerated)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [cell.strip().replace(" ", "").lower() for cell in next(reader, [])]
        try:
            acronym_column, code_column = header.index("acronymname"), header.index("snomed_ct")
        except ValueError as error:
            raise ValueError(f"{path}: expected header 'Acronym Name,Full Name,Snomed_CT', got {header}") from error
        return {
            row[acronym_column].strip(): row[code_column].strip()
            for row in reader
            if len(row) > max(acronym_column, code_column)
        }


def _check_condition_names(root: Path) -> None:
    path = root / CONDITION_NAMES_FILE
    if not path.is_file():
        return
    table = read_condition_names(path)
    for label in LABEL_SETS[LABEL_SET]:
        if label.code in table and table[label.code] not in label.snomed:
            warnings.warn(f"{path}: {label.code} has SNOMED {table[label.code]}, the label table uses {label.snomed}")


def load_csn(
    root: str | os.PathLike,
    *,
    min_records_per_label: int = 10,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    num_proc: int = 1,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
    output_dir: str | os.PathLike | None = None,
    split: str = "seeded",
    split_files: str | os.PathLike | None = None,
) -> DatasetDict:
    """CSN as train / validation / test; see the module docstring for the label rules."""
    check_split_source(split, "seeded")
    root = Path(root)
    records_root = root / "WFDBRecords" if (root / "WFDBRecords").is_dir() else root
    if not records_root.is_dir():
        raise ValueError(f"{root}: CSN folder not found (expected WFDBRecords/ and {CONDITION_NAMES_FILE})")
    _check_condition_names(root)
    report = report if report is not None else DownstreamReport()
    code_to_indices = snomed_to_class_indices(LABEL_SET)
    codes = label_codes(LABEL_SET)
    if split == "merl":
        paths = {header.stem: str(header.with_suffix(".mat")) for header in sorted(records_root.rglob("*.hea"))}
        jobs_by_split = merl_record_jobs(LABEL_SET, paths, split_files, report)
        dataset_dict = build_dataset_dict(
            "csn_merl", jobs_by_split, downstream_features(codes), report, num_proc=num_proc, cache_dir=cache_dir
        )
        report.print_and_save("CSN", output_dir)
        return dataset_dict
    records = []
    for header in sorted(records_root.rglob("*.hea")):
        indices = header_class_indices(header.stem, header, code_to_indices, report)
        if indices is not None:
            records.append((header.stem, str(header.with_suffix(".mat")), indices))
    if not records and report.skipped.total == 0:
        raise ValueError(f"{records_root}: no CSN records (.hea + .mat) found")
    jobs_by_split = split_record_jobs(records, len(codes), split_fractions, seed)
    dataset_dict = build_dataset_dict(
        "csn", jobs_by_split, downstream_features(codes), report, num_proc=num_proc, cache_dir=cache_dir,
        options={"fractions": list(split_fractions), "seed": seed},
    )
    dataset_dict = drop_rare_labels(dataset_dict, min_records_per_label, report)
    report.print_and_save("CSN", output_dir)
    return dataset_dict


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description="Load CSN (ecg-arrhythmia 1.0.0) and print split sizes and class counts.")
    parser.add_argument("root", help=f"folder holding WFDBRecords/ and {CONDITION_NAMES_FILE}")
    parser.add_argument("--min_records_per_label", type=int, default=10)
    add_common_cli_arguments(parser)
    add_merl_split_cli_arguments(parser, "seeded")
    args = parser.parse_args(argv)
    dataset_dict = load_csn(
        args.root, min_records_per_label=args.min_records_per_label, num_proc=args.num_proc, seed=args.seed,
        cache_dir=args.cache_dir, output_dir=args.output_dir, split=args.split, split_files=args.split_files,
    )
    finish_cli("CSN", dataset_dict, args.output_dir)


if __name__ == "__main__":
    main()
