"""MIMIC-IV-ECG v1.0 -> the pretraining corpus: a `datasets.DatasetDict` (train / validation) on disk.

    python -m cmelt.data.mimic_iv_ecg ROOT OUT [--num_proc N] [--valid_fraction 0.05] [--seed 0] [--shard_size 2000]

Columns: `study_id`, `subject_id`, `ecg` (int16 uV, canonical lead order; the header's lead names map MIMIC's
I, II, III, aVR, aVF, aVL order), `lead_mask`, `report` (the record's `report_0..report_17` statements merged and
cleaned by `merge_reports`), `report_id` (index of the report in the sorted table of unique reports of the whole
corpus, so the same text has the same id in every split and shard).

Dropped records, counted by reason (printed and written to OUT/skipped.json): no report (no machine-measurements
row, or every statement empty), then the reasons every loader shares (`data.ecg_store`): signal or header file
missing, record shorter than its header claims, unreadable file (corrupt), NaN/inf samples (MIMIC marks missing
samples with the WFDB invalid value; such records are dropped, not repaired), unusable signal (rejected by the
feature extractor, e.g. too short), flat signal (no lead with any amplitude).

Any other per-record failure (an exception the reader or the feature extractor did not anticipate, a header
claiming more memory than exists) is skipped and counted as `reader error (<type>)` / `feature extractor error
(<type>)`: one bad record never stops the run.

The split is by patient: a seeded random `valid_fraction` of subjects goes to validation, so no subject is in both.
The work is done in shards of `shard_size` records, each written atomically (a temporary directory renamed into
OUT/shards/), so an interrupted run redoes only the shards that were not finished. A finished shard is reused only
if it was built from the same inputs: its key (OUT/shards/<name>/source.json) hashes the converter version and
feature-extractor settings, every row's study id, path, report text and report id, and the size and modification
time of each record's `.hea` and `.dat`; an edited report or a rewritten signal file rebuilds that shard. (An edit
that adds or removes a unique report text renumbers the report ids after it, which rebuilds the shards holding
them.) `plan.json` and every other state file are written atomically. The final split directories
hard-link the shards' Arrow files (no second copy of ~95 GB) and are loadable with `datasets.load_from_disk(OUT)`.

`CMELTMIMICLazyDataset` gives the same rows straight from the WFDB files for users who do not convert.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from modeling_cmelt.processing_cmelt import clean_report

from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor

from .ecg_store import (
    ECG_FEATURE,
    LEAD_MASK_FEATURE,
    SkipLog,
    read_record,
    stored_ecg,
    worker_pool,
    write_json_atomically,
)

SPLITS = ("train", "validation")
REPORT_COLUMNS = tuple(f"report_{slot}" for slot in range(18))
SKIP_NO_REPORT = "no report"  # the other reasons are the shared ones of data.ecg_store (SKIP_MISSING, ...)
# Bump when the conversion of a record changes, so shards of an older converter are rebuilt.
CONVERTER_VERSION = 2
SHARD_KEY_FILE = "source.json"

logger = logging.getLogger(__name__)


def corpus_features():
    from datasets import Features, Value

    return Features({
        "study_id": Value("int64"),
        "subject_id": Value("int64"),
        "ecg": ECG_FEATURE,
        "lead_mask": LEAD_MASK_FEATURE,
        "report": Value("string"),
        "report_id": Value("int64"),
    })


def merge_reports(statements: list[Any]) -> str:
    """Merge the statements of one record (e.g. MIMIC-IV-ECG `report_0` ... `report_17`) into one clean report.

    None, NaN, non-strings and blank statements are dropped; the rest are joined with ". " and cleaned.
    """
    kept = []
    for statement in statements:
        if statement is None or (isinstance(statement, float) and math.isnan(statement)):
            continue
        if not isinstance(statement, str) or not statement.strip():
            continue
        kept.append(statement.strip())
    return clean_report(". ".join(kept))


def load_mimic_index(root: str | os.PathLike):
    """All records of a MIMIC-IV-ECG root as a pandas DataFrame sorted by (subject_id, study_id), with columns
    subject_id, study_id, path (relative, no extension), report (merged, cleaned; "" when none) and report_id
    (-1 when the report is empty)."""
    import pandas as pd

    root = Path(root)
    for name in ("record_list.csv", "machine_measurements.csv"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: expected a MIMIC-IV-ECG v1.0 root (record_list.csv, "
                                    "machine_measurements.csv, files/)")
    records = pd.read_csv(root / "record_list.csv", usecols=["subject_id", "study_id", "path"],
                          dtype={"subject_id": "int64", "study_id": "int64", "path": str})
    measurements = pd.read_csv(root / "machine_measurements.csv", usecols=["study_id", *REPORT_COLUMNS],
                               dtype=str, keep_default_na=False)
    measurements["study_id"] = measurements["study_id"].astype("int64")
    measurements = measurements.drop_duplicates("study_id")
    reports = [merge_reports(list(row)) for row in measurements[list(REPORT_COLUMNS)].itertuples(index=False)]
    report_by_study = pd.Series(reports, index=measurements["study_id"].to_numpy())
    records["report"] = report_by_study.reindex(records["study_id"].to_numpy()).fillna("").to_numpy()
    records = records.sort_values(["subject_id", "study_id"], kind="stable").reset_index(drop=True)
    unique_reports = np.array(sorted(set(records["report"]) - {""}), dtype=object)
    ids = np.searchsorted(unique_reports, records["report"].to_numpy()) if len(unique_reports) else np.zeros(len(records), int)
    records["report_id"] = np.where(records["report"].to_numpy() == "", -1, ids).astype(np.int64)
    return records


def validation_subjects(subject_ids, valid_fraction: float, seed: int) -> set[int]:
    """A seeded random `valid_fraction` of the distinct subjects (at least one when the fraction is > 0 and there
    are two or more subjects)."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    subjects = np.unique(np.asarray(subject_ids, dtype=np.int64))
    count = int(round(valid_fraction * len(subjects)))
    if valid_fraction > 0 and len(subjects) >= 2:
        count = min(max(count, 1), len(subjects) - 1)
    order = np.random.default_rng(seed).permutation(len(subjects))
    return set(int(subject) for subject in subjects[order[:count]])


