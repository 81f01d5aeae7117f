"""Single-label accuracy (top-1 and optional top-k) as a local `evaluate` metric.

Used for PhysioNet 2021 patient identification.  Predictions are either class indices (top-1 only) or score
vectors over the classes (top-1 = arg-max; top-k = the reference is among the k highest scores; ties are broken
by the lower class index, as `numpy.argsort(kind="stable")` on negated scores does).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: (n_samples,) predicted class indices, or (n_samples, n_classes) scores.
    references: (n_samples,) true class indices.
    top_k: optional int or list of ints; with score predictions adds `top_{k}_accuracy` for each k.
Returns:
    accuracy: top-1 accuracy.
    top_{k}_accuracy: fraction of samples whose reference is among the k best-scored classes.
Example:
    >>> metric = evaluate.load("train_scripts/metrics/accuracy")
    >>> metric.compute(predictions=[0, 2, 1], references=[0, 1, 1])["accuracy"]
    0.6666666666666666
"""


def top_k_accuracy(references, predictions, top_k=None) -> dict:
    """Top-1 (and top-k) accuracy; see the module docstring."""
    targets = np.asarray(references)
    outputs = np.asarray(predictions)
    if targets.ndim != 1 or targets.size == 0:
        raise ValueError(f"references: expected a non-empty 1-D array of class indices, got shape {targets.shape}")
    if not np.all(np.equal(np.mod(targets, 1), 0)):
        raise ValueError("references: expected integer class indices")
    targets = targets.astype(np.int64)
    requested = [] if top_k is None else ([top_k] if np.isscalar(top_k) else list(top_k))
    if any(int(k) < 1 for k in requested):
        raise ValueError(f"top_k: expected positive integers, got {requested}")
    if outputs.ndim == 1:
        if outputs.shape != targets.shape:
            raise ValueError(f"predictions {outputs.shape} and references {targets.shape} differ in length")
        if any(int(k) > 1 for k in requested):
            raise ValueError("top_k > 1 needs score predictions of shape (n_samples, n_classes)")
        return {"accuracy": float(np.mean(outputs.astype(np.int64) == targets))}
    if outputs.ndim != 2 or outputs.shape[0] != targets.shape[0]:
        raise ValueError(f"predictions: expected (n_samples,) or ({targets.shape[0]}, n_classes), got {outputs.shape}")
    if targets.min() < 0 or targets.max() >= outputs.shape[1]:
        raise ValueError(f"references: class indices must lie in [0, {outputs.shape[1]})")
    if not np.isfinite(outputs).all():
        raise ValueError("predictions: expected finite scores (found NaN or inf)")
    order = np.argsort(-outputs, axis=1, kind="stable")
    rank_of_target = np.argmax(order == targets[:, None], axis=1)
    result = {"accuracy": float(np.mean(rank_of_target == 0))}
    for k in requested:
        result[f"top_{int(k)}_accuracy"] = float(np.mean(rank_of_target < int(k)))
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CMELTAccuracy(evaluate.Metric):
    """Top-1 / top-k accuracy (see module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, top_k=None):
        return top_k_accuracy(references, predictions, top_k)
