"""Evaluation metrics loading and the one results schema shared by every evaluation script.

Metrics
-------
`load_metric(name)` loads one of the local `evaluate` modules under `train_scripts/metrics/<name>/<name>.py`
(`macro_auroc`, `cinc2021_challenge_score`, `accuracy`) by path.  Loading a local path never contacts the Hub;
the loader also sets `HF_HUB_OFFLINE=1` / `HF_EVALUATE_OFFLINE=1` (unless already set) so nothing downstream
tries to.

Results schema
--------------
A results file is a JSON object::

    {
      "schema_version": 1,
      "results": [
        {
          "model": "cmelt-small-demo",          # model name or checkpoint path
          "dataset": "ptbxl_super",             # label set / dataset name
          "task": "classification",             # e.g. "classification", "patient_identification"
          "protocol": "zero_shot",              # one of PROTOCOLS
          "split": "test",
          "label_fraction": 0.01,               # optional (linear probe / fine-tune subsets), in (0, 1]
          "leads": ["I", "II"],                 # optional lead subset, canonical names in canonical order
          "metric": {"name": "macro_auroc", "value": 0.762},
          "per_class": {"NORM": 0.88, ...},     # {} when not given
          "extra": {...},                       # optional free-form, JSON-serialisable
          "created": "2025-01-01T12:00:00+00:00",
          "command": ["python", "-m", "train_scripts.zero_shot", ...]
        }
      ]
    }

`write_results` merges: an entry with the same key (model, dataset, task, protocol, split, label_fraction,
leads, metric name) is replaced, any other entry is kept, and the file is rewritten atomically.  Non-finite
numbers (NaN, inf) are stored as JSON `null`.  `read_results(paths)` returns the entries of one or more files
(directories are searched recursively for `*.json`), each checked against the schema.
"""

import json
import math
import numbers
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
RESULTS_SCHEMA_VERSION = 1
PROTOCOLS = ("zero_shot", "linear_probe", "finetune", "domain_transfer")
CANONICAL_LEAD_NAMES = CANONICAL_LEADS
REQUIRED_ENTRY_KEYS = ("model", "dataset", "task", "protocol", "split", "metric", "per_class", "created", "command")


def available_metrics() -> list[str]:
    """Names of the local metric modules (folders holding `<name>/<name>.py`)."""
    return sorted(path.parent.name for path in METRICS_DIR.glob("*/*.py") if path.stem == path.parent.name)


def load_metric(name: str, **init_kwargs):
    """Load a local `evaluate` metric by name (e.g. "macro_auroc") from `train_scripts/metrics`, offline."""
    if name not in available_metrics():
        raise ValueError(f"unknown metric {name!r}; expected one of {available_metrics()}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    import evaluate

    if name == "cinc2021_challenge_score":
        # evaluate copies only the script into its modules cache; point it at the weights table explicitly.
        init_kwargs.setdefault("weights_path", str(METRICS_DIR / name / "weights.csv"))
    return evaluate.load(str(METRICS_DIR / name), **init_kwargs)


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


def _entry_key(entry: Mapping) -> tuple:
    leads = entry.get("leads")
    return (
        entry["model"], entry["dataset"], entry["task"], entry["protocol"], entry["split"],
        entry.get("label_fraction"), tuple(leads) if leads is not None else None, entry["metric"]["name"],
    )


def validate_entry(entry: Mapping, source: str = "entry") -> None:
    """Raise ValueError if `entry` does not follow the results schema (see module docstring)."""
    missing = [key for key in REQUIRED_ENTRY_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}")
    for key in ("model", "dataset", "task", "split"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise ValueError(f"{source}: {key!r} must be a non-empty string, got {entry[key]!r}")
    if entry["protocol"] not in PROTOCOLS:
        raise ValueError(f"{source}: protocol must be one of {PROTOCOLS}, got {entry['protocol']!r}")
    metric = entry["metric"]
    if not isinstance(metric, Mapping) or set(metric) != {"name", "value"} or not isinstance(metric["name"], str):
        raise ValueError(f"{source}: metric must be {{'name': str, 'value': number}}, got {metric!r}")
    if metric["value"] is not None and not isinstance(metric["value"], (int, float)):
        raise ValueError(f"{source}: metric value must be a number or null, got {metric['value']!r}")
    if not isinstance(entry["per_class"], Mapping):
        raise ValueError(f"{source}: per_class must be a mapping, got {type(entry['per_class']).__name__}")
    fraction = entry.get("label_fraction")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"{source}: label_fraction must be in (0, 1], got {fraction!r}")
    leads = entry.get("leads")
    if leads is not None:
        if not leads or any(lead not in CANONICAL_LEAD_NAMES for lead in leads):
            raise ValueError(f"{source}: leads must be a non-empty subset of {CANONICAL_LEAD_NAMES}, got {leads!r}")
        if list(leads) != [lead for lead in CANONICAL_LEAD_NAMES if lead in leads]:
            raise ValueError(f"{source}: leads must be unique and in canonical order, got {leads!r}")


def _read_file_entries(path: Path) -> list[dict]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ValueError(f"{path}: expected an object with a 'results' list (schema version {RESULTS_SCHEMA_VERSION})")
    if document.get("schema_version") != RESULTS_SCHEMA_VERSION:
        found = document.get("schema_version")
        raise ValueError(f"{path}: schema_version {found!r}, expected {RESULTS_SCHEMA_VERSION}")
    for index, entry in enumerate(document["results"]):
        validate_entry(entry, f"{path} results[{index}]")
    return document["results"]


def write_results(
    path,
    *,
    model: str,
    dataset: str,
    task: str,
    protocol: str,
    metric_name: str,
    value: float,
    per_class: Mapping[str, float] | None = None,
    split: str = "test",
    label_fraction: float | None = None,
    leads: Iterable[str] | None = None,
    extra: Mapping | None = None,
) -> dict:
    """Add (or replace, same key) one result entry in the JSON file at `path`; return the entry written."""
    entry = {
        "model": model,
        "dataset": dataset,
        "task": task,
        "protocol": protocol,
        "split": split,
        "metric": {"name": metric_name, "value": _finite_or_none(float(value))},
        "per_class": _finite_or_none(dict(per_class or {})),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
    }
    if label_fraction is not None:
        entry["label_fraction"] = float(label_fraction)
    if leads is not None:
        entry["leads"] = list(leads)
    if extra is not None:
        entry["extra"] = _finite_or_none(dict(extra))
    validate_entry(entry)
    try:
        json.dumps(entry, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"result entry is not JSON-serialisable: {error}") from error

    path = Path(path)
    entries = _read_file_entries(path) if path.exists() else []
    key = _entry_key(entry)
    entries = [existing for existing in entries if _entry_key(existing) != key] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(
        json.dumps({"schema_version": RESULTS_SCHEMA_VERSION, "results": entries}, indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    os.replace(temporary, path)
    return entry


def read_results(paths) -> list[dict]:
    """All result entries of the given file(s) or directory(ies) (directories: every `*.json` below them)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    entries = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(path.rglob("*.json"))
        elif path.is_file():
            files = [path]
        else:
            raise ValueError(f"{path}: no such results file or directory")
        for file in files:
            entries.extend(_read_file_entries(file))
    return entries
