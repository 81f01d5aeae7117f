"""PTB-XL (v1.0.x) downstream tasks: super (5), sub (23), form (19), rhythm (12) classes.

Layout (PhysioNet `ptb-xl/1.0.3`):
    ROOT/ptbxl_database.csv, ROOT/scp_statements.csv, ROOT/records500/00000/00001_hr.{hea,dat} ...

Labels follow the PTB-XL benchmark (helme/ecg_ptbxl_benchmarking `compute_label_aggregations`, also used by MERL):
`scp_codes` is a Python dict literal (parsed with `ast.literal_eval`) of SCP statement -> likelihood; **every key
counts, whatever its likelihood** (0.0 included: the benchmark iterates `y_dic.keys()`). Statements map to
- super: `diagnostic_class` of statements with `diagnostic == 1`;
- sub:   `diagnostic_subclass` of statements with `diagnostic == 1`;
- form:  the statement itself when `form == 1`;
- rhythm: the statement itself when `rhythm == 1`.
Records with no label of the task are dropped. Split by `strat_fold`: 1-8 train, 9 validation, 10 test. Signals
are the 500 Hz `filename_hr` records.

`split="merl"`: MERL's published rows and labels instead (the benchmark of C-MELT's Tab. 2 / 3; shipped lists, or
MERL's original CSV folder with `split_files=`); the signals and patient ids still come from ROOT.

CLI: `python -m cmelt.data.ptbxl ROOT --task super` (add `--metadata_only` to compute the label table from the CSVs
without signals, `--database_csv FILE` to use another copy of ptbxl_database.csv).
"""

from __future__ import annotations

import logging

import argparse
import ast
import os
from pathlib import Path

import pandas as pd
from datasets import DatasetDict, Value

from cmelt.data.downstream import (
    DownstreamReport,
    RecordJob,
    add_common_cli_arguments,
    add_merl_split_cli_arguments,
    build_dataset_dict,
    downstream_features,
    finish_cli,
    format_class_counts,
    label_columns,
    label_names,
)
from cmelt.data.labels import label_codes

TASK_LABEL_SETS = {"super": "ptbxl_super", "sub": "ptbxl_sub", "form": "ptbxl_form", "rhythm": "ptbxl_rhythm"}
FOLD_SPLITS = {**{fold: "train" for fold in range(1, 9)}, 9: "validation", 10: "test"}

__all__ = ["load_ptbxl", "ptbxl_label_table", "merl_label_table", "statement_to_task_labels", "label_names", "TASK_LABEL_SETS"]


def _check_task(task: str) -> str:
    if task not in TASK_LABEL_SETS:
        raise ValueError(f"task must be one of {sorted(TASK_LABEL_SETS)}, got {task!r}")
    return TASK_LABEL_SETS[task]


