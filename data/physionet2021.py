"""PhysioNet/CinC Challenge 2021: diagnosis (26 scored classes) and patient identification.

Layout (PhysioNet `challenge-2021/1.0.3`): ROOT/training/<source>/g<N>/<record>.{hea,mat} with sources
chapman_shaoxing, cpsc_2018, cpsc_2018_extra, georgia, ningbo, ptb, ptb-xl, st_petersburg_incart (ROOT may also
be the `training` folder itself, one source folder, or the flat folder the challenge code uses). Headers carry
`#Dx: <SNOMED>,<SNOMED>` (or `# Dx:` in the 1.0.3 rewrite); both are read.

task="dx": the 26 scored classes of the challenge, codes = the `weights_abbreviations.csv` header verbatim
("CLBBB|LBBB", "PAC|SVPB" ...); a class is positive when any SNOMED code of its equivalence class is in `#Dx`.
Records without a scored class are dropped (counted); other codes are counted in the report. Seeded random split
80 / 10 / 10 % (paper Tab. 9: 32,640 / 4,079 / 4,079). Every sampling rate is accepted (resampled to 500 Hz);
pass `sources=` to restrict the sources. Rows carry the `source` folder name.

task="id" (patient identification, following Oh et al. 2022 / fairseq-signals as far as its public code shows:
`preprocess_physionet2021.py`, `preprocess_ptbxl.py`, `manifest_identification.py`):
- the challenge headers carry no patient id, so each PhysioNet 2021 **record is one identity**; only 500 Hz
  records are used (others are dropped, as fairseq-signals does) and records with NaN samples are skipped;
- each record is cut into non-overlapping `segment_seconds` (5 s) windows, stored at the start of the 10-s
  canonical frame (rest zero, `segment_index` column);
- identities are assigned with a seeded draw per record: validation with probability `id_valid_fraction` (0.1),
  keeping only the record's first two windows as `role` "gallery" and "probe" (records with < 2 windows dropped);
  the rest is train (every window, `role` "train", `identity` = index of the record among train identities);
- test: with `ptbxl_root` given, PTB-XL patients with at least two records (Oh et al. test on PTB-XL: 2,127
  patients, the class count of paper Tab. 9): the first two records by ecg_id become gallery and probe, each a
  seeded random 5-s crop; `ptb-xl` records are then left out of the PhysioNet 2021 train / validation identities
  (`id_exclude_sources`) because the same recordings would otherwise sit on both sides. Without `ptbxl_root`, a
  second `id_valid_fraction` share of the records forms the test identities (gallery / probe), as in the later
  fairseq-signals `identification_manifest.py`.
Identification rows have `patient_id`, `identity` (int, per split), `role` and `segment_index`; no label columns.

CLI: `python -m cmelt.data.physionet2021 ROOT --task dx` (or `--task id --ptbxl_root PTBXL`).
"""

from __future__ import annotations

import logging

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import DatasetDict, Value

from cmelt.data.downstream import (
    DownstreamReport,
    RecordJob,
    add_common_cli_arguments,
    build_dataset_dict,
    downstream_features,
    finish_cli,
    header_class_indices,
    label_columns,
    label_names,
)
from cmelt.data.labels import label_codes, snomed_to_class_indices
from cmelt.data.splits import random_split_indices

LABEL_SET = "physionet2021"
ID_SAMPLING_RATE = 500.0

__all__ = ["load_physionet2021", "find_challenge_records", "label_names"]


