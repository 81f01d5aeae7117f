"""Evaluation metrics loading, bootstrap confidence intervals, the random-init baseline and the results schemas.

Every evaluation script (and the demo) writes the shared schema "cmelt-results/1" (`result_row`, `write_rows`,
`write_and_print_rows`, `read_rows`; described below the metric loader).

Metrics
-------
`load_metric(name)` loads one of the local `evaluate` modules under `train_scripts/metrics/<name>/<name>.py`
(`macro_auroc`, `cinc2021_challenge_score`, `accuracy`) by path, with evaluate's `local_files_only` download
setting: it never contacts the Hub, and it leaves the process environment alone.
"""

import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmelt.data.ecg_store import write_atomically

if TYPE_CHECKING:
    from transformers import TrainingArguments

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def available_metrics() -> list[str]:
    """Names of the local metric modules (folders holding `<name>/<name>.py`)."""
    return sorted(path.parent.name for path in METRICS_DIR.glob("*/*.py") if path.stem == path.parent.name)


def load_metric(name: str, **init_kwargs):
    """Load a local `evaluate` metric by name (e.g. "macro_auroc") from `train_scripts/metrics`, offline."""
    if name not in available_metrics():
        raise ValueError(f"unknown metric {name!r}; expected one of {available_metrics()}")
    import evaluate
    from evaluate.utils.file_utils import DownloadConfig

    if name == "cinc2021_challenge_score":
        # evaluate copies only the script into its modules cache; point it at the weights table explicitly.
        init_kwargs.setdefault("weights_path", str(METRICS_DIR / name / "weights.csv"))
    # local files only, through evaluate's own argument (no process-wide environment variable is set)
    return evaluate.load(str(METRICS_DIR / name), download_config=DownloadConfig(local_files_only=True), **init_kwargs)


