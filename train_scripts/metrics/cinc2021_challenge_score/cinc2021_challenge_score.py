"""PhysioNet/CinC Challenge 2021 challenge score as a local `evaluate` metric.

Re-implements `compute_challenge_metric` of the organisers' `evaluation-2021/evaluate_model.py`:

* Classes are the 26 scored equivalence groups of `weights.csv` (stored verbatim beside this file; the
  organisers' public file). A group is a `|`-joined set of SNOMED CT codes, e.g. `733534002|164909002`
  (complete left bundle branch block / left bundle branch block are scored as one diagnosis).
* A record is positive for a group if any of its positive columns names a code of that group (for both
  references and predictions); columns naming the same group are OR-ed.
* Modified confusion matrix A (rows = labels, columns = outputs): for every record,
  n = max(|positive labels U positive outputs|, 1), and 1/n is added to A[j, k] for every positive label j and
  positive output k.  s(outputs) = sum(W * A) with W the weights.
* observed = s(predictions), correct = s(references), inactive = s(only sinus rhythm 426783006 positive for
  every record); score = (observed - inactive) / (correct - inactive), or 0.0 when correct == inactive
  (e.g. every record is labelled sinus rhythm only).  A perfect classifier scores 1, the always-sinus-rhythm
  classifier 0, and over-calling usually gives a negative score.

Column names (`label_names`, one per prediction/reference column) may be SNOMED CT codes, challenge
abbreviations, or `|`-joined sets of either.  Abbreviation -> SNOMED CT code (dx_mapping_scored.csv):

    AF 164889003          AFL 164890007        BBB 6374002          Brady 426627000
    CLBBB 733534002       LBBB 164909002       CRBBB 713427006      RBBB 59118001
    IAVB 270492004        IRBBB 713426002      LAD 39732003         LAnFB 445118002
    LPR 164947007         LQRSV 251146004      LQT 111975006        NSIVCB 698252002
    NSR 426783006         PAC 284470004        SVPB 63593006        PR 10370003
    PRWP 365413008        PVC 427172004        VPB 17338001         QAb 164917005
    RAD 47665007          SA 427393009         SB 426177001         STach 427084000
    TAb 164934002         TInv 59931005

So our PhysioNet 2021 label codes (the `weights_abbreviations.csv` header: "AF", "CLBBB|LBBB", "PAC|SVPB", ...)
are valid column names as they are, and so are single members such as "LBBB" or "164909002".
A column naming no scored group, or codes of two different groups, is a ValueError.

Predictions are binary decisions (0/1 or booleans); threshold scores before calling this metric.
"""

import json
from pathlib import Path

import datasets
import evaluate
import numpy as np

SINUS_RHYTHM_CODE = "426783006"
WEIGHTS_FILE_NAME = "weights.csv"

ABBREVIATION_TO_SNOMED = {
    "AF": "164889003", "AFL": "164890007", "BBB": "6374002", "Brady": "426627000",
    "CLBBB": "733534002", "LBBB": "164909002", "CRBBB": "713427006", "RBBB": "59118001",
    "IAVB": "270492004", "IRBBB": "713426002", "LAD": "39732003", "LAnFB": "445118002",
    "LPR": "164947007", "LQRSV": "251146004", "LQT": "111975006", "NSIVCB": "698252002",
    "NSR": "426783006", "PAC": "284470004", "SVPB": "63593006", "PR": "10370003",
    "PRWP": "365413008", "PVC": "427172004", "VPB": "17338001", "QAb": "164917005",
    "RAD": "47665007", "SA": "427393009", "SB": "426177001", "STach": "427084000",
    "TAb": "164934002", "TInv": "59931005",
}

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: (n_records, n_columns) binary decisions (0/1 or bool).
    references: (n_records, n_columns) binary labels.
    label_names: n_columns column names (SNOMED CT codes, abbreviations, or `|`-joined sets of either).
Returns:
    challenge_score: the CinC 2021 challenge metric.
    observed, correct, inactive: the three unnormalised scores it is made of.
    classes: the 26 scored groups (SNOMED CT, weights.csv order).
Example:
    >>> metric = evaluate.load("train_scripts/metrics/cinc2021_challenge_score")
    >>> metric.compute(predictions=[[1, 0]], references=[[1, 0]], label_names=["AF", "NSR"])["challenge_score"]
    1.0