def read_scp_statements(path: str | os.PathLike) -> pd.DataFrame:
    """`scp_statements.csv` indexed by statement code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: scp_statements.csv not found (expected in the PTB-XL root folder)")
    table = pd.read_csv(path, index_col=0)
    missing = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a PTB-XL scp_statements.csv; missing columns {sorted(missing)}")
    return table


def statement_to_task_labels(statements: pd.DataFrame, task: str) -> dict[str, str]:
    """SCP statement -> label of `task` (see the module docstring)."""
    label_set = _check_task(task)
    if task in ("super", "sub"):
        column = "diagnostic_class" if task == "super" else "diagnostic_subclass"
        rows = statements[statements["diagnostic"] == 1]
        mapping = {code: str(value) for code, value in rows[column].items() if isinstance(value, str) and value}
    else:
        rows = statements[statements[task] == 1]
        mapping = {code: code for code in rows.index}
    expected = set(label_codes(label_set))
    if set(mapping.values()) != expected:
        raise ValueError(
            f"scp_statements.csv gives the {task} classes {sorted(set(mapping.values()))}, expected {sorted(expected)}"
        )
    return mapping


def ptbxl_label_table(
    root: str | os.PathLike,
    task: str = "super",
    *,
    database_csv: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
) -> pd.DataFrame:
    """The task's labels computed from the CSVs only (no signals).

    Returns one row per record that has a label of the task, with columns `ecg_id` (int), `patient_id` (str),
    `strat_fold` (int), `split`, `filename_hr`, `label_codes` (list of class codes, in label-set order) and
    `label_ids` (their indices).
    """
    root = Path(root)
    report = report if report is not None else DownstreamReport()
    codes = label_codes(_check_task(task))
    statement_table = read_scp_statements(root / "scp_statements.csv")
    mapping = statement_to_task_labels(statement_table, task)
    database_path = Path(database_csv) if database_csv is not None else root / "ptbxl_database.csv"
    if not database_path.is_file():
        raise ValueError(f"{database_path}: ptbxl_database.csv not found (pass database_csv= for another file name)")
    database = pd.read_csv(database_path)
    missing = {"ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_hr"} - set(database.columns)
    if missing:
        raise ValueError(f"{database_path}: not a PTB-XL database table; missing columns {sorted(missing)}")
    known_statements = set(statement_table.index)
    position = {code: index for index, code in enumerate(codes)}
    rows = []
    for record in database.itertuples(index=False):
        record_id = str(record.ecg_id)
        try:
            statements = ast.literal_eval(record.scp_codes)
            if not isinstance(statements, dict):
                raise ValueError("not a dict")
        except (ValueError, SyntaxError, TypeError):
            report.skipped.skip(record_id, "unparsable scp_codes")
            continue
        try:
            split = FOLD_SPLITS[int(record.strat_fold)]
        except (KeyError, ValueError, TypeError):
            report.skipped.skip(record_id, "strat_fold outside 1-10")
            continue
        for statement in statements:
            if statement not in known_statements:
                report.codes_outside_label_set[str(statement)] += 1
        indices = sorted({position[mapping[statement]] for statement in statements if statement in mapping})
        if not indices:
            report.dropped["no label of the task"] += 1
            continue
        patient = record.patient_id
        rows.append(
            {
                "ecg_id": int(record.ecg_id),
                "patient_id": "" if pd.isna(patient) else str(int(float(patient))),
                "strat_fold": int(record.strat_fold),
                "split": split,
                "filename_hr": str(record.filename_hr),
                "label_codes": [codes[index] for index in indices],
                "label_ids": indices,
            }
        )
    return pd.DataFrame(
        rows, columns=["ecg_id", "patient_id", "strat_fold", "split", "filename_hr", "label_codes", "label_ids"]
    )


def merl_label_table(
    root: str | os.PathLike,
    task: str = "super",
    *,
    database_csv: str | os.PathLike | None = None,
    split_files: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
) -> pd.DataFrame:
    """MERL's published rows and labels of `task`, with the file name, patient and fold from ptbxl_database.csv;
    same columns as `ptbxl_label_table`. A published row missing from the database is skipped and counted."""
    from cmelt.data.splits import read_merl_split_list

    root = Path(root)
    report = report if report is not None else DownstreamReport()
    label_set = _check_task(task)
    codes = label_codes(label_set)
    database_path = Path(database_csv) if database_csv is not None else root / "ptbxl_database.csv"
    if not database_path.is_file():
        raise ValueError(f"{database_path}: ptbxl_database.csv not found (pass database_csv= for another file name)")
    database = pd.read_csv(database_path, usecols=["ecg_id", "patient_id", "strat_fold", "filename_hr"])
    database = database.set_index(database["ecg_id"].astype(int).astype(str))
    published = read_merl_split_list(label_set, split_files)
    rows = []
    for row in published.itertuples(index=False):
        if row.record_id not in database.index:
            report.skipped.skip(row.record_id, "published row not in ptbxl_database.csv")
            continue
        record = database.loc[row.record_id]
        patient = record["patient_id"]
        rows.append({
            "ecg_id": int(row.record_id),
            "patient_id": "" if pd.isna(patient) else str(int(float(patient))),
            "strat_fold": int(record["strat_fold"]),
            "split": row.split,
            "filename_hr": str(record["filename_hr"]),
            "label_codes": list(row.label_codes),
            "label_ids": [codes.index(code) for code in row.label_codes],
        })
    return pd.DataFrame(
        rows, columns=["ecg_id", "patient_id", "strat_fold", "split", "filename_hr", "label_codes", "label_ids"]
    )


def metadata_class_counts(table: pd.DataFrame, task: str) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per-split class counts and sizes of a `ptbxl_label_table`."""
    codes = label_codes(_check_task(task))
    counts, sizes = {}, {}
    for split in ("train", "validation", "test"):
        part = table[table["split"] == split]
        sizes[split] = len(part)
        tally = [0] * len(codes)
        for indices in part["label_ids"]:
            for index in indices:
                tally[index] += 1
        counts[split] = tally
    return counts, sizes