def convert_record(root: Path, path: str, report: str, feature_extractor) -> tuple[dict | None, str | None]:
    """(columns of one record, None) or (None, skip reason): the shared route (`ecg_store.read_record`,
    `ecg_store.stored_ecg`) behind a record without a report."""
    if not report:
        return None, SKIP_NO_REPORT
    recording, reason, _ = read_record(root / path)
    if recording is None:
        return None, reason
    return stored_ecg(recording.signal, recording.sampling_rate, recording.lead_names, feature_extractor)


def _convert_shard(task: tuple[str, str, str, list[tuple]]) -> tuple[str, int, dict]:
    """Convert one shard's records and write the shard atomically (tmp dir, then rename)."""
    from datasets import Dataset

    root, shards_dir, name, rows, shard_key = task
    root, shards_dir = Path(root), Path(shards_dir)
    feature_extractor = CMELTFeatureExtractor()
    skips = SkipLog()
    columns = {key: [] for key in ("study_id", "subject_id", "ecg", "lead_mask", "report", "report_id")}
    for subject_id, study_id, path, report, report_id in rows:
        converted, reason = convert_record(root, path, report, feature_extractor)
        if converted is None:
            skips.skip(str(study_id), reason)
            continue
        columns["study_id"].append(int(study_id))
        columns["subject_id"].append(int(subject_id))
        columns["ecg"].append(converted["ecg"])
        columns["lead_mask"].append(converted["lead_mask"].tolist())
        columns["report"].append(report)
        columns["report_id"].append(int(report_id))
    temporary = Path(tempfile.mkdtemp(dir=shards_dir, prefix=f".tmp-{name}-"))
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    shard = Dataset.from_dict(columns, features=corpus_features())
    if len(shard):
        shard.save_to_disk(str(temporary), num_shards=1)
    else:  # every record of the shard was dropped
        _save_empty(temporary, shard)
    (temporary / "skipped.json").write_text(json.dumps({"counts": dict(skips.counts), "examples": skips.examples}))
    (temporary / SHARD_KEY_FILE).write_text(json.dumps({"key": shard_key}))
    _replace_directory(temporary, shards_dir / name)
    return name, len(columns["study_id"]), {"counts": dict(skips.counts), "examples": skips.examples}


