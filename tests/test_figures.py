"""train_scripts.figures: PNGs are written, bad shapes are rejected, multi-label colouring picks the rarest label."""

from pathlib import Path

import numpy as np
import pytest

from cmelt.train_scripts.figures import most_specific_label, plot_ecg_12lead, plot_embedding_tsne, plot_roc_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000


def synthetic_ecg(n_samples: int = 5000) -> np.ndarray:
    time = np.arange(n_samples) / 500.0
    beats = np.exp(-(((time % 0.8) - 0.3) ** 2) / (2 * 0.01**2))  # one narrow "QRS" per 0.8 s
    return np.stack([beats * (0.5 + 0.1 * lead) - 0.2 for lead in range(12)])


def test_plot_ecg_12lead_writes_png(tmp_path: Path):
    path = plot_ecg_12lead(synthetic_ecg(), tmp_path / "ecg" / "record.png", title="Record 1",
                           predictions=[("AFIB", 0.91), ("SR", 0.12)])
    assert path == tmp_path / "ecg" / "record.png"
    assert_png(path)


@pytest.mark.parametrize("shape", [(5000, 12), (11, 5000), (12,), (1, 12, 5000), (12, 2)])
def test_plot_ecg_12lead_rejects_bad_shapes(tmp_path: Path, shape):
    with pytest.raises(ValueError, match="12"):
        plot_ecg_12lead(np.zeros(shape), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_ecg_12lead_rejects_nan_and_bad_predictions(tmp_path: Path):
    values = synthetic_ecg()
    values[3, 10] = np.nan
    with pytest.raises(ValueError, match="finite"):
        plot_ecg_12lead(values, tmp_path / "nan.png")
    with pytest.raises(ValueError, match="pairs"):
        plot_ecg_12lead(synthetic_ecg(), tmp_path / "p.png", predictions=[("AFIB", 0.9, "extra")])


def test_plot_roc_curves_writes_png_including_unscorable_label(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(80, 3))
    labels[:, 2] = 0  # a label without positives has no ROC curve but must not break the figure
    scores = labels + rng.normal(0, 0.8, size=labels.shape)
    assert_png(plot_roc_curves(labels, scores, ["NORM", "MI", "HYP"], tmp_path / "roc.png"))
    assert_png(plot_roc_curves(labels[:, 0], scores[:, 0], ["NORM"], tmp_path / "roc_binary.png"))


def test_plot_roc_curves_rejects_bad_shapes(tmp_path: Path):
    with pytest.raises(ValueError, match="same shape"):
        plot_roc_curves(np.zeros((10, 2)), np.zeros((10, 3)), ["a", "b"], tmp_path / "roc.png")
    with pytest.raises(ValueError, match="label_names"):
        plot_roc_curves(np.zeros((10, 2)), np.zeros((10, 2)), ["a"], tmp_path / "roc.png")
    with pytest.raises(ValueError, match="n_samples"):
        plot_roc_curves(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), ["a", "b"], tmp_path / "roc.png")


def test_most_specific_label_picks_rarest_positive():
    multi_hot = np.array([
        [1, 1, 0],  # label 0 appears 3 times, label 1 twice -> 1
        [1, 0, 0],  # only label 0
        [1, 1, 1],  # label 2 appears once -> 2
        [0, 0, 0],  # none -> -1
    ])
    assert most_specific_label(multi_hot).tolist() == [1, 0, 2, -1]
    with pytest.raises(ValueError):
        most_specific_label(np.zeros(4))


def test_plot_embedding_tsne_single_and_multi_label(tmp_path: Path):
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, size=45)
    embeddings = rng.normal(size=(45, 8)) + classes[:, None] * 4.0
    assert_png(plot_embedding_tsne(embeddings, classes, ["a", "b", "c"], tmp_path / "single.png", seed=0))
    multi_hot = np.eye(3, dtype=int)[classes]
    multi_hot[:5] = 0
    assert_png(plot_embedding_tsne(embeddings, multi_hot, ["a", "b", "c"], tmp_path / "multi.png", seed=0))


def test_plot_embedding_tsne_rejects_bad_shapes(tmp_path: Path):
    with pytest.raises(ValueError, match="embeddings"):
        plot_embedding_tsne(np.zeros(10), np.zeros(10, dtype=int), ["a"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="labels"):
        plot_embedding_tsne(np.zeros((10, 4)), np.zeros(9, dtype=int), ["a"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="label_names"):
        plot_embedding_tsne(np.zeros((10, 4)), np.zeros((10, 2), dtype=int), ["a"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="class indices"):
        plot_embedding_tsne(np.zeros((10, 4)), np.full(10, 3), ["a"], tmp_path / "t.png")
