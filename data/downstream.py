"""Machinery shared by the downstream dataset loaders (PTB-XL, CPSC2018, CSN, CODE-test, PhysioNet 2021).

A loader turns its dataset's metadata into a list of `RecordJob`s per split (which file, which labels) and hands
them to `build_dataset_dict`, which reads every record (`reading_cmelt.read_ecg`), canonicalises it
(`CMELTFeatureExtractor.to_canonical`: 12 leads, 500 Hz, 10 s, mV), stores it as int16 microvolts and writes an
Arrow dataset. A bad record (missing or unreadable file, record shorter than its header, NaN samples, signal the
extractor rejects) is skipped and counted by reason in a `DownstreamReport`; the load never dies on one record.

Rows: `record_id`, optional `patient_id`, `ecg`, `lead_mask`, `label_ids` (`Sequence(ClassLabel(names=codes))`,
so the label names travel with the data) and `labels` (multi-hot float32 in the same order), plus any extra
columns a loader declares. Datasets are cached by a fingerprint of the jobs, options and the files' size and
modification time; the report of the run that built the cache is stored beside it and replayed on a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from cmelt.data.ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE, SkipLog, read_record, stored_ecg, worker_pool
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from cmelt.data.splits import random_split_indices

_SEGMENT_MODES = ("all", "first_two", "random_crop")

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# report


@dataclass
class DownstreamReport:
    """What a load skipped or dropped, and why.

    Attributes:
        skipped: bad input (missing / unreadable / truncated files, NaN samples ...), by reason.
        dropped: records left out by the task's protocol (e.g. "no label of the task"), by reason.
        codes_outside_label_set: label codes found in the metadata that are not classes of the task (unknown `#Dx`
            SNOMED codes, CPSC labels outside 1-9 ...), with how often they occurred. A record keeping at least one
            known code is kept.
        dropped_labels: classes removed from the label set (e.g. CSN labels with fewer than 10 records).
        from_cache: split names whose data (and this report's counts) came from the cache.
    """

    skipped: SkipLog = field(default_factory=SkipLog)
    dropped: Counter = field(default_factory=Counter)
    codes_outside_label_set: Counter = field(default_factory=Counter)
    dropped_labels: list[str] = field(default_factory=list)
    from_cache: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            **self.skipped.as_dict(),
            "dropped_by_protocol": dict(self.dropped.most_common()),
            "codes_outside_label_set": dict(self.codes_outside_label_set.most_common()),
            "dropped_labels": list(self.dropped_labels),
            "from_cache": list(self.from_cache),
        }

    def merge_dict(self, summary: dict) -> None:
        """Adds the counts of a stored `as_dict()` summary (a cache hit replays the building run's report)."""
        for reason, count in summary.get("by_reason", {}).items():
            self.skipped.counts[reason] += count
            self.skipped.examples.setdefault(reason, []).extend(summary.get("examples", {}).get(reason, [])[:5])
        self.dropped.update(summary.get("dropped_by_protocol", {}))
        self.codes_outside_label_set.update(summary.get("codes_outside_label_set", {}))

    def print_and_save(self, title: str, output_dir: str | os.PathLike | None = None) -> dict:
        """Logs the summary (a warning when records or labels were dropped); writes `<output_dir>/<title>_load_report.json` when `output_dir` is given."""
        json_path = None if output_dir is None else Path(output_dir) / f"{_slug(title)}_load_report.json"
        self.skipped.report(title, json_path=None)
        lines = [f"  {count:>8}  dropped: {reason}" for reason, count in self.dropped.most_common()]
        if self.codes_outside_label_set:
            shown = ", ".join(f"{code} x{count}" for code, count in self.codes_outside_label_set.most_common(10))
            lines.append(f"  label codes outside the label set (record kept if it has a known one): {shown}")
        if self.dropped_labels:
            lines.append(f"  labels removed from the label set: {', '.join(self.dropped_labels)}")
        summary = self.as_dict()
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2))
            lines.append(f"  load report written to {json_path}")
        if lines:
            (logger.warning if self.dropped or self.dropped_labels else logger.info)(f"{title}:\n" + "\n".join(lines))
        return summary


def _slug(text: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in text).strip("_").lower()


# ----------------------------------------------------------------------------------------------------------------
# jobs