def _replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory `source` to `target`, replacing an outdated `target` (renamed aside first, so
    `target` is always either the old complete shard or the new one)."""
    if target.exists():
        outdated = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-outdated-{target.name}-"))
        os.replace(target, outdated / target.name)
        shutil.rmtree(outdated, ignore_errors=True)
    os.replace(source, target)


def _file_stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "-"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def shard_key(root: Path, rows: list[tuple], converter_settings: dict) -> str:
    """What a shard was built from: converter version and settings, each row (ids, path, report text, report id)
    and the size and mtime of its `.hea` and `.dat`. A shard on disk is reused only under the same key."""
    digest = hashlib.sha256(json.dumps({"version": CONVERTER_VERSION, **converter_settings}, sort_keys=True).encode())
    for subject_id, study_id, path, report, report_id in rows:
        stem = root / path
        stamps = ",".join(_file_stamp(stem.with_name(stem.name + suffix)) for suffix in (".hea", ".dat"))
        digest.update(f"{subject_id}|{study_id}|{path}|{report_id}|{report}|{stamps}\n".encode())
    return digest.hexdigest()[:24]


def _converter_settings() -> dict:
    """Feature-extractor settings that change a converted record."""
    extractor = CMELTFeatureExtractor()
    keys = ("sampling_rate", "num_samples", "normalization", "length_policy", "max_gap_seconds", "max_missing_fraction",
            "flat_lead_threshold_mv", "min_seconds", "max_amplitude_mv", "padding_value")
    return {key: getattr(extractor, key, None) for key in keys}


def _shard_is_current(shard_dir: Path, key: str) -> bool:
    try:
        return (shard_dir / "state.json").is_file() and json.loads((shard_dir / SHARD_KEY_FILE).read_text())["key"] == key
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_plan(plan_file: Path) -> dict | None:
    """The previous run's plan, or None when absent or unreadable (shards carry their own keys, so a damaged
    plan only loses the check that OUT belongs to the same conversion)."""
    if not plan_file.is_file():
        return None
    try:
        plan = json.loads(plan_file.read_text())
        return plan if isinstance(plan, dict) else None
    except (OSError, ValueError):
        warnings.warn(f"{plan_file} is unreadable; rewriting it (each shard is still checked against its inputs)",
                      stacklevel=3)
        return None


def _shard_plan(index, valid_fraction: float, seed: int, shard_size: int) -> dict[str, list[tuple[str, list[tuple]]]]:
    in_validation = index["subject_id"].isin(validation_subjects(index["subject_id"], valid_fraction, seed)).to_numpy()
    plan = {}
    for split, mask in (("train", ~in_validation), ("validation", in_validation)):
        rows = list(index.loc[mask, ["subject_id", "study_id", "path", "report", "report_id"]].itertuples(index=False, name=None))
        plan[split] = [(f"{split}-{start // shard_size:05d}", rows[start : start + shard_size])
                       for start in range(0, len(rows), shard_size)]
    return plan


def _plan_fingerprint(plan) -> str:
    digest = hashlib.sha256()
    for split, shards in plan.items():
        for name, rows in shards:
            digest.update(f"{split}/{name}:{','.join(str(row[1]) for row in rows)};".encode())
    return digest.hexdigest()[:16]


def _assemble_split(out: Path, split: str, shard_dirs: list[Path]) -> None:
    """OUT/<split> as a `save_to_disk` directory whose Arrow files are hard links to the shards' files."""
    from datasets import Dataset

    target = out / split
    shutil.rmtree(target, ignore_errors=True)
    if not shard_dirs:
        _save_empty(target, Dataset.from_dict({key: [] for key in corpus_features()}, features=corpus_features()))
        return
    target.mkdir(parents=True)
    data_files, digest = [], hashlib.sha256()
    for number, shard in enumerate(shard_dirs):
        state = json.loads((shard / "state.json").read_text())
        for entry in state["_data_files"]:
            filename = f"data-{len(data_files):05d}-of-{len(shard_dirs):05d}.arrow"
            try:
                os.link(shard / entry["filename"], target / filename)
            except OSError:  # another file system: copy
                shutil.copyfile(shard / entry["filename"], target / filename)
            data_files.append({"filename": filename})
        digest.update(state["_fingerprint"].encode())
    state = json.loads((shard_dirs[0] / "state.json").read_text())
    state.update({"_data_files": data_files, "_fingerprint": digest.hexdigest()[:16], "_split": split})
    write_json_atomically(target / "state.json", state)
    shutil.copyfile(shard_dirs[0] / "dataset_info.json", target / "dataset_info.json")


