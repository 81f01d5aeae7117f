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
from cmelt.train_scripts.scoring import ecg_embeddings, zero_shot_scores
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor

# The demo's own label descriptions; "normal" is sinus rhythm at a normal rate.
RATE_PROMPTS: dict[str, list[str]] = {
    "bradycardia": DEMO_LABEL_PROMPTS["SBRAD"],
    "normal": ["Sinus rhythm", *DEMO_LABEL_PROMPTS["NORM"]],
    "tachycardia": DEMO_LABEL_PROMPTS["STACH"],
}


SCORING = "softmax over the three rate classes (pipeline multi_label=False)"


def _macro_auc(labels: np.ndarray, scores: np.ndarray) -> dict:
    result = load_metric("macro_auroc").compute(references=labels, predictions=scores, label_names=list(RATE_CLASSES))
    return {"macro_auroc": result["macro_auroc"], "per_class": result["per_class"], "n": int(len(labels))}


def out_of_generator_check(model, tokenizer, real_data_dir: str | Path | None, per_class: int = 20,
                           seed: int = 0) -> dict:
    """Zero-shot rate-class AUCs on out-of-generator ECGs. `real_data_dir` (holding wfdb/100 and wfdb/s0010_re)
    adds the real-record cases; None leaves only the independent simulator (and says so in "note").

    The three classes are mutually exclusive, so an ECG's scores are a softmax over them (the pipeline's
    `multi_label=False`, CLIP's zero-shot classification); "pooled_independent_sigmoid" gives the pooled AUC of the
    multi-label sigmoid scores (`multi_label=True`) beside it."""
    cases = build_rate_cases(real_data_dir, per_class=per_class, seed=seed)
    dataset = canonical_dataset(cases, CMELTFeatureExtractor())
    embeddings = ecg_embeddings(model, dataset, progress=False)
    scores = zero_shot_scores(model, tokenizer, dataset, RATE_PROMPTS, embeddings=embeddings, multi_label=False)
    sigmoid_scores = zero_shot_scores(model, tokenizer, dataset, RATE_PROMPTS, embeddings=embeddings)
    sources = np.asarray(cases.sources)
    by_source = {}
    for source in dict.fromkeys(cases.sources):
        keep = sources == source
        by_source[source] = _macro_auc(cases.labels[keep], scores[keep])
    note = None if real_data_dir is not None else "real records not found: ECGSYN cases only"
    summary = {"scoring": SCORING, "pooled": _macro_auc(cases.labels, scores), "by_source": by_source,
               "pooled_independent_sigmoid": _macro_auc(cases.labels, sigmoid_scores), "note": note}
    return {"summary": summary, "scores": scores, "labels": cases.labels, "sources": cases.sources}


def format_out_of_generator(check: dict, held_out_auc: float | None = None) -> str:
    """Printable table: pooled and per-source macro AUC, per-class AUC, cases, next to the held-out AUC."""
    summary = check["summary"]
    lines = ["\nzero-shot rate classes (bradycardia / normal / tachycardia) on ECGs the generator did not make,",
             f"scored as one of three ({summary['scoring']}):"]
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
    sigmoid = summary["pooled_independent_sigmoid"]
    lines.append(f"  pooled, independent sigmoid scores (multi_label=True): {sigmoid['macro_auroc']:.3f}")
    if held_out_auc is not None:
        lines.append(f"  in-distribution held-out zero-shot macro AUC (14 demo labels): {held_out_auc:.3f}")
    return "\n".join(lines)
