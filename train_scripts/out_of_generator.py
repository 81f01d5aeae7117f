"""Zero-shot bradycardia / normal / tachycardia on ECGs the demo generator did not make (see
`data.out_of_generator`): macro AUC over the three rate classes, per source and pooled, next to the
in-distribution held-out AUC. The demo prints it at the end of its run; tests/test_demo.py checks it on a tiny model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmelt.data.out_of_generator import RATE_CLASSES, build_rate_cases, canonical_dataset
from cmelt.data.synthetic import DEMO_LABEL_PROMPTS
from cmelt.train_scripts.evaluation import load_metric
from cmelt.train_scripts.scoring import zero_shot_scores
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor

# The demo's own label descriptions; "normal" is sinus rhythm at a normal rate.
RATE_PROMPTS: dict[str, list[str]] = {
    "bradycardia": DEMO_LABEL_PROMPTS["SBRAD"],
    "normal": ["Sinus rhythm", *DEMO_LABEL_PROMPTS["NORM"]],
    "tachycardia": DEMO_LABEL_PROMPTS["STACH"],
}


def _macro_auc(labels: np.ndarray, scores: np.ndarray) -> dict:
    result = load_metric("macro_auroc").compute(references=labels, predictions=scores, label_names=list(RATE_CLASSES))
    return {"macro_auroc": result["macro_auroc"], "per_class": result["per_class"], "n": int(len(labels))}


def out_of_generator_check(model, tokenizer, real_data_dir: str | Path | None, per_class: int = 20,
                           seed: int = 0) -> dict:
    """Zero-shot rate-class AUCs on out-of-generator ECGs. `real_data_dir` (holding wfdb/100 and wfdb/s0010_re)
    adds the real-record cases; None leaves only the independent simulator (and says so in "note")."""
    cases = build_rate_cases(real_data_dir, per_class=per_class, seed=seed)
    dataset = canonical_dataset(cases, CMELTFeatureExtractor())
    scores = zero_shot_scores(model, tokenizer, dataset, RATE_PROMPTS, progress=False)
    sources = np.asarray(cases.sources)
    by_source = {}
    for source in dict.fromkeys(cases.sources):
        keep = sources == source
        by_source[source] = _macro_auc(cases.labels[keep], scores[keep])
    pooled = _macro_auc(cases.labels, scores)
    note = None if real_data_dir is not None else "real records not found: ECGSYN cases only"
    return {
        "summary": {"pooled": pooled, "by_source": by_source, "note": note},
        "scores": scores,
        "labels": cases.labels,
        "sources": cases.sources,
    }


def format_out_of_generator(check: dict, held_out_auc: float | None = None) -> str:
    """Printable table: pooled and per-source macro AUC, per-class AUC, cases, next to the held-out AUC."""
    summary = check["summary"]
    lines = ["\nzero-shot rate classes (bradycardia / normal / tachycardia) on ECGs the generator did not make:"]
    if summary["note"]:
        lines.append(f"  note: {summary['note']}")
    header = f"  {'source':<22}{'n':>5}{'macro AUC':>11}" + "".join(f"{name:>13}" for name in RATE_CLASSES)
    lines.append(header)
    rows = [("pooled", summary["pooled"]), *summary["by_source"].items()]
    for name, values in rows:
        shown = [values["per_class"].get(label) for label in RATE_CLASSES]
        cells = "".join(f"{value:>13.3f}" if value is not None else f"{'n/a':>13}" for value in shown)
        macro = values["macro_auroc"]
        macro_text = f"{macro:>11.3f}" if macro is not None and np.isfinite(macro) else f"{'n/a':>11}"
        lines.append(f"  {name:<22}{values['n']:>5}{macro_text}{cells}")
    if held_out_auc is not None:
        lines.append(f"  in-distribution held-out zero-shot macro AUC (14 demo labels): {held_out_auc:.3f}")
    return "\n".join(lines)