def find_challenge_records(root: str | os.PathLike, sources: list[str] | None = None) -> list[tuple[str, str, Path]]:
    """(record id, source folder name, .hea path) of every challenge record under `root`, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: PhysioNet 2021 folder not found")
    if (root / "training").is_dir():
        root = root / "training"
    found = []
    for header in sorted(root.rglob("*.hea")):
        parts = header.relative_to(root).parts
        source = parts[0] if len(parts) > 2 else (root.name if len(parts) == 2 else "")
        if sources is not None and source not in sources:
            continue
        found.append((header.stem, source, header))
    return found


def _dx_jobs(records, split_fractions, seed, report) -> dict[str, list[RecordJob]]:
    code_to_indices = snomed_to_class_indices(LABEL_SET)
    num_classes = len(label_codes(LABEL_SET))
    labelled = []
    for record_id, source, header in records:
        indices = header_class_indices(record_id, header, code_to_indices, report, "no scored class")
        if indices is None:
            continue
        labelled.append(
            RecordJob(
                record_id=record_id,
                path=str(header.with_suffix(".mat")),
                columns={"source": source, **label_columns(indices, num_classes)},
            )
        )
    train, valid, test = random_split_indices(len(labelled), split_fractions, seed)
    return {split: [labelled[index] for index in indices] for split, indices in (("train", train), ("validation", valid), ("test", test))}


def _sampling_rate(header: Path) -> float | None:
    from modeling_cmelt.reading_cmelt import CMELTReadError, read_wfdb_info

    try:
        return read_wfdb_info(header).sampling_rate
    except CMELTReadError:
        return None


def _ptbxl_identity_jobs(ptbxl_root: Path, database_csv, segment_seconds: float, seed: int, report) -> list[RecordJob]:
    database_path = Path(database_csv) if database_csv is not None else ptbxl_root / "ptbxl_database.csv"
    if not database_path.is_file():
        raise ValueError(f"{database_path}: ptbxl_database.csv not found")
    database = pd.read_csv(database_path).dropna(subset=["patient_id"]).sort_values("ecg_id")
    jobs = []
    identity = 0
    for patient, group in database.groupby("patient_id", sort=True):
        if len(group) < 2:
            report.dropped["PTB-XL patient with a single record"] += 1
            continue
        patient_id = f"ptbxl:{int(float(patient))}"
        for role, row in zip(("gallery", "probe"), group.head(2).itertuples(index=False)):
            jobs.append(
                RecordJob(
                    record_id=f"ptbxl:{int(row.ecg_id)}",
                    path=str(ptbxl_root / row.filename_hr),
                    columns={"patient_id": patient_id, "source": "ptb-xl (PTB-XL release)", "identity": identity, "role": role},
                    segment_seconds=segment_seconds,
                    segment_mode="random_crop",
                    crop_seed=int(seed) * 1_000_003 + int(row.ecg_id),
                )
            )
        identity += 1
    return jobs


def _id_jobs(records, *, ptbxl_root, ptbxl_database_csv, segment_seconds, valid_fraction, exclude_sources, seed, report):
    rng = np.random.default_rng(seed)
    splits: dict[str, list[RecordJob]] = {"train": [], "validation": [], "test": []}
    next_identity = {"train": 0, "validation": 0, "test": 0}
    for record_id, source, header in records:
        draw = rng.random()  # drawn for every record so that filtering does not shift the others' draws
        if ptbxl_root is not None and source in exclude_sources:
            report.dropped[f"source {source!r} excluded (its recordings are the PTB-XL test identities)"] += 1
            continue
        rate = _sampling_rate(header)
        if rate is None:
            report.skipped.skip(record_id, "unreadable header")
            continue
        if rate != ID_SAMPLING_RATE:
            report.dropped["sampling rate is not 500 Hz (identification uses 500 Hz records, as Oh et al.)"] += 1
            continue
        if draw <= valid_fraction:
            split, mode = "validation", "first_two"
        elif ptbxl_root is None and draw <= 2 * valid_fraction:
            split, mode = "test", "first_two"
        else:
            split, mode = "train", "all"
        columns = {"patient_id": record_id, "source": source, "identity": next_identity[split]}
        if mode == "all":
            columns["role"] = "train"
        next_identity[split] += 1
        splits[split].append(
            RecordJob(
                record_id=record_id, path=str(header.with_suffix(".mat")), columns=columns,
                segment_seconds=segment_seconds, segment_mode=mode,
            )
        )
    if ptbxl_root is not None:
        splits["test"] = _ptbxl_identity_jobs(Path(ptbxl_root), ptbxl_database_csv, segment_seconds, seed, report)
    return splits


def load_physionet2021(
    root: str | os.PathLike,
    task: str = "dx",
    *,
    sources: list[str] | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    ptbxl_root: str | os.PathLike | None = None,
    ptbxl_database_csv: str | os.PathLike | None = None,
    segment_seconds: float = 5.0,
    id_valid_fraction: float = 0.1,
    id_exclude_sources: tuple[str, ...] = ("ptb-xl",),
    num_proc: int = 1,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    report: DownstreamReport | None = None,
    output_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """PhysioNet 2021 diagnosis (`task="dx"`) or patient identification (`task="id"`); see the module docstring."""
    if task not in ("dx", "id"):
        raise ValueError(f"task must be 'dx' or 'id', got {task!r}")
    if not 0 < id_valid_fraction < 0.5:
        raise ValueError(f"id_valid_fraction must be in (0, 0.5), got {id_valid_fraction}")
    report = report if report is not None else DownstreamReport()
    records = find_challenge_records(root, sources)
    if not records:
        raise ValueError(f"{root}: no challenge records (.hea + .mat) found" + (f" for sources {sources}" if sources else ""))
    if task == "dx":
        jobs_by_split = _dx_jobs(records, split_fractions, seed, report)
        features = downstream_features(label_codes(LABEL_SET), extra={"source": Value("string")})
        options = {"fractions": list(split_fractions), "seed": seed}
    else:
        jobs_by_split = _id_jobs(
            records, ptbxl_root=ptbxl_root, ptbxl_database_csv=ptbxl_database_csv, segment_seconds=segment_seconds,
            valid_fraction=id_valid_fraction, exclude_sources=tuple(id_exclude_sources), seed=seed, report=report,
        )
        features = downstream_features(
            None,
            extra={"source": Value("string"), "identity": Value("int64"), "role": Value("string"), "segment_index": Value("int32")},
            with_patient_id=True,
        )
        options = {"seed": seed, "segment_seconds": segment_seconds, "valid": id_valid_fraction, "ptbxl": str(ptbxl_root)}
    dataset_dict = build_dataset_dict(
        f"physionet2021_{task}", jobs_by_split, features, report, num_proc=num_proc, cache_dir=cache_dir, options=options
    )
    report.print_and_save(f"PhysioNet 2021 {task}", output_dir)
    return dataset_dict


def print_identification_summary(dataset_dict: DatasetDict) -> None:
    print("PhysioNet 2021 identification")
    for split, dataset in dataset_dict.items():
        roles = pd.Series(dataset["role"]).value_counts().to_dict() if len(dataset) else {}
        identities = len(set(dataset["identity"])) if len(dataset) else 0
        print(f"  {split:<10}  {len(dataset):>8} rows  {identities:>7} identities  roles {roles}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description="Load PhysioNet 2021 and print split sizes and class counts.")
    parser.add_argument("root", help="challenge-2021 folder (training/<source>/g*/ .hea + .mat)")
    parser.add_argument("--task", choices=("dx", "id"), default="dx")
    parser.add_argument("--sources", nargs="*", default=None, help="only these source folders (e.g. cpsc_2018 georgia)")
    parser.add_argument("--ptbxl_root", default=None, help="PTB-XL folder: test identities for --task id")
    add_common_cli_arguments(parser)
    args = parser.parse_args(argv)
    dataset_dict = load_physionet2021(
        args.root, args.task, sources=args.sources, ptbxl_root=args.ptbxl_root, num_proc=args.num_proc,
        seed=args.seed, cache_dir=args.cache_dir, output_dir=args.output_dir,
    )
    if args.task == "dx":
        finish_cli("PhysioNet 2021 dx", dataset_dict, args.output_dir)
    else:
        print_identification_summary(dataset_dict)
        if args.output_dir is not None:
            dataset_dict.save_to_disk(str(Path(args.output_dir) / "physionet_2021_id"))


if __name__ == "__main__":
    main()
