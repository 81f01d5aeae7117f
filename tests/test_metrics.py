"""Local evaluate metrics (macro AUROC, CinC 2021 challenge score, accuracy) and the results schema."""

import math
import socket

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cmelt.train_scripts.evaluation import METRICS_DIR, available_metrics, load_metric

# The 26 scored groups in weights.csv order and their abbreviations (DATASET_LAYOUTS.md §6.4).
SCORED_GROUPS = [
    ("164889003", "AF"), ("164890007", "AFL"), ("6374002", "BBB"), ("426627000", "Brady"),
    ("733534002|164909002", "CLBBB|LBBB"), ("713427006|59118001", "CRBBB|RBBB"), ("270492004", "IAVB"),
    ("713426002", "IRBBB"), ("39732003", "LAD"), ("445118002", "LAnFB"), ("164947007", "LPR"),
    ("251146004", "LQRSV"), ("111975006", "LQT"), ("698252002", "NSIVCB"), ("426783006", "NSR"),
    ("284470004|63593006", "PAC|SVPB"), ("10370003", "PR"), ("365413008", "PRWP"),
    ("427172004|17338001", "PVC|VPB"), ("164917005", "QAb"), ("47665007", "RAD"), ("427393009", "SA"),
    ("426177001", "SB"), ("427084000", "STach"), ("164934002", "TAb"), ("59931005", "TInv"),
]
ABBREVIATIONS = [abbreviation for _, abbreviation in SCORED_GROUPS]


@pytest.fixture(scope="module")
def auroc():
    return load_metric("macro_auroc")


@pytest.fixture(scope="module")
def cinc():
    return load_metric("cinc2021_challenge_score")


@pytest.fixture(scope="module")
def accuracy():
    return load_metric("accuracy")


def test_metrics_load_from_folder_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted while loading a local metric")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert available_metrics() == ["accuracy", "cinc2021_challenge_score", "macro_auroc"]
    for name in available_metrics():
        assert load_metric(name) is not None
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("f1")


def test_cinc_loads_directly_with_evaluate_and_finds_its_weights():
    import evaluate

    metric = evaluate.load(str(METRICS_DIR / "cinc2021_challenge_score"))
    result = metric.compute(predictions=[[1, 0], [1, 1]], references=[[0, 1], [1, 0]], label_names=["AF", "NSR"])
    # W[AF, NSR] = 0.25.  record 1: labels {NSR}, outputs {AF}, n = 2 -> 0.25 / 2 = 0.125;
    # record 2: labels {AF}, outputs {AF, NSR}, n = 2 -> 1 / 2 + 0.25 / 2 = 0.625.  observed = 0.75,
    # correct = 1 + 1 = 2, inactive = 1 + 0.25 / 2 = 1.125 -> score = (0.75 - 1.125) / (2 - 1.125)
    assert result["observed"] == pytest.approx(0.75) and result["inactive"] == pytest.approx(1.125)
    assert result["challenge_score"] == pytest.approx(-0.375 / 0.875)


# ---------------------------------------------------------------- macro AUROC
def test_macro_auroc_hand_computed(auroc):
    # Column a: positives score 0.9, 0.4; negatives 0.6, 0.1 -> pairs won: (0.9>0.6), (0.9>0.1), (0.4>0.1) = 3/4.
    # Column b: positives 0.5, 0.8; negatives 0.5, 0.2 -> 0.5 vs 0.5 tie = 1/2, other three won -> 3.5/4.
    predictions = [[0.9, 0.5], [0.4, 0.5], [0.6, 0.8], [0.1, 0.2]]
    references = [[1, 1], [1, 0], [0, 1], [0, 0]]
    result = auroc.compute(predictions=predictions, references=references, label_names=["a", "b"])
    assert result["per_class"] == pytest.approx({"a": 0.75, "b": 0.875})
    assert result["macro_auroc"] == pytest.approx((0.75 + 0.875) / 2)
    assert result["skipped_classes"] == [] and result["n_scored_classes"] == 2


def test_macro_auroc_matches_sklearn_with_ties(auroc):
    rng = np.random.default_rng(3)
    references = rng.integers(0, 2, size=(60, 7))
    predictions = np.round(references * 0.3 + rng.random((60, 7)), 1)  # rounding creates ties
    result = auroc.compute(predictions=predictions.tolist(), references=references.tolist())
    assert result["macro_auroc"] == pytest.approx(roc_auc_score(references, predictions, average="macro"))
    for column in range(7):
        expected = roc_auc_score(references[:, column], predictions[:, column])
        assert result["per_class"][str(column)] == pytest.approx(expected)