def _save_empty(target: Path, empty) -> None:
    """save_to_disk of a 0-row dataset writes no Arrow file and cannot be loaded back (datasets 5.2): write one."""
    import pyarrow as pa

    empty.save_to_disk(str(target))
    filename = "data-00000-of-00001.arrow"
    with pa.OSFile(str(target / filename), "wb") as sink, pa.ipc.new_stream(sink, empty.data.table.schema) as writer:
        writer.write_table(empty.data.table)
    state = json.loads((target / "state.json").read_text())
    state["_data_files"] = [{"filename": filename}]
    write_json_atomically(target / "state.json", state)


def convert_mimic_iv_ecg(
    root: str | os.PathLike,
    out: str | os.PathLike,
    num_proc: int = 1,
    valid_fraction: float = 0.05,
    seed: int = 0,
    shard_size: int = 2000,
):
    """Convert (or resume converting) a MIMIC-IV-ECG root into OUT; returns the loaded `DatasetDict`."""
    from datasets import load_from_disk
    from tqdm.auto import tqdm

    root, out = Path(root), Path(out)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    index = load_mimic_index(root)
    plan = _shard_plan(index, valid_fraction, seed, shard_size)
    fingerprint = _plan_fingerprint(plan)
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    plan_file = out / "plan.json"
    previous = _read_plan(plan_file)
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise ValueError(f"{out} holds shards of a different conversion (other root, split or shard size); "
                         "use a new OUT directory or delete it")
    write_json_atomically(plan_file, {"fingerprint": fingerprint, "root": str(root), "valid_fraction": valid_fraction,
                                      "seed": seed, "shard_size": shard_size})
    for stale in shards_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    settings = _converter_settings()
    keyed = [(name, rows, shard_key(root, rows, settings)) for shards in plan.values() for name, rows in shards]
    tasks = [(str(root), str(shards_dir), name, rows, key) for name, rows, key in keyed
             if not _shard_is_current(shards_dir / name, key)]
    done = sum(len(shards) for shards in plan.values()) - len(tasks)
    logger.info(f"{len(index)} records, {sum(len(s) for s in plan.values())} shards ({done} already done, {len(tasks)} to do)")
    progress = tqdm(total=sum(len(task[3]) for task in tasks), unit="ecg", desc="converting")
    if num_proc > 1 and len(tasks) > 1:
        with worker_pool(min(num_proc, len(tasks))) as pool:
            sizes = {task[2]: len(task[3]) for task in tasks}
            for name, _, _ in pool.imap_unordered(_convert_shard, tasks):
                progress.update(sizes[name])
    else:
        for task in tasks:
            _convert_shard(task)
            progress.update(len(task[3]))
    progress.close()

    skips = SkipLog()
    for split, shards in plan.items():
        shard_dirs = [shards_dir / name for name, _ in shards]
        for shard in shard_dirs:
            saved = json.loads((shard / "skipped.json").read_text())
            part = SkipLog()
            part.counts.update(saved["counts"])
            part.examples = saved["examples"]
            skips.merge(part)
        _assemble_split(out, split, shard_dirs)
    write_json_atomically(out / "dataset_dict.json", {"splits": list(SPLITS)}, indent=None)
    skips.report("MIMIC-IV-ECG conversion", out / "skipped.json")
    dataset = load_from_disk(str(out))
    logger.info(f"{ {split: len(dataset[split]) for split in dataset} } -> {out}")
    return dataset