def _finite_or_none(value):
    """Replace non-finite floats by None, recursively, so the file is strict JSON."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


# ================================================================================================================
# The shared results schema "cmelt-results/1" (every evaluation script; the model card and `cmelt-report` read it)
#
#   {"schema": "cmelt-results/1", "results": [ROW, ...]}
#   ROW = {"task": "ptbxl-super", "dataset": "PTB-XL", "split_source": "merl" | "ptbxl-folds" | "seeded" | "user",
#          "prompt_set": "cmelt" | "merl" | "<file name>" | null,
#          "protocol": "zero-shot" | "linear-probe" | "linear-probe-logreg" | "fine-tune" | "domain-transfer",
#          "label_fraction": 1.0, "leads": "12" | "P-6" | "I,II" ..., "metric": "macro_auroc" | "cinc2021_score" |
#          "accuracy", "value": float, "ci95": [lo, hi] | null,
#          "baseline": {"kind": "random-init", "value": float, "ci95": [lo, hi]} | null,
#          "delta_vs_baseline": {"value": float, "ci95": [lo, hi]} | null, "per_label": {label: auc} | null,
#          "n_test": int, "seed": int, "model": str, "commit": str | null}
#   A row may carry an optional free-form "details" object (history, figures, ...); readers ignore what they do
#   not know. Values are fractions (0.762, not 76.2); non-finite numbers are stored as null.
# ================================================================================================================

RESULTS_SCHEMA = "cmelt-results/1"
SPLIT_SOURCES = ("merl", "ptbxl-folds", "seeded", "user")
ROW_PROTOCOLS = ("zero-shot", "linear-probe", "linear-probe-logreg", "fine-tune", "domain-transfer")
ROW_METRICS = ("macro_auroc", "cinc2021_score", "accuracy")
ROW_KEYS = (
    "task", "dataset", "split_source", "prompt_set", "protocol", "label_fraction", "leads", "metric", "value", "ci95",
    "baseline", "delta_vs_baseline", "per_label", "n_test", "seed", "model", "commit",
)
# rows with the same identity replace each other when written to the same file
ROW_IDENTITY = ("task", "split_source", "prompt_set", "protocol", "label_fraction", "leads", "metric", "model", "seed")
BOOTSTRAP_RESAMPLES = 1000
BASELINE_KIND = "random-init"
TASK_NAMES = {  # label set -> (task, dataset) of result rows
    "ptbxl_super": ("ptbxl-super", "PTB-XL"), "ptbxl_sub": ("ptbxl-sub", "PTB-XL"),
    "ptbxl_form": ("ptbxl-form", "PTB-XL"), "ptbxl_rhythm": ("ptbxl-rhythm", "PTB-XL"),
    "cpsc2018": ("cpsc2018", "CPSC2018"), "csn": ("csn", "CSN"), "code_test": ("code-test", "CODE-test"),
    "physionet2021": ("physionet2021-dx", "PhysioNet 2021"),
}


def task_and_dataset(label_set: str | None, fallback: str) -> tuple[str, str]:
    """(task, dataset) names of result rows for a label set (a dataset of unknown label set: its own name)."""
    return TASK_NAMES.get(label_set, (fallback, fallback))


def current_commit() -> str | None:
    """The git commit of this checkout, or None outside a git checkout."""
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _interval(values) -> list | None:
    return None if values is None else [_finite_or_none(float(values[0])), _finite_or_none(float(values[1]))]


def result_row(
    *, task: str, dataset: str, split_source: str, prompt_set: str | None, protocol: str, metric: str, value: float,
    ci95=None, baseline: Mapping | None = None, delta_vs_baseline: Mapping | None = None,
    per_label: Mapping[str, float] | None = None, n_test: int, seed: int, model: str, label_fraction: float = 1.0,
    leads: str = "12", commit: str | None = None, details: Mapping | None = None,
) -> dict:
    """One row of the results schema (see above), checked."""
    row = {
        "task": task, "dataset": dataset, "split_source": split_source, "prompt_set": prompt_set, "protocol": protocol,
        "label_fraction": float(label_fraction), "leads": leads, "metric": metric,
        "value": _finite_or_none(float(value)), "ci95": _interval(ci95),
        "baseline": None if baseline is None else {
            "kind": baseline.get("kind", BASELINE_KIND), "value": _finite_or_none(float(baseline["value"])),
            "ci95": _interval(baseline.get("ci95")),
        },
        "delta_vs_baseline": None if delta_vs_baseline is None else {
            "value": _finite_or_none(float(delta_vs_baseline["value"])), "ci95": _interval(delta_vs_baseline.get("ci95")),
        },
        "per_label": None if per_label is None else _finite_or_none(dict(per_label)),
        "n_test": int(n_test), "seed": int(seed), "model": str(model), "commit": commit,
    }
    if details is not None:
        row["details"] = _finite_or_none(dict(details))
    validate_row(row)
    return row


def validate_row(row: Mapping, source: str = "row") -> None:
    """Raise ValueError if `row` does not follow the "cmelt-results/1" schema."""
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}")
    for key in ("task", "dataset", "model", "leads"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"{source}: {key!r} must be a non-empty string, got {row[key]!r}")
    checks = (("split_source", SPLIT_SOURCES), ("protocol", ROW_PROTOCOLS), ("metric", ROW_METRICS))
    for key, allowed in checks:
        if row[key] not in allowed:
            raise ValueError(f"{source}: {key} must be one of {allowed}, got {row[key]!r}")
    fraction = row["label_fraction"]
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"{source}: label_fraction must be in (0, 1], got {fraction!r}")
    for key in ("ci95",):
        if row[key] is not None and (not isinstance(row[key], list) or len(row[key]) != 2):
            raise ValueError(f"{source}: {key} must be [lo, hi] or null, got {row[key]!r}")
    if row["baseline"] is not None and not {"kind", "value", "ci95"} <= set(row["baseline"]):
        raise ValueError(f"{source}: baseline must hold kind, value and ci95, got {row['baseline']!r}")
    if row["delta_vs_baseline"] is not None and not {"value", "ci95"} <= set(row["delta_vs_baseline"]):
        raise ValueError(f"{source}: delta_vs_baseline must hold value and ci95, got {row['delta_vs_baseline']!r}")
    if not isinstance(row["n_test"], int) or not isinstance(row["seed"], int):
        raise ValueError(f"{source}: n_test and seed must be integers")


def write_rows(path, rows: Iterable[Mapping]) -> Path:
    """Add `rows` to the results file at `path` (a row with the same identity is replaced), atomically."""
    path = Path(path)
    existing = read_rows(path) if path.exists() else []
    rows = list(rows)
    for row in rows:
        validate_row(row)
    identities = {tuple(json.dumps(row[key]) for key in ROW_IDENTITY) for row in rows}
    kept = [row for row in existing if tuple(json.dumps(row[key]) for key in ROW_IDENTITY) not in identities]
    text = json.dumps({"schema": RESULTS_SCHEMA, "results": kept + rows}, indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return path


def read_rows(paths) -> list[dict]:
    """Rows of one or more "cmelt-results/1" files (directories: every `results*.json` below them), checked."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for path in map(Path, paths):
        files = sorted(path.rglob("results*.json")) if path.is_dir() else [path]
        if not path.exists():
            raise ValueError(f"{path}: no such results file or directory")
        for file in files:
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{file}: not valid JSON ({error})") from error
            if not isinstance(document, dict) or document.get("schema") != RESULTS_SCHEMA:
                raise ValueError(f"{file}: not a {RESULTS_SCHEMA!r} results file (expected {{'schema': {RESULTS_SCHEMA!r}, 'results': [...]}})")
            for index, row in enumerate(document.get("results", [])):
                validate_row(row, f"{file} results[{index}]")
                rows.append(row)
    return rows