@dataclass
class RecordJob:
    """One record to read, with the values of its non-signal columns.

    Attributes:
        record_id: the dataset's record name.
        path: file to read (WFDB stem / .hea / challenge .mat, CPSC .mat, HDF5).
        columns: values of the other columns (`label_ids`, `labels`, `patient_id` ...).
        read_kwargs: extra keyword arguments of `read_ecg` (e.g. `hdf5_index`).
        trim_zero_edges: drop leading / trailing samples that are exactly zero on every lead (CODE-test pads its
            7-s exams with zeros on both sides).
        segment_seconds: when set, the record is cut into windows of this length (see `segment_mode`) and each
            window becomes one row (placed at the start of the 10-s canonical frame, rest zero) with a
            `segment_index` column; when None the record's first 10 s become one row.
        segment_mode: "all" = every full non-overlapping window; "first_two" = the first two windows, the first
            with `role` "gallery", the second "probe"; "random_crop" = one window at a random start drawn from
            `crop_seed`.
    """

    record_id: str
    path: str
    columns: dict = field(default_factory=dict)
    read_kwargs: dict = field(default_factory=dict)
    trim_zero_edges: bool = False
    segment_seconds: float | None = None
    segment_mode: str = "all"
    crop_seed: int = 0


def _windows(job: RecordJob, num_samples: int, rate: float) -> list[tuple[int, int, dict]]:
    """(start, stop, extra columns) of the rows a record yields."""
    if job.segment_seconds is None:
        return [(0, num_samples, {})]
    if job.segment_mode not in _SEGMENT_MODES:
        raise ValueError(f"segment_mode must be one of {_SEGMENT_MODES}, got {job.segment_mode!r}")
    length = int(round(job.segment_seconds * rate))
    count = num_samples // length
    if job.segment_mode == "all":
        return [(index * length, (index + 1) * length, {"segment_index": index}) for index in range(count)]
    if job.segment_mode == "first_two":
        roles = ("gallery", "probe")
        return [(index * length, (index + 1) * length, {"segment_index": index, "role": roles[index]}) for index in range(min(count, 2))]
    if count == 0:
        return []
    start = int(np.random.default_rng(job.crop_seed).integers(0, num_samples - length + 1))
    return [(start, start + length, {"segment_index": 0})]


def process_job(job: RecordJob) -> tuple[list[dict], str | None, str]:
    """Reads and canonicalises one record, window by window, through the shared route (`ecg_store.read_record`,
    `ecg_store.stored_ecg`): (rows, skip reason or None, detail)."""
    recording, reason, detail = read_record(job.path, **job.read_kwargs)
    if recording is None:
        return [], reason, f"{job.record_id}: {detail}"
    signal = recording.signal
    if job.trim_zero_edges and signal.size:
        nonzero = np.flatnonzero(np.any(signal != 0, axis=0))
        signal = signal[:, nonzero[0] : nonzero[-1] + 1] if nonzero.size else signal[:, :0]
    windows = _windows(job, signal.shape[1], recording.sampling_rate)
    if not windows:
        return [], f"shorter than one {job.segment_seconds:g}-s segment", job.record_id
    if job.segment_mode == "first_two" and job.segment_seconds is not None and len(windows) < 2:
        return [], f"fewer than two {job.segment_seconds:g}-s segments (gallery + probe)", job.record_id
    feature_extractor = CMELTFeatureExtractor()  # microseconds to build: one per record, no process-wide cache
    rows = []
    for start, stop, extra in windows:
        stored, reason = stored_ecg(signal[:, start:stop], recording.sampling_rate, recording.lead_names,
                                    feature_extractor)
        if stored is None:
            return [], reason, job.record_id
        rows.append({"record_id": job.record_id, **job.columns, **extra, "ecg": stored["ecg"],
                     "lead_mask": stored["lead_mask"].tolist()})
    return rows, None, ""


# ----------------------------------------------------------------------------------------------------------------
# labels and features


def multi_hot(class_indices: Iterable[int], num_classes: int) -> list[float]:
    vector = [0.0] * num_classes
    for index in class_indices:
        vector[index] = 1.0
    return vector


def label_columns(class_indices: Iterable[int], num_classes: int) -> dict:
    """`label_ids` (sorted, unique) and `labels` (multi-hot) of one record."""
    unique = sorted(set(int(index) for index in class_indices))
    return {"label_ids": unique, "labels": multi_hot(unique, num_classes)}


