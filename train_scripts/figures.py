"""Figures for evaluation reports: ROC curves, t-SNE of embeddings, and a calibrated 12-lead ECG print; and
`save_evaluation_figures`, the set every evaluation script writes beside its results.json.

All functions draw on a `matplotlib.figure.Figure` (the pyplot-free API, so importing this module never changes
the user's matplotlib backend), write a PNG to `path` (parent folders are created) and return the path.  Bad
input shapes raise ValueError.
"""

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from transformers.utils import logging

from cmelt.data.ecg_store import decode_ecg
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

logger = logging.get_logger(__name__)

ECG_SAMPLING_RATE = 500
PAPER_SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0
# Clinical 3 x 4 print: each column shows a quarter of the record for three leads.
PRINT_COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
RHYTHM_STRIP_LEAD = "II"
ROW_SPACING_MV = 3.0
NO_LABEL_NAME = "(no label)"


def _prepare_path(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=100)
    return path


def _two_dimensional(name: str, array: np.ndarray) -> np.ndarray:
    if array.ndim == 1:
        return array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected (n_samples,) or (n_samples, n_classes), got shape {array.shape}")
    return array


def plot_roc_curves(y_true, y_score, label_names, path) -> Path:
    """Overlaid ROC curves, one per label, with each label's AUC in the legend.

    y_true: (n_samples, n_labels) binary (or (n_samples,) for one label); y_score: same shape.  Labels whose
    references hold a single value have no ROC curve; they are listed in the legend as "not scorable".
    """
    from sklearn.metrics import auc, roc_curve

    labels = _two_dimensional("y_true", np.asarray(y_true, dtype=np.float64))
    scores = _two_dimensional("y_score", np.asarray(y_score, dtype=np.float64))
    if labels.shape != scores.shape:
        raise ValueError(f"y_true {labels.shape} and y_score {scores.shape} must have the same shape")
    label_names = list(label_names)
    if len(label_names) != labels.shape[1]:
        raise ValueError(f"label_names: expected {labels.shape[1]} names, got {len(label_names)}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("y_true: expected binary 0/1 labels")
    if not np.isfinite(scores).all():
        raise ValueError("y_score: expected finite scores")

    path = _prepare_path(path)
    figure = Figure(figsize=(7, 6))
    axes = figure.subplots()
    colours = matplotlib.colormaps.get_cmap("tab20" if labels.shape[1] > 10 else "tab10")
    for column, name in enumerate(label_names):
        if labels[:, column].min() == labels[:, column].max():
            axes.plot([], [], linestyle="none", label=f"{name} (not scorable: one class)")
            continue
        false_positive_rate, true_positive_rate, _ = roc_curve(labels[:, column], scores[:, column])
        area = auc(false_positive_rate, true_positive_rate)
        axes.plot(false_positive_rate, true_positive_rate, color=colours(column % colours.N), linewidth=1.2,
                  label=f"{name} (AUC {area:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate",
             title="ROC curves")
    axes.legend(loc="lower right", fontsize="small", ncol=2 if len(label_names) > 12 else 1)
    figure.tight_layout()
    return _save(figure, path)


def most_specific_label(multi_hot) -> np.ndarray:
    """For each sample, the index of its rarest positive label (the most specific one), or -1 if none.

    Rarity is counted over the given samples; ties go to the lower label index.
    """
    matrix = np.asarray(multi_hot)
    if matrix.ndim != 2:
        raise ValueError(f"expected a (n_samples, n_labels) multi-hot matrix, got shape {matrix.shape}")
    positives = matrix.astype(bool)
    prevalence = positives.sum(axis=0).astype(np.float64)
    cost = np.where(positives, prevalence[None, :], np.inf)
    choice = np.argmin(cost, axis=1)
    return np.where(positives.any(axis=1), choice, -1)


def plot_embedding_tsne(embeddings, labels, label_names, path, seed: int = 0) -> Path:
    """2-D t-SNE of `embeddings` (n_samples, dim), points coloured by label.

    labels: (n_samples,) class indices, or (n_samples, n_labels) multi-hot, in which case each point takes the
    colour of its most specific (rarest) positive label and samples without any positive are grey.
    """
    from sklearn.manifold import TSNE

    points = np.asarray(embeddings, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 4:
        raise ValueError(f"embeddings: expected (n_samples >= 4, dim), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("embeddings: expected finite values")
    label_array = np.asarray(labels)
    label_names = list(label_names)
    if label_array.shape[0] != points.shape[0] or label_array.ndim not in (1, 2):
        raise ValueError(
            f"labels: expected ({points.shape[0]},) or ({points.shape[0]}, n_labels), got {label_array.shape}"
        )
    if label_array.ndim == 2:
        if label_array.shape[1] != len(label_names):
            raise ValueError(f"label_names: expected {label_array.shape[1]} names, got {len(label_names)}")
        colour_index = most_specific_label(label_array)
    else:
        colour_index = label_array.astype(np.int64)
        if colour_index.min() < 0 or colour_index.max() >= len(label_names):
            raise ValueError(f"labels: class indices must lie in [0, {len(label_names)})")

    perplexity = float(min(30.0, (points.shape[0] - 1) / 3.0))
    projected = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)

    path = _prepare_path(path)
    figure = Figure(figsize=(7, 6))
    axes = figure.subplots()
    colours = matplotlib.colormaps.get_cmap("tab20" if len(label_names) > 10 else "tab10")
    for index, name in [(-1, NO_LABEL_NAME)] + list(enumerate(label_names)):
        selected = colour_index == index
        if not selected.any():
            continue
        colour = "lightgrey" if index < 0 else colours(index % colours.N)
        axes.scatter(projected[selected, 0], projected[selected, 1], s=8, color=colour, label=name)
    axes.set(xticks=[], yticks=[], title="t-SNE of embeddings")
    axes.legend(loc="best", fontsize="small", markerscale=2, ncol=2 if len(label_names) > 12 else 1)
    figure.tight_layout()
    return _save(figure, path)


def plot_ecg_12lead(values, path, title: str | None = None, predictions=None,
                    sampling_rate: int = ECG_SAMPLING_RATE) -> Path:
    """Clinical 3 x 4 print of a 12-lead ECG plus a lead II rhythm strip, on calibrated paper.

    values: (12, n_samples) in mV, leads in canonical order I II III aVR aVL aVF V1-V6, at `sampling_rate` Hz
    (500 Hz: (12, 5000) for 10 s).  Paper: 25 mm/s and 10 mm/mV, major grid 0.2 s / 0.5 mV with a bold line
    every 1 mV, minor grid 0.04 s / 0.1 mV.  predictions: optional [(label, score), ...] printed in the
    top-right corner, best score first.
    """
    signal = np.asarray(values, dtype=np.float64)
    if signal.ndim != 2 or signal.shape[0] != len(CANONICAL_LEADS) or signal.shape[1] < 4:
        raise ValueError(f"values: expected (12, n_samples >= 4) in mV, canonical lead order, got shape {signal.shape}")
    if not np.isfinite(signal).all():
        raise ValueError("values: expected finite values (NaN or inf found)")
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate: expected a positive rate in Hz, got {sampling_rate}")
    prediction_lines = []
    for item in predictions or []:
        if len(item) != 2:
            raise ValueError(f"predictions: expected (label, score) pairs, got {item!r}")
        prediction_lines.append((str(item[0]), float(item[1])))

    n_samples = signal.shape[1]
    duration = n_samples / sampling_rate
    time = np.arange(n_samples) / sampling_rate
    segment = n_samples // len(PRINT_COLUMNS)
    row_offsets = [-ROW_SPACING_MV * row for row in range(len(PRINT_COLUMNS[0]) + 1)]
    bottom, top = row_offsets[-1] - ROW_SPACING_MV / 2, ROW_SPACING_MV / 2

    width_inch = duration * PAPER_SPEED_MM_PER_S / 25.4
    height_inch = (top - bottom) * GAIN_MM_PER_MV / 25.4
    path = _prepare_path(path)
    figure = Figure(figsize=(width_inch + 0.6, height_inch + 0.8))
    axes = figure.add_axes((0.3 / (width_inch + 0.6), 0.2 / (height_inch + 0.8),
                            width_inch / (width_inch + 0.6), height_inch / (height_inch + 0.8)))
    for step, colour, linewidth in ((0.04, "#fbd5d5", 0.3), (0.2, "#f4a6a6", 0.6)):
        for x in np.arange(0.0, duration + 1e-9, step):
            axes.axvline(x, color=colour, linewidth=linewidth, zorder=0)
    for step, colour, linewidth in ((0.1, "#fbd5d5", 0.3), (0.5, "#f4a6a6", 0.6), (1.0, "#e06666", 0.9)):
        for y in np.arange(np.ceil(bottom / step) * step, top + 1e-9, step):
            axes.axhline(y, color=colour, linewidth=linewidth, zorder=0)

    lead_index = {name: index for index, name in enumerate(CANONICAL_LEADS)}
    for column, leads in enumerate(PRINT_COLUMNS):
        start, stop = column * segment, (column + 1) * segment if column < len(PRINT_COLUMNS) - 1 else n_samples
        for row, lead in enumerate(leads):
            offset = row_offsets[row]
            axes.plot(time[start:stop], signal[lead_index[lead], start:stop] + offset, color="black", linewidth=0.7)
            axes.text(time[start] + 0.08, offset + 0.9, lead, fontsize=9, fontweight="bold")
            if column:
                axes.plot([time[start], time[start]], [offset - 0.5, offset + 0.5], color="black", linewidth=0.8)
    strip_offset = row_offsets[-1]
    axes.plot(time, signal[lead_index[RHYTHM_STRIP_LEAD]] + strip_offset, color="black", linewidth=0.7)
    axes.text(0.08, strip_offset + 0.9, RHYTHM_STRIP_LEAD, fontsize=9, fontweight="bold")

    axes.set_xlim(0.0, duration)
    axes.set_ylim(bottom, top)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_aspect(GAIN_MM_PER_MV / PAPER_SPEED_MM_PER_S)
    if title:
        figure.suptitle(title, x=0.02, ha="left", fontsize=11)
    if prediction_lines:
        text = "\n".join(f"{label}: {score:.2f}" for label, score in sorted(prediction_lines, key=lambda p: -p[1]))
        axes.text(0.995, 0.99, text, transform=axes.transAxes, ha="right", va="top", fontsize=8,
                  bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "grey"})
    figure.text(0.99, 0.01, f"{PAPER_SPEED_MM_PER_S:g} mm/s, {GAIN_MM_PER_MV:g} mm/mV, {sampling_rate} Hz",
                ha="right", fontsize=7)
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------------------
# the figures of every evaluation script

TSNE_MAX_POINTS = 2000
TOP_PREDICTIONS_SHOWN = 3


def example_row(references: np.ndarray | None) -> int:
    """Index of the row shown in the 12-lead figure: the first with a positive label (else the first)."""
    if references is not None and len(references) and references.ndim == 2:
        positive = np.flatnonzero(references.sum(axis=1) > 0)
        if positive.size:
            return int(positive[0])
    return 0


def save_evaluation_figures(
    output_dir,
    prefix: str,
    dataset,
    codes: Sequence[str],
    scores: np.ndarray | None = None,
    references: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    seed: int = 0,
    lead_mask_override: np.ndarray | None = None,
) -> dict[str, str]:
    """ROC curves per label, t-SNE of `embeddings` coloured by label and a 12-lead print of one example ECG with its
    top predicted labels, as `<output_dir>/<prefix>_{roc,tsne,example_ecg}.png`. Returns {figure: file name}
    (relative to `output_dir`, where results.json lives, so a results folder can be moved as a whole).

    `references` / `scores` are (n, len(codes)); the t-SNE uses a seeded subset of at most 2000 rows. A figure
    that cannot be drawn (e.g. fewer than 4 rows for t-SNE) is left out with a printed reason, never an error.
    `lead_mask_override`: (12,) bool; leads that are False are drawn as zero (fine-tuning on a lead subset).
    """
    output_dir = Path(output_dir)
    written: dict[str, str] = {}
    codes = list(codes)
    if scores is not None and references is not None:
        scorable = [column for column in range(len(codes)) if references[:, column].min() != references[:, column].max()]
        if scorable:
            written["roc"] = str(plot_roc_curves(
                references[:, scorable], scores[:, scorable], [codes[c] for c in scorable], output_dir / f"{prefix}_roc.png"
            ))
        else:
            logger.warning(f"figures: no ROC curves for {prefix}: no label has both positives and negatives")
    if embeddings is not None:
        if len(embeddings) >= 4:
            rows = np.arange(len(embeddings))
            if len(rows) > TSNE_MAX_POINTS:
                rows = np.sort(np.random.default_rng(seed).choice(rows, TSNE_MAX_POINTS, replace=False))
            colours = references[rows] if references is not None else np.zeros(len(rows), dtype=int)
            names = codes if references is not None else ["all"]
            written["tsne"] = str(plot_embedding_tsne(
                np.asarray(embeddings)[rows], colours, names, output_dir / f"{prefix}_tsne.png", seed=seed
            ))
        else:
            logger.warning(f"figures: no t-SNE for {prefix}: {len(embeddings)} rows (at least 4 needed)")
    if len(dataset):
        index = example_row(references)
        row = dataset.with_format("numpy", columns=["ecg", "lead_mask"])[index]
        values = decode_ecg(row["ecg"])
        mask = np.asarray(row["lead_mask"], dtype=bool)
        if lead_mask_override is not None:
            mask = mask & np.asarray(lead_mask_override, dtype=bool)
        values = values * mask[:, None]
        predictions = None
        if scores is not None:
            best = np.argsort(-scores[index], kind="stable")[:TOP_PREDICTIONS_SHOWN]
            predictions = [(codes[column], float(scores[index, column])) for column in best]
        truth = [codes[c] for c in np.flatnonzero(references[index])] if references is not None else []
        record = dataset[index].get("record_id", index) if "record_id" in dataset.column_names else index
        title = f"record {record}" + (f" - labels: {', '.join(truth)}" if truth else "")
        written["example_ecg"] = str(plot_ecg_12lead(
            values, output_dir / f"{prefix}_example_ecg.png", title=title, predictions=predictions
        ))
    return {figure: Path(path).name for figure, path in written.items()}