def format_value(value, ci95=None, scale: float = 100.0) -> str:
    """'76.20 [74.10, 78.30]' (fractions shown x 100); 'n/a' for a missing value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value * scale:.2f}"
    if ci95 is not None and None not in ci95:
        text += f" [{ci95[0] * scale:.2f}, {ci95[1] * scale:.2f}]"
    return text


def describe_row(row: Mapping) -> str:
    """One line: task, protocol, value with CI, baseline with CI and the paired difference."""
    setting = f"{row['task']} {row['protocol']}"
    if row["protocol"].startswith("linear-probe"):
        setting += f" {row['label_fraction'] * 100:g}%"
    if row["leads"] != "12":
        setting += f" leads {row['leads']}"
    text = f"{setting} ({row['split_source']} split, n={row['n_test']}): {row['metric']} {format_value(row['value'], row['ci95'])}"
    if row["baseline"] is not None:
        baseline, delta = row["baseline"], row["delta_vs_baseline"] or {}
        text += (
            f" | {baseline['kind']} baseline {format_value(baseline['value'], baseline['ci95'])}"
            f" | difference {format_value(delta.get('value'), delta.get('ci95'))}"
        )
    return text


def training_arguments_from_flags(flags: Sequence[str], **defaults) -> "TrainingArguments":
    """`TrainingArguments` with a script's `defaults`, overridden by the `TrainingArguments` flags in `flags`
    (`HfArgumentParser`); an unknown or malformed flag fails here, before anything is loaded."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments)
    parser.set_defaults(**defaults)
    (training_args,) = parser.parse_args_into_dataclasses(args=list(flags))
    return training_args


def runs_on_cpu(device: str | None) -> bool:
    """`use_cpu` for `TrainingArguments`: `--device cpu`, or no accelerator on this machine (then `--bf16 true`
    means CPU autocast instead of transformers' "Your setup doesn't support bf16/gpu")."""
    import torch

    return device == "cpu" or (device is None and not torch.accelerator.is_available())


def evaluation_training_arguments(args, flags: Sequence[str]) -> "TrainingArguments":
    """The `TrainingArguments` of an evaluation script's ECG passes (zero-shot, linear probe, domain transfer):
    `--batch_size` ECGs per device, the script's seed, no reporting, the CPU with `--device cpu`; any
    `TrainingArguments` flag left in `flags` overrides them (`--bf16 true`, `--per_device_eval_batch_size 256`,
    `--dataloader_num_workers 8`, `--report_to tensorboard`, `--fsdp ...`, `--deepspeed ds.json`). Under
    `accelerate launch` / `torchrun` the passes are split over the processes (`Trainer.predict`)."""
    import torch

    if args.device not in (None, "cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda' (choose GPUs with CUDA_VISIBLE_DEVICES or accelerate "
                         f"launch), got {args.device!r}")
    return training_arguments_from_flags(
        flags,
        output_dir=str(Path(args.output_dir) / "trainer"),
        per_device_eval_batch_size=args.batch_size,
        seed=args.seed,
        report_to="none",
        disable_tqdm=args.no_progress,
        remove_unused_columns=False,  # the collator reads the stored `ecg` column
        dataloader_num_workers=2,  # decoding int16 rows is light; two workers keep a GPU fed
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=runs_on_cpu(args.device),
    )