def downstream_features(codes: list[str] | None, extra: dict | None = None, with_patient_id: bool = False) -> Features:
    """Features of a downstream dataset; `codes=None` gives a dataset without label columns (identification)."""
    columns = {"record_id": Value("string")}
    if with_patient_id:
        columns["patient_id"] = Value("string")
    columns.update(extra or {})
    columns["ecg"] = ECG_FEATURE
    columns["lead_mask"] = LEAD_MASK_FEATURE
    if codes is not None:
        columns["label_ids"] = Sequence(ClassLabel(names=list(codes)))
        columns["labels"] = Sequence(Value("float32"), length=len(codes))
    return Features(columns)


def label_names(dataset: Dataset | DatasetDict) -> list[str]:
    """The class codes of a downstream dataset, read from its features (never from positions)."""
    if isinstance(dataset, DatasetDict):
        dataset = next(iter(dataset.values()))
    feature = dataset.features.get("label_ids")
    if feature is None:
        raise ValueError(f"dataset has no 'label_ids' column (columns: {list(dataset.features)})")
    inner = getattr(feature, "feature", None)
    if not isinstance(inner, ClassLabel):
        raise ValueError(f"'label_ids' must be Sequence(ClassLabel(...)), got {feature}")
    return list(inner.names)


def class_counts(dataset: Dataset) -> list[int]:
    """Number of records per class (from the `labels` column)."""
    labels = np.asarray(dataset.with_format("numpy")["labels"], dtype=np.float32)
    if labels.size == 0:
        return [0] * len(label_names(dataset))
    return labels.sum(axis=0).astype(int).tolist()


def format_class_counts(codes: list[str], counts_by_split: dict[str, list[int]], sizes: dict[str, int]) -> str:
    """A table of split sizes and per-class counts (the shape of paper Tab. 9)."""
    splits = list(counts_by_split)
    width = max([len("records")] + [len(code) for code in codes])
    header = f"{'class':<{width}}  " + "  ".join(f"{split:>10}" for split in splits) + f"  {'total':>10}"
    lines = [header, "-" * len(header)]
    lines.append(
        f"{'records':<{width}}  " + "  ".join(f"{sizes[split]:>10}" for split in splits) + f"  {sum(sizes.values()):>10}"
    )
    for index, code in enumerate(codes):
        values = [counts_by_split[split][index] for split in splits]
        lines.append(f"{code:<{width}}  " + "  ".join(f"{value:>10}" for value in values) + f"  {sum(values):>10}")
    return "\n".join(lines)


def print_dataset_summary(title: str, dataset_dict: DatasetDict) -> None:
    codes = label_names(dataset_dict)
    sizes = {split: len(dataset) for split, dataset in dataset_dict.items()}
    counts = {split: class_counts(dataset) for split, dataset in dataset_dict.items()}
    print(f"{title}: {len(codes)} classes")
    print(format_class_counts(codes, counts, sizes))


# ----------------------------------------------------------------------------------------------------------------
# building


def _file_state(path: str) -> tuple:
    try:
        status = os.stat(path)
        return (status.st_size, status.st_mtime_ns)
    except OSError:
        return (None, None)


def _hea_beside(path: str) -> str:
    stem, _ = os.path.splitext(path)
    return stem + ".hea" if os.path.splitext(path)[1] else path + ".hea"


def jobs_fingerprint(name: str, split: str, jobs: list[RecordJob], features: Features, options: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([name, split, options, features.to_dict()], sort_keys=True, default=str).encode())
    for job in jobs:
        data_path = job.path if os.path.splitext(job.path)[1] else job.path + ".dat"
        state = (_file_state(data_path), _file_state(_hea_beside(job.path)))
        digest.update(
            json.dumps(
                [job.record_id, job.path, job.columns, job.read_kwargs, job.trim_zero_edges, job.segment_seconds,
                 job.segment_mode, job.crop_seed, state],
                sort_keys=True, default=str,
            ).encode()
        )
    return digest.hexdigest()[:32]