def test_macro_auroc_binary_input(auroc):
    result = auroc.compute(predictions=[0.2, 0.7, 0.4, 0.9], references=[0, 1, 1, 0])
    # positives 0.7, 0.4 vs negatives 0.2, 0.9 -> wins (0.7>0.2), (0.4>0.2) = 2/4
    assert result["macro_auroc"] == pytest.approx(0.5)


def test_macro_auroc_skips_single_valued_classes(auroc):
    predictions = [[0.9, 0.1, 0.3], [0.2, 0.4, 0.6], [0.8, 0.5, 0.9]]
    references = [[1, 0, 1], [0, 0, 1], [1, 0, 1]]
    result = auroc.compute(predictions=predictions, references=references, label_names=["x", "never", "always"])
    assert result["skipped_classes"] == ["never", "always"]
    assert result["per_class"] == {"x": 1.0}
    assert result["macro_auroc"] == 1.0
    only_constant = auroc.compute(predictions=[[0.1], [0.9]], references=[[0], [0]])
    assert math.isnan(only_constant["macro_auroc"]) and only_constant["n_scored_classes"] == 0


def test_macro_auroc_rejects_bad_input(auroc):
    with pytest.raises(ValueError, match="binary"):
        auroc.compute(predictions=[[0.1], [0.9]], references=[[2], [0]])
    with pytest.raises(ValueError, match="label_names"):
        auroc.compute(predictions=[[0.1, 0.2], [0.9, 0.3]], references=[[1, 0], [0, 1]], label_names=["one"])


# ---------------------------------------------------------------- accuracy
def test_accuracy_top1_and_topk(accuracy):
    assert accuracy.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 3])["accuracy"] == 0.5
    scores = [[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]]
    # sample 0: order 1,2,0 (target 2 -> rank 2); sample 1: 0,2,1 (target 0 -> rank 1); sample 2: 2,1,0 (target 0 -> 3)
    result = accuracy.compute(predictions=scores, references=[2, 0, 0], top_k=[2, 3])
    assert result == pytest.approx({"accuracy": 1 / 3, "top_2_accuracy": 2 / 3, "top_3_accuracy": 1.0})
    with pytest.raises(ValueError, match="top_k"):
        accuracy.compute(predictions=[0, 1], references=[0, 1], top_k=2)


# ---------------------------------------------------------------- CinC 2021 challenge score
def test_weights_file_is_the_organisers_table():
    text = (METRICS_DIR / "cinc2021_challenge_score" / "weights.csv").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert text.endswith("\n") and len(lines) == 28 and lines[-1] == ""
    header = lines[0].split(",")
    assert header[0] == "" and header[1:] == [group for group, _ in SCORED_GROUPS]
    weights = np.array([[float(cell) for cell in line.split(",")[1:]] for line in lines[1:-1]])
    assert weights.shape == (26, 26) and np.allclose(weights, weights.T) and np.all(np.diag(weights) == 1.0)
    # spot checks against DATASET_LAYOUTS.md §6.5: row NSR / column PAC|SVPB, row IAVB / column SB
    assert weights[14, 15] == 0.4125 and weights[6, 22] == 0.5 and weights[0, 14] == 0.25


def reference_challenge_score(labels, outputs, weights, sinus_index):
    """Straight transcription of the organisers' loops (evaluate_model.py, 2021)."""

    def score(outputs_):
        matrix = np.zeros((labels.shape[1], labels.shape[1]))
        for i in range(labels.shape[0]):
            normalisation = float(max(np.sum(np.any((labels[i], outputs_[i]), axis=0)), 1))
            for j in range(labels.shape[1]):
                if labels[i, j]:
                    for k in range(labels.shape[1]):
                        if outputs_[i, k]:
                            matrix[j, k] += 1.0 / normalisation
        return np.nansum(weights * matrix)

    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, sinus_index] = 1
    observed, correct, inactive = score(outputs), score(labels), score(inactive_outputs)
    return (observed - inactive) / (correct - inactive) if correct != inactive else 0.0


