"""The records a command works on, from what a user types: files, folders, globs or a CSV with a path column; and
reading them in batches through the feature extractor, where a record that cannot be read becomes an error string
instead of stopping the run (cmelt-label, cmelt-embed).

    collect_record_paths(["ecgs/", "extra/*.npy", "one/JS00001.hea", "list.csv"], path_column="path")

A folder is searched recursively for records by extension: `.hea` (WFDB, PhysioNet challenge `.hea` + `.mat`),
`.mat` without a `.hea` beside it (CPSC2018) and `.npy` (needs `sampling_rate`). A CSV's relative paths are taken
relative to the CSV's folder. Files named explicitly are kept even when missing or unreadable: they get an error.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmelt.data.leads import add_leads_argument

RECORD_EXTENSIONS = (".hea", ".mat", ".npy")
CSV_EXTENSIONS = (".csv", ".tsv")


def _records_in_folder(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in RECORD_EXTENSIONS:
            continue
        if suffix == ".mat" and path.with_suffix(".hea").is_file():
            continue  # the challenge record is listed once, by its header
        found.append(str(path.with_suffix("")) if suffix == ".hea" else str(path))
    return found


def _records_in_csv(csv_path: Path, path_column: str) -> list[str]:
    import pandas as pd

    table = pd.read_csv(csv_path, sep="\t" if csv_path.suffix.lower() == ".tsv" else ",", dtype=str)
    if path_column not in table.columns:
        raise ValueError(f"{csv_path}: no column {path_column!r} (columns: {list(table.columns)}); pass --path_column")
    return [str(resolve_relative(value, csv_path.parent)) for value in table[path_column].fillna("")]


def resolve_relative(value: str, base: Path) -> Path:
    """`value` as a path; relative paths are taken relative to `base` (the folder of the CSV that lists them)."""
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else base / path


def collect_record_paths(inputs: Sequence[str], path_column: str = "path") -> list[str]:
    """Record paths (WFDB records as stems) of `inputs`, in the order given, without duplicates."""
    if not inputs:
        raise ValueError("no inputs: give record files, folders, globs or a CSV with a path column")
    paths: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += _records_in_folder(path)
        elif path.suffix.lower() in CSV_EXTENSIONS and path.is_file():
            paths += _records_in_csv(path, path_column)
        elif any(character in item for character in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            paths += [str(Path(match).with_suffix("")) if match.lower().endswith(".hea") else match for match in matches]
        else:
            paths.append(str(path.with_suffix("")) if path.suffix.lower() == ".hea" else str(path))
    return list(dict.fromkeys(paths))


def csv_column_by_path(inputs: Sequence[str], path_column: str, column: str) -> dict[str, str]:
    """{record path: value of `column`} over the CSV files among `inputs` (e.g. each record's report text)."""
    import pandas as pd

    values: dict[str, str] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.suffix.lower() not in CSV_EXTENSIONS or not path.is_file():
            continue
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)
        if column not in table.columns:
            raise ValueError(f"{path}: no column {column!r} (columns: {list(table.columns)})")
        for record, value in zip(table[path_column].fillna(""), table[column]):
            values[str(resolve_relative(record, path.parent))] = value if isinstance(value, str) else ""
    return values


@dataclass
class RecordBatch:
    """One batch of records: `paths` in input order, `errors[i]` None when record i was read. `input_values`
    (n_read, 12, samples) float32 mV and `lead_mask` (n_read, 12) hold the read records only, in the same order as
    `read_positions` (indices into `paths`). `notes[i]`: warnings the reader gave for record i (e.g. a flat lead)."""

    paths: list[str]
    errors: list[str | None]
    notes: list[str]
    read_positions: list[int] = field(default_factory=list)
    input_values: np.ndarray | None = None
    lead_mask: np.ndarray | None = None


def read_one(feature_extractor, path: str, sampling_rate: float | None = None):
    """(features, error, notes) of one record; every failure is an error string, never an exception.

    `sampling_rate` is used for `.npy` files only (they carry none); other files keep the rate in their header."""
    sampling_rate = sampling_rate if str(path).lower().endswith(".npy") else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            features = feature_extractor(path, sampling_rate=sampling_rate, return_tensors="np")
        except Exception as error:  # readers raise many types for bad files; each becomes this record's error
            return None, f"{type(error).__name__}: {error}", ""
    # the reader's own warnings (flat lead, NaN gap ...), not third-party deprecation notices
    notes = "; ".join(dict.fromkeys(
        str(warning.message) for warning in caught
        if not issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
    ))
    return features, None, notes


def iter_record_batches(
    paths: Sequence[str], feature_extractor, batch_size: int = 32, sampling_rate: float | None = None,
    progress: bool = True, description: str = "records",
) -> Iterator[RecordBatch]:
    """Reads `paths` in batches of `batch_size`; see `RecordBatch`."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be a positive count, got {batch_size}")
    with tqdm(total=len(paths), desc=description, unit="rec", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start : start + batch_size])
            batch = RecordBatch(paths=chunk, errors=[], notes=[])
            values, masks = [], []
            for position, path in enumerate(chunk):
                features, error, notes = read_one(feature_extractor, path, sampling_rate)
                batch.errors.append(error)
                batch.notes.append(notes)
                if features is not None:
                    batch.read_positions.append(position)
                    values.append(features["input_values"][0])
                    masks.append(features["lead_mask"][0])
            if values:
                batch.input_values = np.stack(values).astype(np.float32)
                batch.lead_mask = np.stack(masks).astype(bool)
            bar.update(len(chunk))
            yield batch


def add_input_arguments(parser) -> None:
    """INPUTS, the model and the options of reading and running them, shared by cmelt-label and cmelt-embed."""
    parser.add_argument("inputs", nargs="+", help="record files, folders (searched recursively), globs, or CSV files")
    parser.add_argument("--model", required=True, help="a saved C-MELT folder or a Hub repo id")
    parser.add_argument("--path_column", default="path", help="column of record paths in CSV inputs (default: path)")
    parser.add_argument("--sampling_rate", type=float, default=None, help="rate of .npy inputs, in Hz")
    add_leads_argument(parser)
    parser.add_argument("--batch_size", type=int, default=32, help="records per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