def load_ptbxl(
    root: str | os.PathLike,
    task: str = "super",
    *,
    database_csv: str | os.PathLike | None = None,
    num_proc: int = 1,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
    output_dir: str | os.PathLike | None = None,
    split: str = "folds",
    split_files: str | os.PathLike | None = None,
) -> DatasetDict:
    """PTB-XL `task` ("super", "sub", "form", "rhythm") as train / validation / test (folds 1-8 / 9 / 10, or
    MERL's published rows and labels with `split="merl"`, see the module docstring).

    `seed` is unused (PTB-XL's splits are its folds) and kept for the common loader signature. A record whose
    500 Hz file is missing, truncated or holds NaN samples is skipped and counted in `report` (printed, and
    written as JSON to `output_dir` when given).
    """
    del seed
    root = Path(root)
    report = report if report is not None else DownstreamReport()
    if split == "merl":
        table = merl_label_table(root, task, database_csv=database_csv, split_files=split_files, report=report)
    elif split == "folds":
        table = ptbxl_label_table(root, task, database_csv=database_csv, report=report)
    else:
        raise ValueError(f"PTB-XL split must be 'folds' (strat_fold 1-8 / 9 / 10) or 'merl', got {split!r}")
    codes = label_codes(TASK_LABEL_SETS[task])
    features = downstream_features(codes, extra={"strat_fold": Value("int32")}, with_patient_id=True)
    jobs_by_split: dict[str, list[RecordJob]] = {"train": [], "validation": [], "test": []}
    for row in table.itertuples(index=False):
        jobs_by_split[row.split].append(
            RecordJob(
                record_id=str(row.ecg_id),
                path=str(root / row.filename_hr),
                columns={"patient_id": row.patient_id, "strat_fold": row.strat_fold, **label_columns(row.label_ids, len(codes))},
            )
        )
    dataset_dict = build_dataset_dict(
        f"ptbxl_{task}" + ("_merl" if split == "merl" else ""), jobs_by_split, features, report, num_proc=num_proc, cache_dir=cache_dir
    )
    report.print_and_save(f"PTB-XL {task}", output_dir)
    return dataset_dict


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description="Load PTB-XL and print split sizes and class counts.")
    parser.add_argument("root", help="PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records500/)")
    parser.add_argument("--task", choices=sorted(TASK_LABEL_SETS), default="super")
    parser.add_argument("--database_csv", default=None, help="another copy of ptbxl_database.csv")
    parser.add_argument("--metadata_only", action="store_true", help="labels from the CSVs only, no signals")
    add_merl_split_cli_arguments(parser, "folds")
    add_common_cli_arguments(parser)
    args = parser.parse_args(argv)
    title = f"PTB-XL {args.task}"
    if args.metadata_only:
        report = DownstreamReport()
        if args.split == "merl":
            table = merl_label_table(args.root, args.task, database_csv=args.database_csv, split_files=args.split_files, report=report)
        else:
            table = ptbxl_label_table(args.root, args.task, database_csv=args.database_csv, report=report)
        counts, sizes = metadata_class_counts(table, args.task)
        print(f"{title} (metadata only): {len(counts['train'])} classes")
        print(format_class_counts(label_codes(TASK_LABEL_SETS[args.task]), counts, sizes))
        report.print_and_save(title, args.output_dir)
        return
    report = DownstreamReport()
    dataset_dict = load_ptbxl(
        args.root, args.task, database_csv=args.database_csv, num_proc=args.num_proc, cache_dir=args.cache_dir,
        report=report, output_dir=args.output_dir, split=args.split, split_files=args.split_files,
    )
    finish_cli(title, dataset_dict, args.output_dir)


if __name__ == "__main__":
    main()