def _iterate_results(jobs: tuple[RecordJob, ...], num_proc: int) -> Iterator[tuple[list[dict], str | None, str]]:
    if num_proc <= 1 or len(jobs) < 2:
        for job in jobs:
            yield process_job(job)
        return
    with worker_pool(num_proc) as pool:
        yield from pool.imap(process_job, jobs, chunksize=max(1, min(32, len(jobs) // (4 * num_proc) or 1)))


def _generate_rows(jobs: tuple[RecordJob, ...], num_proc: int, description: str, report_path: str):
    from tqdm.auto import tqdm

    split_report = DownstreamReport()
    for rows, reason, detail in tqdm(_iterate_results(jobs, num_proc), total=len(jobs), desc=description, unit="rec"):
        if reason is not None:
            split_report.skipped.skip(detail or "?", reason)
            continue
        yield from rows
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(split_report.as_dict()))


def _empty_dataset(features: Features, split: str) -> Dataset:
    return Dataset.from_dict({key: [] for key in features}, features=features, split=split)


def build_split(
    name: str,
    split: str,
    jobs: list[RecordJob],
    features: Features,
    report: DownstreamReport,
    *,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | None = None,
    options: dict | None = None,
) -> Dataset:
    """Reads `jobs` into one split, skipping bad records into `report`; cached by fingerprint."""
    from datasets import config as datasets_config

    fingerprint = jobs_fingerprint(name, split, jobs, features, options or {})
    cache_root = Path(cache_dir) if cache_dir is not None else Path(datasets_config.HF_DATASETS_CACHE)
    report_path = cache_root / "cmelt_downstream_reports" / f"{fingerprint}.json"
    if report_path.exists():
        report_path.unlink()  # rewritten by the generator if it runs; absent afterwards means a cache hit
    if not jobs:
        return _empty_dataset(features, split)
    try:
        dataset = Dataset.from_generator(
            _generate_rows,
            features=features,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            # a tuple, not a list: datasets would shard list-valued gen_kwargs into one generator call per job
            gen_kwargs={"jobs": tuple(jobs), "num_proc": num_proc, "description": f"{name} {split}", "report_path": str(report_path)},
            split=split,
            fingerprint=fingerprint,
        )
    except ValueError as error:
        if "corresponds to no data" not in str(error):
            raise
        dataset = _empty_dataset(features, split)  # every record of the split was skipped
    stored = cache_root / "cmelt_downstream_reports" / f"{fingerprint}.done.json"
    if report_path.exists():
        report_path.replace(stored)
    else:
        report.from_cache.append(split)
    if stored.exists():
        report.merge_dict(json.loads(stored.read_text()))
    return dataset


def build_dataset_dict(
    name: str,
    jobs_by_split: dict[str, list[RecordJob]],
    features: Features,
    report: DownstreamReport,
    *,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | None = None,
    options: dict | None = None,
) -> DatasetDict:
    return DatasetDict(
        {
            split: build_split(name, split, jobs, features, report, num_proc=num_proc, cache_dir=cache_dir, options=options)
            for split, jobs in jobs_by_split.items()
        }
    )


def drop_rare_labels(dataset_dict: DatasetDict, min_records: int, report: DownstreamReport) -> DatasetDict:
    """Removes classes with fewer than `min_records` records (counted over all splits) and the rows left without
    any label; the remaining classes keep their order."""
    codes = label_names(dataset_dict)
    totals = np.zeros(len(codes), dtype=int)
    for dataset in dataset_dict.values():
        totals += np.asarray(class_counts(dataset), dtype=int)
    keep = [index for index, total in enumerate(totals) if total >= min_records]
    if len(keep) == len(codes):
        return dataset_dict
    if not keep:
        raise ValueError(
            f"no label has at least {min_records} records in the loaded data (most: {int(totals.max(initial=0))}); "
            "lower min_records_per_label"
        )
    report.dropped_labels.extend(f"{codes[index]} ({totals[index]} records)" for index in range(len(codes)) if index not in keep)
    new_index = {old: new for new, old in enumerate(keep)}
    kept_codes = [codes[index] for index in keep]
    result = {}
    for split, dataset in dataset_dict.items():
        features = dataset.features.copy()
        features["label_ids"] = Sequence(ClassLabel(names=kept_codes))
        features["labels"] = Sequence(Value("float32"), length=len(kept_codes))

        def remap(row: dict) -> dict:
            return label_columns([new_index[index] for index in row["label_ids"] if index in new_index], len(kept_codes))

        before = len(dataset)
        remapped = dataset.map(remap, features=features, desc=f"dropping rare labels ({split})")
        remapped = remapped.filter(lambda labels: any(labels), input_columns="labels")
        if before - len(remapped):
            report.dropped["no label left after dropping rare labels"] += before - len(remapped)
        result[split] = remapped
    return DatasetDict(result)


# ----------------------------------------------------------------------------------------------------------------
# WFDB header comments


def header_comment_value(hea_path: str | os.PathLike, key: str) -> str | None:
    """Value of a `#Key: value` / `# Key: value` comment line of a WFDB header (None when absent)."""
    prefix = key.lower() + ":"
    with open(hea_path, encoding="latin-1") as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped.startswith("#"):
                continue
            body = stripped.lstrip("#").strip()
            if body.lower().startswith(prefix):
                return body[len(prefix):].strip()
    return None


def parse_dx_codes(value: str | None) -> list[str]:
    """Comma-separated SNOMED codes of a `#Dx` line (tolerates spaces, trailing and doubled commas)."""
    if not value:
        return []
    return [code.strip() for code in value.split(",") if code.strip()]


def map_codes(
    codes: Iterable[str], code_to_indices: dict[str, list[int]], report: DownstreamReport
) -> list[int]:
    """Class indices of `codes`; codes outside the label set are counted in the report."""
    indices: set[int] = set()
    for code in codes:
        hits = code_to_indices.get(code)
        if hits is None:
            report.codes_outside_label_set[code] += 1
        else:
            indices.update(hits)
    return sorted(indices)


def header_class_indices(
    record_id: str,
    header: str | os.PathLike,
    code_to_indices: dict[str, list[int]],
    report: DownstreamReport,
    no_label_reason: str = "no label of the task",
) -> list[int] | None:
    """Class indices of a challenge-style header's `#Dx` codes, or None when the record is skipped (unreadable
    header, no `#Dx`) or dropped (no code of the label set), each counted in `report`."""
    try:
        codes = parse_dx_codes(header_comment_value(header, "Dx"))
    except OSError:
        report.skipped.skip(record_id, "unreadable header")
        return None
    if not codes:
        report.skipped.skip(record_id, "header has no #Dx line")
        return None
    indices = map_codes(codes, code_to_indices, report)
    if not indices:
        report.dropped[no_label_reason] += 1
        return None
    return indices


def split_record_jobs(
    records: list[tuple[str, str, list[int]]], num_classes: int, split_fractions, seed: int
) -> dict[str, list[RecordJob]]:
    """Seeded random train / validation / test split of (record_id, path, class indices) into labelled jobs."""
    train, valid, test = random_split_indices(len(records), split_fractions, seed)
    return {
        split: [
            RecordJob(record_id=records[i][0], path=records[i][1], columns=label_columns(records[i][2], num_classes))
            for i in indices
        ]
        for split, indices in (("train", train), ("validation", valid), ("test", test))
    }


def merl_record_jobs(
    label_set: str, paths: dict[str, str], split_files, report: DownstreamReport
) -> dict[str, list[RecordJob]]:
    """MERL's published rows of `label_set` (shipped lists, or its original CSVs in `split_files`) as labelled jobs.

    `paths`: record id -> signal path of the records found on disk; a published row without a file is skipped and
    counted. The labels are MERL's (read by column name), the row's split is MERL's."""
    from cmelt.data.labels import label_codes
    from cmelt.data.splits import MERL_SPLITS, read_merl_split_list

    codes = label_codes(label_set)
    jobs: dict[str, list[RecordJob]] = {split: [] for split in MERL_SPLITS}
    for row in read_merl_split_list(label_set, split_files).itertuples(index=False):
        path = paths.get(row.record_id)
        if path is None:
            report.skipped.skip(row.record_id, "signal or header file missing")
            continue
        indices = [codes.index(code) for code in row.label_codes]
        jobs[row.split].append(RecordJob(record_id=row.record_id, path=path, columns=label_columns(indices, len(codes))))
    return jobs


def check_split_source(split: str, default: str) -> None:
    if split not in (default, "merl"):
        raise ValueError(f"split must be {default!r} or 'merl' (MERL's published rows), got {split!r}")


def add_merl_split_cli_arguments(parser, default: str) -> None:
    parser.add_argument("--split", choices=(default, "merl"), default=default, help="the loader's own split or MERL's published rows")
    parser.add_argument("--split_files", default=None, help="MERL's original finetune/data_split folder (with --split merl)")


def add_common_cli_arguments(parser) -> None:
    parser.add_argument("--num_proc", type=int, default=1, help="worker processes reading records")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random splits")
    parser.add_argument("--output_dir", default=None, help="save the DatasetDict and the load report (JSON) here")
    parser.add_argument("--cache_dir", default=None, help="datasets cache directory (default: the HF cache)")


def finish_cli(title: str, dataset_dict: DatasetDict, output_dir: str | None) -> None:
    """Prints the split sizes and class counts; saves the DatasetDict under `output_dir` when given (the loader
    has already printed and saved its report)."""
    print_dataset_summary(title, dataset_dict)
    if output_dir is not None:
        target = Path(output_dir) / _slug(title)
        dataset_dict.save_to_disk(str(target))
        print(f"dataset saved to {target}")
