"""Macro AUROC over labels, with per-class values, as a local `evaluate` metric.

Multi-label: predictions and references are (n_samples, n_classes); binary: one score / one 0-1 label per sample
(treated as a single class).  Each class's AUROC is the Mann-Whitney statistic, i.e. the probability that a
random positive scores higher than a random negative, ties counting one half (identical to
`sklearn.metrics.roc_auc_score`).  A class whose references hold only one value (all 0 or all 1) has no AUROC:
it is left out of the mean and listed under `skipped_classes`, so one absent label cannot turn the macro mean
into NaN.  If every class is skipped, `macro_auroc` is NaN and `n_scored_classes` is 0.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import rankdata

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: scores, shape (n_samples, n_classes) or (n_samples,); higher = more likely positive.
    references: binary labels (0/1), same shape as predictions.
    label_names: optional list of n_classes names used as keys of `per_class` (default "0", "1", ...).
Returns:
    macro_auroc: mean AUROC over the scored classes (NaN if none can be scored).
    per_class: {label name: AUROC} for the scored classes.
    skipped_classes: names of classes whose references hold a single value.
    n_scored_classes: number of classes in the mean.
Example:
    >>> metric = evaluate.load("train_scripts/metrics/macro_auroc")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.1, 0.8]], references=[[1, 0], [0, 1]])["macro_auroc"]
    1.0
"""


def binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC of one class (labels hold both values)."""
    ranks = rankdata(scores)
    positives = labels.astype(bool)
    n_positive = int(positives.sum())
    n_negative = labels.size - n_positive
    return float((ranks[positives].sum() - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative))


def macro_auroc(references, predictions, label_names=None) -> dict:
    """Macro AUROC over classes with both label values; see the module docstring."""
    labels = np.asarray(references, dtype=np.float64)
    scores = np.asarray(predictions, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"references {labels.shape} and predictions {scores.shape} must have the same shape")
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"expected (n_samples, n_classes) or (n_samples,) with n_samples > 0, got {labels.shape}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("references: expected binary 0/1 labels")
    if not np.isfinite(scores).all():
        raise ValueError("predictions: expected finite scores (found NaN or inf)")
    names = [str(index) for index in range(labels.shape[1])] if label_names is None else list(label_names)
    if len(names) != labels.shape[1]:
        raise ValueError(f"label_names: expected {labels.shape[1]} names, got {len(names)}")
    per_class, skipped = {}, []
    for column, name in enumerate(names):
        column_labels = labels[:, column]
        if column_labels.min() == column_labels.max():
            skipped.append(name)
            continue
        per_class[name] = binary_auroc(column_labels, scores[:, column])
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"macro_auroc": value, "per_class": per_class, "skipped_classes": skipped,
            "n_scored_classes": len(per_class)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CMELTMacroAUROC(evaluate.Metric):
    """Macro AUROC (see module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
                ),
            ],
        )

    def _compute(self, predictions, references, label_names=None):
        return macro_auroc(references, predictions, label_names)