def test_cinc_perfect_and_always_sinus_rhythm(cinc):
    rng = np.random.default_rng(0)
    references = (rng.random((40, 26)) < 0.12).astype(int)
    perfect = cinc.compute(predictions=references, references=references, label_names=ABBREVIATIONS)
    assert perfect["challenge_score"] == pytest.approx(1.0)
    always_sinus = np.zeros_like(references)
    always_sinus[:, ABBREVIATIONS.index("NSR")] = 1
    result = cinc.compute(predictions=always_sinus, references=references, label_names=ABBREVIATIONS)
    assert result["challenge_score"] == pytest.approx(0.0)


def test_cinc_matches_organisers_loops_on_random_data(cinc):
    rng = np.random.default_rng(1)
    references = (rng.random((30, 26)) < 0.1).astype(int)
    predictions = (rng.random((30, 26)) < 0.15).astype(int)
    lines = (METRICS_DIR / "cinc2021_challenge_score" / "weights.csv").read_text().splitlines()
    weights = np.array([[float(cell) for cell in line.split(",")[1:]] for line in lines[1:]])
    expected = reference_challenge_score(references, predictions, weights, 14)
    result = cinc.compute(predictions=predictions, references=references, label_names=ABBREVIATIONS)
    assert result["challenge_score"] == pytest.approx(expected)
    assert result["challenge_score"] < 0.9


def test_cinc_hand_worked_three_records(cinc):
    """Worked by hand with weights from DATASET_LAYOUTS.md §6.5.

    record 1: labels {AF}, outputs {AF}: n = 1 -> A[AF, AF] += 1
    record 2: labels {NSR}, outputs {NSR, PAC}: n = 2 -> A[NSR, NSR] += 1/2, A[NSR, PAC] += 1/2
    record 3: labels {IAVB, SB}, outputs {SB}: n = 2 -> A[IAVB, SB] += 1/2, A[SB, SB] += 1/2
    W[NSR, PAC|SVPB] = 0.4125, W[IAVB, SB] = 0.5, W[AF, NSR] = 0.25, W[IAVB, NSR] = W[SB, NSR] = 0.45
    observed = 1 + 0.5 + 0.5 * 0.4125 + 0.5 * 0.5 + 0.5 = 2.45625
    correct  = 1 + 1 + (0.5 + 0.5 * 0.5 + 0.5 * 0.5 + 0.5) = 3.5
    inactive = 0.5 * 0.25 (n = 2) + 1 + (0.45 + 0.45) / 3 (n = 3) = 1.425
    score = (2.45625 - 1.425) / (3.5 - 1.425)
    """
    names = ["AF", "NSR", "PAC", "IAVB", "SB"]
    references = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    predictions = [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 1]]
    result = cinc.compute(predictions=predictions, references=references, label_names=names)
    assert result["observed"] == pytest.approx(2.45625)
    assert result["correct"] == pytest.approx(3.5)
    assert result["inactive"] == pytest.approx(1.425)
    assert result["challenge_score"] == pytest.approx((2.45625 - 1.425) / (3.5 - 1.425))


def test_cinc_equivalence_classes(cinc):
    # The reference says LBBB (164909002), the model says complete LBBB (733534002): one scored class.
    names = ["LBBB", "733534002", "NSR"]
    references = [[1, 0, 0], [0, 0, 1]]
    predictions = [[0, 1, 0], [0, 0, 1]]
    result = cinc.compute(predictions=predictions, references=references, label_names=names)
    assert result["challenge_score"] == pytest.approx(1.0)
    as_group = cinc.compute(predictions=[[1, 0], [0, 1]], references=[[1, 0], [0, 1]],
                            label_names=["CLBBB|LBBB", "426783006"])
    assert as_group["observed"] == pytest.approx(result["observed"])


def test_cinc_all_sinus_rhythm_references_score_zero(cinc):
    result = cinc.compute(predictions=[[1], [1]], references=[[1], [1]], label_names=["NSR"])
    assert result["correct"] == result["inactive"] and result["challenge_score"] == 0.0


def test_cinc_rejects_bad_input(cinc):
    with pytest.raises(ValueError, match="names no CinC 2021 scored class"):
        cinc.compute(predictions=[[1]], references=[[1]], label_names=["STE"])
    with pytest.raises(ValueError, match="several scored classes"):
        cinc.compute(predictions=[[1]], references=[[1]], label_names=["AF|AFL"])
    with pytest.raises(ValueError, match="binary"):
        cinc.compute(predictions=[[0.7]], references=[[1]], label_names=["AF"])


