"""`--leads` (data.leads): named sets and comma lists, one home for fine-tune, zero-shot and linear probe."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import load_from_disk

from test_eval_scripts import common

from cmelt.data.leads import LEAD_SETS, lead_keep_mask, lead_names
from cmelt.train_scripts import linear_probe, zero_shot
from cmelt.train_scripts.evaluation import read_rows


def test_named_sets_and_comma_lists():
    assert lead_names("P-3") == ("I", "II", "V2")
    assert lead_names("12") == LEAD_SETS["12"]
    # case-insensitive, aliases, canonical order, duplicates folded
    assert lead_names("v5, ii,MLII,avl") == ("II", "aVL", "V5")
    assert lead_keep_mask("I,V6").tolist() == [True] + [False] * 10 + [True]
    for bad in ("P-4", "I,XYZ", "", " , "):
        with pytest.raises(ValueError, match="unknown lead set"):
            lead_names(bad)


def only_leads(dataset_dict_path, keep: np.ndarray, target):
    """The same rows with the other leads zeroed and masked in the stored data itself."""
    dataset_dict = load_from_disk(str(dataset_dict_path))

    def cut(row):
        ecg = np.asarray(row["ecg"]) * keep[:, None]
        return {"ecg": ecg.astype(np.int16), "lead_mask": (np.asarray(row["lead_mask"]) & keep).tolist()}

    dataset_dict.map(cut).save_to_disk(str(target))
    return target


def test_zero_shot_and_linear_probe_score_only_the_chosen_leads(model_folder, dataset_path, tmp_path):  # noqa: F811
    keep = lead_keep_mask("I,II")
    reduced = only_leads(dataset_path, keep, tmp_path / "cpsc2018_tiny")
    for script, extra in ((zero_shot, ["--no_figures"]), (linear_probe, ["--no_figures", "--epochs", "3"])):
        name = script.__name__.rsplit(".", 1)[1]
        script.main(common(model_folder, dataset_path, tmp_path / name / "subset") + extra + ["--leads", "I,II"])
        script.main(common(model_folder, dataset_path, tmp_path / name / "all") + extra)
        script.main(common(model_folder, reduced, tmp_path / name / "reference") + extra)
        (subset,) = read_rows(tmp_path / name / "subset" / "results.json")
        (full,) = read_rows(tmp_path / name / "all" / "results.json")
        (reference,) = read_rows(tmp_path / name / "reference" / "results.json")
        assert subset["leads"] == "I,II" and subset["details"]["leads"] == ["I", "II"]
        # --leads equals scoring data that only has those leads, and differs from all 12
        assert subset["per_label"] == pytest.approx(reference["per_label"], abs=1e-6)
        assert subset["per_label"] != pytest.approx(full["per_label"], abs=1e-6)
