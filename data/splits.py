"""Seeded splits, MERL's published splits, label-fraction subsets for linear probing (1 %, 10 %, 100 %) and a
patient-leakage check.

MERL's split files (Liu et al., ICML 2024; MIT licence, copyright 2024 Che Liu) define the rows of the PTB-XL
super / sub / form / rhythm, CPSC2018 and CSN benchmarks of C-MELT's Tab. 2 / 3. `data/merl_splits/` ships compact
lists derived from them (`python -m cmelt.data.splits MERL/finetune/data_split` re-derives them) with MERL's licence.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence as SequenceType
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict


def random_split_indices(
    num_items: int, fractions: SequenceType[float] = (0.7, 0.1, 0.2), seed: int = 42
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random (train, validation, test) index arrays of `num_items` items.

    The validation and test sizes are `round(fraction * num_items)`; train takes the rest, so every item is in
    exactly one split. The same seed and count always give the same split.
    """
    fractions = tuple(float(value) for value in fractions)
    if len(fractions) != 3 or any(value < 0 for value in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 (train, valid, test), got {fractions}")
    order = np.random.default_rng(seed).permutation(num_items)
    num_test = int(round(fractions[2] * num_items))
    num_valid = int(round(fractions[1] * num_items))
    test = np.sort(order[:num_test])
    valid = np.sort(order[num_test : num_test + num_valid])
    train = np.sort(order[num_test + num_valid :])
    return train, valid, test


def label_fraction_subsample(dataset: Dataset, fraction: float, seed: int = 42) -> Dataset:
    """A seeded subset of `round(fraction * len(dataset))` rows (at least one) that keeps every class present.

    Classes are covered rarest first, one randomly chosen record each, as long as the budget allows (with fewer
    rows than classes the rarest classes win); the rest of the budget is filled at random. `fraction >= 1`
    returns the dataset unchanged. Needs the multi-hot `labels` column.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or len(dataset) == 0:
        return dataset
    if "labels" not in dataset.column_names:
        raise ValueError(f"label_fraction_subsample needs a multi-hot 'labels' column; columns: {dataset.column_names}")
    labels = np.asarray(dataset.with_format("numpy")["labels"]) > 0
    budget = max(1, int(round(fraction * len(dataset))))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))
    chosen: list[int] = []
    covered = np.zeros(labels.shape[1], dtype=bool)
    counts = labels.sum(axis=0)
    for label in np.argsort(counts, kind="stable"):
        if len(chosen) >= budget:
            break
        if covered[label] or counts[label] == 0:
            continue
        pick = order[labels[order, label]][0]
        chosen.append(int(pick))
        covered |= labels[pick]
    taken = set(chosen)
    for index in order:
        if len(chosen) >= budget:
            break
        if int(index) not in taken:
            chosen.append(int(index))
            taken.add(int(index))
    return dataset.select(sorted(chosen))


def check_patient_leakage(dataset_dict: DatasetDict, column: str = "patient_id") -> None:
    """Raises ValueError when a patient appears in more than one split (empty ids are ignored).

    Datasets without the column (no patient ids published, e.g. CPSC2018) pass: there is nothing to check.
    """
    patients: dict[str, set[str]] = {}
    for split, dataset in dataset_dict.items():
        if column not in dataset.column_names:
            continue
        patients[split] = {str(value) for value in dataset[column] if value not in (None, "")}
    names = list(patients)
    problems = []
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            shared = patients[first] & patients[second]
            if shared:
                examples = ", ".join(sorted(shared)[:5])
                problems.append(f"{len(shared)} patient(s) in both {first!r} and {second!r} (e.g. {examples})")
    if problems:
        raise ValueError("patient leakage between splits: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------------------
# MERL's published splits (PTB-XL super / sub / form / rhythm, CPSC2018 = ICBEB, CSN = Chapman)

MERL_SPLIT_DIR = Path(__file__).resolve().parent / "merl_splits"
MERL_SPLITS = ("train", "validation", "test")
MERL_FILE_SPLITS = {"train": "train", "validation": "val", "test": "test"}
# label set -> (folder under MERL's finetune/data_split, file stem, record-id column)
MERL_SPLIT_FILES: dict[str, tuple[str, str, str]] = {
    "ptbxl_super": ("ptbxl/super_class", "ptbxl_super_class", "ecg_id"),
    "ptbxl_sub": ("ptbxl/sub_class", "ptbxl_sub_class", "ecg_id"),
    "ptbxl_form": ("ptbxl/form", "ptbxl_form", "ecg_id"),
    "ptbxl_rhythm": ("ptbxl/rhythm", "ptbxl_rhythm", "ecg_id"),
    "cpsc2018": ("icbeb", "icbeb", "filename"),
    "csn": ("chapman", "chapman", "ecg_path"),
}
LABEL_SEPARATOR = ";"


def merl_split_file(split_files: str | os.PathLike, label_set: str, split: str) -> Path:
    """Path of MERL's original CSV for `label_set` and `split` ("train" / "validation" / "test") under
    `split_files` (MERL's `finetune/data_split` folder, or the repository root holding it)."""
    folder, stem, _ = _merl_entry(label_set)
    root = Path(split_files)
    for base in (root, root / "finetune" / "data_split", root / "data_split"):
        path = base / folder / f"{stem}_{MERL_FILE_SPLITS[split]}.csv"
        if path.is_file():
            return path
    raise ValueError(
        f"{root}: MERL split file {folder}/{stem}_{MERL_FILE_SPLITS[split]}.csv not found (expected MERL's "
        "finetune/data_split folder)"
    )


def _merl_entry(label_set: str) -> tuple[str, str, str]:
    if label_set not in MERL_SPLIT_FILES:
        raise ValueError(f"MERL publishes splits for {sorted(MERL_SPLIT_FILES)}, not {label_set!r}")
    return MERL_SPLIT_FILES[label_set]


def merl_column_for_code(code: str, columns: SequenceType[str]) -> str:
    """MERL's column for one of our class codes, matched by name: MERL writes PTB-XL codes without the
    underscores of scp_statements.csv (`ISC` for `ISC_`, `AVB` for `_AVB`)."""
    for candidate in (code, code.strip("_")):
        if candidate in columns:
            return candidate
    raise ValueError(f"class {code!r} has no column in MERL's split file (columns: {list(columns)})")


def merl_record_id(label_set: str, value) -> str:
    """Our record id of a MERL row: PTB-XL `ecg_id`, CPSC2018 `filename` (A0001), CSN file stem (JS00001)."""
    if label_set == "csn":
        return Path(str(value)).stem
    if label_set.startswith("ptbxl"):
        return str(int(value))
    return str(value).strip()


def read_merl_split_csvs(split_files: str | os.PathLike, label_set: str) -> pd.DataFrame:
    """Rows of MERL's original CSVs as (`split`, `record_id`, `label_codes`), labels read **by column name**
    (the train file of `sub_class` orders its columns differently from val / test)."""
    from cmelt.data.labels import label_codes

    _, _, id_column = _merl_entry(label_set)
    codes = label_codes(label_set)
    frames = []
    for split in MERL_SPLITS:
        path = merl_split_file(split_files, label_set, split)
        table = pd.read_csv(path)
        if id_column not in table.columns:
            raise ValueError(f"{path}: no {id_column!r} column (columns: {list(table.columns)})")
        columns = [merl_column_for_code(code, list(table.columns)) for code in codes]
        values = table[columns].to_numpy()
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{path}: label columns must hold 0 / 1")
        frames.append(pd.DataFrame({
            "split": split,
            "record_id": [merl_record_id(label_set, value) for value in table[id_column]],
            "label_codes": [[codes[i] for i in np.flatnonzero(row)] for row in values],
        }))
    return pd.concat(frames, ignore_index=True)


def read_merl_split_list(label_set: str, split_files: str | os.PathLike | None = None) -> pd.DataFrame:
    """MERL's published rows of `label_set`: (`split`, `record_id`, `label_codes` in our codes).

    From the compact lists shipped in `data/merl_splits/` (derived from MERL's files, MIT, see the LICENSE
    there), or from MERL's original CSV folder when `split_files` is given."""
    if split_files is not None:
        return read_merl_split_csvs(split_files, label_set)
    _merl_entry(label_set)
    table = pd.read_csv(MERL_SPLIT_DIR / f"{label_set}.csv.gz", dtype=str, keep_default_na=False)
    table["label_codes"] = [value.split(LABEL_SEPARATOR) if value else [] for value in table["labels"]]
    return table[["split", "record_id", "label_codes"]]


def write_merl_split_lists(split_files: str | os.PathLike, output_dir: str | os.PathLike = MERL_SPLIT_DIR) -> list[Path]:
    """Derives the compact lists (`<label set>.csv.gz`: split, record_id, labels joined by ';') from MERL's CSVs."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for label_set in MERL_SPLIT_FILES:
        table = read_merl_split_csvs(split_files, label_set)
        table["labels"] = [LABEL_SEPARATOR.join(codes) for codes in table["label_codes"]]
        path = output_dir / f"{label_set}.csv.gz"
        # mtime=0: the same input gives byte-identical files
        with gzip.GzipFile(path, "wb", mtime=0) as handle:
            handle.write(table[["split", "record_id", "labels"]].to_csv(index=False).encode())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Derive the shipped MERL split lists from MERL's original CSVs.")
    parser.add_argument("split_files", help="MERL's finetune/data_split folder")
    parser.add_argument("--output_dir", default=str(MERL_SPLIT_DIR))
    args = parser.parse_args(argv)
    for path in write_merl_split_lists(args.split_files, args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
