"""Results files for the card: the shared schema `{"schema": "cmelt-results/1", "results": [ROW, ...]}` that every
evaluation script writes (one or more files, or folders searched for `*.json`).

A ROW (see the project's COMMON schema) has `task` ("ptbxl-super"), `dataset` ("PTB-XL"), `split_source`,
`prompt_set`, `protocol` ("zero-shot" | "linear-probe" | "linear-probe-logreg" | "fine-tune" | "domain-transfer"),
`label_fraction`, `leads` ("12" | "P-6" | "I,II"), `metric` ("macro_auroc" | "cinc2021_score" | "accuracy"),
`value`, `ci95`, `baseline`, `delta_vs_baseline`, `per_label`, `n_test`, `seed`, `model`, `commit`.

Files of the earlier layout (`{"schema_version": 1, "results": [...]}` with `metric: {name, value}`) are read too
and converted to rows, so a folder evaluated before the change still gets its card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

RESULTS_SCHEMA = "cmelt-results/1"
PROTOCOLS = ("zero-shot", "linear-probe", "linear-probe-logreg", "fine-tune", "domain-transfer")
REQUIRED_KEYS = ("task", "protocol", "metric", "value", "model")
# lead sets of `--leads` (data.leads); a row's `leads` is one of these names or a comma list
NAMED_LEAD_SETS = {
    "12": CANONICAL_LEADS, "P-6": ("I", "II", "III", "aVR", "aVL", "aVF"), "P-3": ("I", "II", "V2"),
    "P-2": ("I", "II"), "P-1": ("I",),
}
_LEGACY_PROTOCOLS = {"zero_shot": "zero-shot", "linear_probe": "linear-probe", "finetune": "fine-tune",
                     "domain_transfer": "domain-transfer"}
_LEGACY_METRICS = {"cinc2021_challenge_score": "cinc2021_score", "challenge_score": "cinc2021_score"}


def lead_set_name(leads: Iterable[str] | str | None) -> str:
    """"12", a named set ("P-3") or a comma list ("I,V5") for a list of lead names or a stored string."""
    if leads is None:
        return "12"
    if isinstance(leads, str):
        return leads
    leads = tuple(leads)
    return next((name for name, members in NAMED_LEAD_SETS.items() if members == leads), ",".join(leads))


def lead_names_of(leads: str) -> tuple[str, ...]:
    return NAMED_LEAD_SETS.get(leads) or tuple(name.strip() for name in leads.split(",") if name.strip())


def _finite(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def row_from_legacy_entry(entry: Mapping) -> dict:
    """A row of the shared schema from an entry of the earlier `schema_version: 1` layout."""
    extra = entry.get("extra") or {}
    return {
        "task": entry["dataset"],
        "dataset": entry["dataset"],
        "split_source": None,
        "prompt_set": None,
        "protocol": _LEGACY_PROTOCOLS.get(entry["protocol"], entry["protocol"]),
        "label_fraction": entry.get("label_fraction"),
        "leads": lead_set_name(entry.get("leads")),
        "metric": _LEGACY_METRICS.get(entry["metric"]["name"], entry["metric"]["name"]),
        "value": entry["metric"]["value"],
        "ci95": None,
        "baseline": None,
        "delta_vs_baseline": None,
        "per_label": dict(entry.get("per_class") or {}) or None,
        "n_test": extra.get("num_records"),
        "seed": extra.get("seed"),
        "model": entry["model"],
        "commit": None,
        "split": entry.get("split", "test"),
        "command": entry.get("command"),
    }


def check_row(row: Mapping, source: str) -> dict:
    """The row with defaults filled in; ValueError naming `source` when a required field is missing or wrong."""
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise ValueError(f"{source}: missing keys {missing} (schema {RESULTS_SCHEMA})")
    if row["protocol"] not in PROTOCOLS:
        raise ValueError(f"{source}: protocol must be one of {PROTOCOLS}, got {row['protocol']!r}")
    if row["value"] is not None and _finite(row["value"]) is None:
        raise ValueError(f"{source}: value must be a finite number or null, got {row['value']!r}")
    for key in ("task", "metric", "model"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"{source}: {key!r} must be a non-empty string, got {row[key]!r}")
    ci95 = row.get("ci95")
    if ci95 is not None and (len(ci95) != 2 or any(_finite(bound) is None for bound in ci95)):
        raise ValueError(f"{source}: ci95 must be [lo, hi] or null, got {ci95!r}")
    return {"dataset": row["task"], "split": "test", **row, "leads": lead_set_name(row.get("leads"))}


def read_results_file(path: Path, *, only_if_results: bool = False) -> list[dict]:
    """The checked rows of one file. `only_if_results`: a JSON file that is no results document (a load report,
    a config found while searching a folder) gives [] instead of an error; a results document is always checked."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        if only_if_results:
            return []
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    is_results = isinstance(document, dict) and isinstance(document.get("results"), list)
    if not is_results:
        if only_if_results:
            return []
        raise ValueError(f"{path}: expected {{'schema': {RESULTS_SCHEMA!r}, 'results': [...]}}")
    if document.get("schema") == RESULTS_SCHEMA:
        rows = document["results"]
    elif document.get("schema_version") == 1:
        rows = [row_from_legacy_entry(entry) for entry in document["results"]]
    else:
        raise ValueError(f"{path}: schema {document.get('schema')!r}, expected {RESULTS_SCHEMA!r}")
    return [check_row(row, f"{path} results[{index}]") for index, row in enumerate(rows)]


def read_results(paths) -> list[dict]:
    """The rows of results files / folders (folders: every results document among the `*.json` below them)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = []
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*.json")):
                rows += read_results_file(file, only_if_results=True)
        elif path.is_file():
            rows += read_results_file(path)
        else:
            raise ValueError(f"{path}: no such results file or folder")
    return rows