"""

_CITATION = """
@article{reyna2021will,
  title={Will Two Do? Varying Dimensions in Electrocardiography: the PhysioNet/Computing in Cardiology
         Challenge 2021},
  author={Reyna, Matthew A and Sadr, Nadi and Perez Alday, Erick A and Gu, Annie and Shah, Amit J and
          Robichaux, Chad and Rad, Ali Bahrami and Elola, Andoni and Seyedi, Salman and Ansari, Sardar and
          others},
  journal={Computing in Cardiology},
  year={2021}
}
"""


def locate_weights_file() -> Path:
    """Return the path of the weights.csv shipped beside this script.

    `evaluate.load` copies the script (not its data files) into the modules cache and writes a JSON beside the
    copy recording the original path, so the file is looked up next to the script first, then next to the
    original script.
    """
    here = Path(__file__).resolve()
    candidate = here.with_name(WEIGHTS_FILE_NAME)
    if candidate.is_file():
        return candidate
    meta_path = here.with_suffix(".json")
    if meta_path.is_file():
        original = json.loads(meta_path.read_text(encoding="utf-8")).get("original file path")
        if original:
            candidate = Path(original).with_name(WEIGHTS_FILE_NAME)
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{WEIGHTS_FILE_NAME} not found beside {here} nor beside the original metric script")


def load_weights(path: Path) -> tuple[list[str], np.ndarray]:
    """Read the challenge weight table: (class names as `|`-joined SNOMED sets, (C, C) weights)."""
    rows = [[cell.strip() for cell in line.split(",")] for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if any(row)]
    header = rows[0][1:]
    row_names = [row[0] for row in rows[1:]]
    if header != row_names:
        raise ValueError(f"{path}: row labels {row_names} differ from column labels {header}")
    weights = np.array([[float(cell) for cell in row[1:]] for row in rows[1:]], dtype=np.float64)
    if weights.shape != (len(header), len(header)):
        raise ValueError(f"{path}: expected a square table, got {weights.shape}")
    return header, weights


def column_to_class_index(name: str, classes: list[str]) -> int:
    """Index of the scored group that a column name (codes/abbreviations, `|`-joined) belongs to."""
    codes = {ABBREVIATION_TO_SNOMED.get(part.strip(), part.strip()) for part in name.split("|")}
    matches = [index for index, group in enumerate(classes) if codes & set(group.split("|"))]
    if not matches:
        raise ValueError(
            f"column {name!r} names no CinC 2021 scored class; expected a SNOMED CT code or abbreviation of "
            f"{sorted(ABBREVIATION_TO_SNOMED)} (or a '|'-joined set of them)"
        )
    if len(matches) > 1:
        raise ValueError(f"column {name!r} mixes codes of several scored classes: {[classes[i] for i in matches]}")
    return matches[0]


def to_class_matrix(values: np.ndarray, column_classes: list[int], num_classes: int) -> np.ndarray:
    """OR the columns of each scored group into a (n_records, num_classes) boolean matrix."""
    matrix = np.zeros((values.shape[0], num_classes), dtype=bool)
    for column, class_index in enumerate(column_classes):
        matrix[:, class_index] |= values[:, column]
    return matrix


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A[j, k] = sum over records of labels[j] * outputs[k] / max(|labels U outputs|, 1)."""
    normalisation = np.maximum((labels | outputs).sum(axis=1), 1).astype(np.float64)
    return (labels.astype(np.float64) / normalisation[:, None]).T @ outputs.astype(np.float64)


def challenge_score(labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray, sinus_rhythm_index: int) -> dict:
    """The challenge metric on (n_records, C) boolean matrices over the scored classes."""
    observed = float(np.nansum(weights * modified_confusion_matrix(labels, outputs)))
    correct = float(np.nansum(weights * modified_confusion_matrix(labels, labels)))
    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, sinus_rhythm_index] = True
    inactive = float(np.nansum(weights * modified_confusion_matrix(labels, inactive_outputs)))
    score = (observed - inactive) / (correct - inactive) if correct != inactive else 0.0
    return {"challenge_score": score, "observed": observed, "correct": correct, "inactive": inactive}


def as_binary_matrix(values, name: str, num_columns: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != num_columns:
        raise ValueError(f"{name}: expected shape (n_records, {num_columns}) to match label_names, got {array.shape}")
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name}: expected binary 0/1 values (threshold scores first)")
    return array.astype(bool)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CMELTCinC2021ChallengeScore(evaluate.Metric):
    """CinC 2021 challenge metric (see module docstring).

    weights_path: optional explicit weights table (`evaluation.load_metric` passes the repository's copy);
    by default the weights.csv beside the original script is used.
    """

    def __init__(self, *args, weights_path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weights_path = Path(weights_path) if weights_path is not None else None

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=["https://github.com/physionetchallenges/evaluation-2021"],
        )

    def _compute(self, predictions, references, label_names):
        label_names = list(label_names)
        if not label_names:
            raise ValueError("label_names: expected one name per prediction column, got none")
        classes, weights = load_weights(self.weights_path or locate_weights_file())
        if SINUS_RHYTHM_CODE not in classes:
            raise ValueError(f"weights table lacks the sinus rhythm class {SINUS_RHYTHM_CODE}")
        column_classes = [column_to_class_index(name, classes) for name in label_names]
        outputs = as_binary_matrix(predictions, "predictions", len(label_names))
        labels = as_binary_matrix(references, "references", len(label_names))
        result = challenge_score(
            to_class_matrix(labels, column_classes, len(classes)),
            to_class_matrix(outputs, column_classes, len(classes)),
            weights,
            classes.index(SINUS_RHYTHM_CODE),
        )
        result["classes"] = classes
        return result