class CMELTMIMICLazyDataset:
    """MIMIC-IV-ECG read on the fly (no conversion): item i is the same dict as a converted row
    (`study_id`, `subject_id`, `ecg` int16 uV (12, 5000), `lead_mask`, `report`, `report_id`), or None when the
    record would have been dropped (the pretraining collator skips None rows and counts them).

    Args:
        root: the MIMIC-IV-ECG root.
        split: "train", "validation" or None (all records).
        valid_fraction, seed: the same patient split as the converter with the same arguments.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, valid_fraction: float = 0.05, seed: int = 0):
        if split not in (None, *SPLITS):
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.root = Path(root)
        index = load_mimic_index(self.root)
        if split is not None:
            in_validation = index["subject_id"].isin(validation_subjects(index["subject_id"], valid_fraction, seed))
            index = index[in_validation if split == "validation" else ~in_validation].reset_index(drop=True)
        self.index = index
        self.skips = SkipLog()
        self._feature_extractor = CMELTFeatureExtractor()
        self._n3s_candidates: dict[int, np.ndarray] | None = None
        self.report_table = None

    @property
    def column_names(self) -> list[str]:
        """The keys of every item (as `datasets.Dataset.column_names`): `n3s_negatives` only after `with_n3s`."""
        names = ["study_id", "subject_id", "ecg", "lead_mask", "report", "report_id"]
        return names + (["n3s_negatives"] if self._n3s_candidates is not None else [])

    def with_n3s(self, cache_dir: str | os.PathLike, encoder_name_or_path: str, k: int = 64, **settings):
        """Give every item its `n3s_negatives` (k farthest report ids), computed once over this split's unique
        reports and cached in `cache_dir` exactly as `data.n3s.add_n3s_column` does (`settings`: index_type,
        batch_size, max_length, device, use_gpu, dtype). Returns self; `report_table` then holds the texts."""
        from .n3s import ReportTable, compute_neighbours

        unique = self.index[["report_id", "report"]].drop_duplicates()
        if unique["report_id"].duplicated().any():
            raise ValueError("report_id has two texts in the MIMIC-IV-ECG index; rebuild it with load_mimic_index")
        unique = unique.sort_values("report_id")
        table = ReportTable(unique["report_id"].to_numpy(), unique["report"].tolist())
        neighbours = compute_neighbours(table, cache_dir, encoder_name_or_path, k, **settings)
        self._n3s_candidates = dict(zip(table.report_ids.tolist(), neighbours))
        self.report_table = table
        return self

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict | None:
        row = self.index.iloc[int(item)]
        converted, reason = convert_record(self.root, row["path"], row["report"], self._feature_extractor)
        if converted is None:
            self.skips.skip(str(row["study_id"]), reason)
            return None
        item = {"study_id": int(row["study_id"]), "subject_id": int(row["subject_id"]), **converted,
                "report": row["report"], "report_id": int(row["report_id"])}
        if self._n3s_candidates is not None:
            item["n3s_negatives"] = self._n3s_candidates[item["report_id"]]
        return item


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the CLI shows the load summary
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="MIMIC-IV-ECG v1.0 root (record_list.csv, machine_measurements.csv, files/)")
    parser.add_argument("out", help="output directory (DatasetDict; shards/ inside make the run resumable)")
    parser.add_argument("--num_proc", type=int, default=1, help="worker processes")
    parser.add_argument("--valid_fraction", type=float, default=0.05, help="fraction of subjects in validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    parser.add_argument("--shard_size", type=int, default=2000, help="records per resumable shard")
    args = parser.parse_args(argv)
    convert_mimic_iv_ecg(args.root, args.out, num_proc=args.num_proc, valid_fraction=args.valid_fraction,
                         seed=args.seed, shard_size=args.shard_size)


if __name__ == "__main__":
    main()