def write_and_print_rows(output_dir, rows: list[dict]) -> Path:
    """The epilogue of every evaluation script: print each row (value, CI, baseline) and write results.json."""
    path = write_rows(Path(output_dir) / "results.json", rows)
    for row in rows:
        print(describe_row(row))
    print(f"results written to {path}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# bootstrap confidence intervals (1,000 seeded resamples of the test set, vectorised)


def bootstrap_indices(num_items: int, num_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(num_resamples, num_items) row indices drawn with replacement; the same seed gives the same resamples."""
    if num_items < 1:
        raise ValueError("bootstrap needs at least one test row")
    return np.random.default_rng(seed).integers(0, num_items, size=(num_resamples, num_items))


def resampled_macro_auroc(references: np.ndarray, scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(num_resamples,) macro AUROC of each resample (rank statistic, ties averaged).

    A class whose labels take one value only in a resample has no AUROC there: it is **skipped in that resample**
    (the macro average is over the classes that have both values), as the metric does on the full test set. A
    resample where no class has both values gives NaN, left out of the percentiles."""
    from scipy.stats import rankdata

    references = np.asarray(references, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    per_class = np.full((len(indices), references.shape[1]), np.nan)
    for column in range(references.shape[1]):
        labels = references[indices, column]
        positives = labels.sum(axis=1)
        negatives = labels.shape[1] - positives
        ranks = rankdata(scores[indices, column], axis=1)
        rank_sum = np.where(labels, ranks, 0.0).sum(axis=1)
        valid = (positives > 0) & (negatives > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
        per_class[:, column] = np.where(valid, auc, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples are reported as NaN on purpose
        return np.nanmean(per_class, axis=1)


def resampled_mean(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(num_resamples,) mean of per-row values (e.g. 0/1 correctness: accuracy) in each resample."""
    return np.asarray(values, dtype=np.float64)[indices].mean(axis=1)


def resampled_ratio(numerators: np.ndarray, denominators: np.ndarray, offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(num_resamples,) (sum n - sum o) / (sum d - sum o) per resample: a score that is a ratio of per-row sums,
    like the CinC 2021 challenge score (observed, correct, inactive); 0 where the denominator vanishes, as the
    challenge defines it."""
    observed, correct, inactive = (np.asarray(v, dtype=np.float64)[indices].sum(axis=1) for v in (numerators, denominators, offsets))
    denominator = correct - inactive
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, (observed - inactive) / denominator, 0.0)


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """[2.5, 97.5] percentiles of the finite resampled values (None when none is finite)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def bootstrap_summary(resampled: np.ndarray, baseline_resampled: np.ndarray | None = None) -> dict:
    """{"ci95", and with a baseline on the same resamples: "baseline_ci95", "delta_ci95" (paired)}."""
    summary = {"ci95": percentile_interval(resampled)}
    if baseline_resampled is not None:
        summary["baseline_ci95"] = percentile_interval(baseline_resampled)
        summary["delta_ci95"] = percentile_interval(np.asarray(resampled) - np.asarray(baseline_resampled))
    return summary


def baseline_fields(value: float, baseline_value: float | None, summary: dict) -> dict:
    """`ci95`, `baseline`, `delta_vs_baseline` keyword arguments of `result_row`."""
    fields = {"ci95": summary["ci95"], "baseline": None, "delta_vs_baseline": None}
    if baseline_value is not None:
        fields["baseline"] = {"kind": BASELINE_KIND, "value": baseline_value, "ci95": summary.get("baseline_ci95")}
        fields["delta_vs_baseline"] = {"value": value - baseline_value, "ci95": summary.get("delta_ci95")}
    return fields


def bootstrap_row_fields(statistic, num_rows: int, baseline_statistic=None, seed: int = 0,
                         num_resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """`value`, `ci95`, `baseline`, `delta_vs_baseline` of a metric given as `statistic(indices) -> values`
    ((B, n) row indices -> (B,) metric values); the baseline is scored on the same resamples (paired)."""
    if num_resamples < 1:
        raise ValueError(f"--bootstrap_resamples must be positive, got {num_resamples}")
    indices = bootstrap_indices(num_rows, num_resamples, seed)
    full = np.arange(num_rows)[None]
    value = float(statistic(full)[0])
    resampled = statistic(indices)
    baseline_value = baseline_resampled = None
    if baseline_statistic is not None:
        baseline_value = float(baseline_statistic(full)[0])
        baseline_resampled = baseline_statistic(indices)
    return {"value": value, **baseline_fields(value, baseline_value, bootstrap_summary(resampled, baseline_resampled))}


def macro_auroc_row_fields(references, scores, baseline_scores=None, seed: int = 0,
                           num_resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Value, CI, baseline and paired difference of a macro AUROC (same resamples for both models)."""
    baseline = None if baseline_scores is None else (lambda idx: resampled_macro_auroc(references, baseline_scores, idx))
    return bootstrap_row_fields(
        lambda idx: resampled_macro_auroc(references, scores, idx), len(references), baseline, seed, num_resamples
    )


def accuracy_row_fields(correct, baseline_correct=None, seed: int = 0, num_resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Value, CI, baseline and paired difference of an accuracy from per-row 0/1 correctness (same rows)."""
    baseline = None if baseline_correct is None else (lambda idx: resampled_mean(baseline_correct, idx))
    return bootstrap_row_fields(lambda idx: resampled_mean(correct, idx), len(correct), baseline, seed, num_resamples)


def cinc_row_components(references, predictions, label_names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-record (observed, correct, inactive) terms of the CinC 2021 challenge score: the score is
    (sum observed - sum inactive) / (sum correct - sum inactive), each sum over records, so it can be resampled.
    Uses the class mapping and weights of the local metric module."""
    import importlib.util

    path = METRICS_DIR / "cinc2021_challenge_score" / "cinc2021_challenge_score.py"
    spec = importlib.util.spec_from_file_location("cmelt_cinc2021_challenge_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes, weights = module.load_weights(METRICS_DIR / "cinc2021_challenge_score" / module.WEIGHTS_FILE_NAME)
    weights = np.nan_to_num(weights)
    columns = [module.column_to_class_index(name, classes) for name in label_names]
    labels = module.to_class_matrix(np.asarray(references) > 0.5, columns, len(classes))
    outputs = module.to_class_matrix(np.asarray(predictions) > 0.5, columns, len(classes))
    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, [i for i, group in enumerate(classes) if module.SINUS_RHYTHM_CODE in group.split("|")]] = True

    def per_record(outputs_matrix):
        normalisation = np.maximum((labels | outputs_matrix).sum(axis=1), 1).astype(np.float64)
        return np.einsum("rj,jk,rk->r", labels.astype(np.float64), weights, outputs_matrix.astype(np.float64)) / normalisation

    return per_record(outputs), per_record(labels), per_record(inactive_outputs)


def cinc_row_fields(references, predictions, label_names, baseline_predictions=None, seed: int = 0,
                    num_resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Value, CI, baseline and paired difference of the CinC 2021 challenge score (binary predictions)."""
    observed, correct, inactive = cinc_row_components(references, predictions, label_names)
    baseline = None
    if baseline_predictions is not None:
        other = cinc_row_components(references, baseline_predictions, label_names)[0]
        baseline = lambda idx: resampled_ratio(other, correct, inactive, idx)  # noqa: E731
    return bootstrap_row_fields(
        lambda idx: resampled_ratio(observed, correct, inactive, idx), len(observed), baseline, seed, num_resamples
    )


# ----------------------------------------------------------------------------------------------------------------
# random-init baseline: the same architecture, seeded random weights


def random_init_like(model_class, folder, seed: int, **config_overrides):
    """`model_class` with the configuration of the saved `folder` (plus overrides) and seeded random weights."""
    import torch

    config = model_class.config_class.from_pretrained(folder, **config_overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config)
