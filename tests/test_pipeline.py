"""The zero-shot ECG labelling pipeline: real records, label resolution, remote-code loading, bad input."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import pipeline

from conftest import hub_cache_with

from modeling_cmelt.pipeline_cmelt import label_texts_for, load_label_descriptions

TASK = "zero-shot-ecg-classification"


@pytest.fixture(scope="module")
def classifier(dual_encoder_folder):
    return pipeline(TASK, model=str(dual_encoder_folder), trust_remote_code=True)


def check_ranked(result, labels):
    assert [entry["label"] for entry in result] != [] and {entry["label"] for entry in result} == set(labels)
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)


def test_real_records_get_sorted_sigmoid_scores_for_every_candidate(classifier, shared_data):
    labels = ["NORM", "MI", "STTC", "CD", "HYP"]
    ptb = classifier(str(shared_data / "wfdb" / "s0010_re"), candidate_labels=labels, label_set="ptbxl_super")
    check_ranked(ptb, labels)
    mitdb = classifier(str(shared_data / "wfdb" / "100"), candidate_labels=labels, label_set="ptbxl_super")
    check_ranked(mitdb, labels)
    # sigmoid scores are independent per label: they need not sum to one, and equal the model's own logits
    model, tokenizer = classifier.model, classifier.tokenizer
    features = classifier.feature_extractor(str(shared_data / "wfdb" / "s0010_re"), return_tensors="pt")
    texts = label_texts_for(labels, "ptbxl_super")
    encoded = tokenizer([t[0] for t in texts.values()], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(features["input_values"], encoded["input_ids"], encoded["attention_mask"], lead_mask=features["lead_mask"]).logits_per_ecg[0]
    expected = dict(zip(labels, logits.sigmoid().tolist()))
    for entry in ptb:
        assert entry["score"] == pytest.approx(expected[entry["label"]], abs=1e-5)


def test_arrays_batches_free_text_and_softmax(classifier):
    rng = np.random.default_rng(0)
    ecgs = [rng.normal(0, 0.3, (12, 2500)).astype(np.float32) for _ in range(3)]
    results = classifier(ecgs, candidate_labels=["atrial fibrillation", "normal sinus rhythm"], sampling_rate=250, batch_size=2)
    assert len(results) == 3
    for result in results:
        check_ranked(result, ["atrial fibrillation", "normal sinus rhythm"])
    soft = classifier(ecgs[0], candidate_labels=["a", "b", "c"], sampling_rate=250, multi_label=False)
    assert sum(entry["score"] for entry in soft) == pytest.approx(1.0, abs=1e-5)
    two_leads = classifier(
        rng.normal(size=(2, 3600)), candidate_labels=["x", "y"], sampling_rate=360, lead_names=["MLII", "V5"]
    )
    check_ranked(two_leads, ["x", "y"])


def test_label_embeddings_are_computed_once_per_label_set(classifier):
    calls = []
    original = classifier.model.get_text_features

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    classifier.model.get_text_features = counting
    try:
        ecg = np.random.default_rng(1).normal(0, 0.3, (12, 5000)).astype(np.float32)
        for _ in range(3):
            classifier(ecg, candidate_labels=["AFIB", "SR"], label_set="csn", sampling_rate=500)
    finally:
        classifier.model.get_text_features = original
    assert len(calls) <= 1  # 0 if an earlier test already cached this label set


def test_user_descriptions_override_and_average(classifier):
    texts = label_texts_for(["AFIB", "mine"], "csn", descriptions={"mine": ["first text", "second text"]})
    assert texts["mine"] == ["first text", "second text"]
    assert texts["AFIB"][0].startswith("Atrial Fibrillation")


def test_bad_input_gives_clear_errors(classifier):
    ecg = np.random.default_rng(1).normal(0, 0.3, (12, 5000)).astype(np.float32)
    with pytest.raises(ValueError, match="not a code of label set"):
        classifier(ecg, candidate_labels=["NOT_A_CODE"], label_set="ptbxl_super", sampling_rate=500)
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        classifier(ecg, candidate_labels=[], sampling_rate=500)
    with pytest.raises(ValueError, match="sampling_rate"):
        classifier(ecg, candidate_labels=["a"])
    with pytest.raises(ValueError, match="(?i)rate"):
        classifier(ecg, candidate_labels=["a"], sampling_rate=20)
    with pytest.raises(ValueError, match="unknown label_set"):
        classifier(ecg, candidate_labels=["a"], label_set="nonexistent", sampling_rate=500)


BLOCKED = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_cmelt"] = None
    sys.modules["data"] = None
    from transformers import pipeline
    classifier = pipeline("zero-shot-ecg-classification", model=sys.argv[1], trust_remote_code=True)
    assert "transformers_modules" in type(classifier).__module__, type(classifier).__module__
    result = classifier(sys.argv[2], candidate_labels=["AFIB", "NORM", "STE"], label_set="cpsc2018")
    print([entry["label"] for entry in result])
    """
)


def test_remote_code_pipeline_without_the_package(dual_encoder_folder, shared_data, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(BLOCKED)
    result = subprocess.run(
        [sys.executable, str(script), str(dual_encoder_folder), str(shared_data / "wfdb" / "s0010_re")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(eval(result.stdout.strip().splitlines()[-1])) == ["AFIB", "NORM", "STE"]  # noqa: S307 - our own output


@pytest.mark.slow
@pytest.mark.parametrize("source", ["hub-cache", "copied-folder"])
def test_label_set_works_for_a_hub_repo_id_and_a_copied_folder(dual_encoder_folder, shared_data, tmp_path, source):
    """`label_set=` needs label_descriptions.json: it is resolved from the model's own repo / folder, not from the
    working directory or the module cache (transformers copies only .py files there)."""
    import shutil

    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf-home")}
    if source == "hub-cache":
        hub_cache_with(dual_encoder_folder, tmp_path / "hub", "acme/cmelt-tiny")
        model = "acme/cmelt-tiny"
    else:
        model = str(tmp_path / "elsewhere" / "my-copy")
        shutil.copytree(dual_encoder_folder, model)
    (tmp_path / "work").mkdir()
    script = tmp_path / "run.py"
    script.write_text(BLOCKED)
    result = subprocess.run(
        [sys.executable, str(script), model, str(shared_data / "wfdb" / "s0010_re")],
        cwd=tmp_path / "work", capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(eval(result.stdout.strip().splitlines()[-1])) == ["AFIB", "NORM", "STE"]  # noqa: S307 - our own output


def test_resolve_model_file_finds_folder_files_and_reports_missing_ones(dual_encoder_folder, tmp_path):
    from modeling_cmelt.pipeline_cmelt import DESCRIPTIONS_FILE, resolve_model_file

    assert resolve_model_file(dual_encoder_folder, DESCRIPTIONS_FILE) == str(dual_encoder_folder / DESCRIPTIONS_FILE)
    assert resolve_model_file(dual_encoder_folder, "no_such_file.json") is None
    assert resolve_model_file(None, DESCRIPTIONS_FILE) is None
    # a model without its own copy falls back to the installed package's descriptions
    assert "ptbxl_super" in load_label_descriptions(folder=tmp_path)


def test_prompt_sets_change_the_label_texts_not_the_labels(classifier, tmp_path):
    ecg = np.random.default_rng(3).normal(0, 0.3, (12, 5000)).astype(np.float32)
    ours = classifier(ecg, label_set="cpsc2018", sampling_rate=500)
    merl = classifier(ecg, label_set="cpsc2018", prompts="merl", sampling_rate=500)
    assert sorted(r["label"] for r in ours) == sorted(r["label"] for r in merl) == sorted(
        load_label_descriptions("cpsc2018"))
    assert {r["label"]: r["score"] for r in ours} != {r["label"]: r["score"] for r in merl}
    user = tmp_path / "prompts.json"
    user.write_text(json.dumps({"AFIB": "atrial fibrillation", "NORM": "normal ecg"}))
    mine = classifier(ecg, candidate_labels=["AFIB", "NORM"], label_set="cpsc2018", prompts=str(user), sampling_rate=500)
    assert sorted(r["label"] for r in mine) == ["AFIB", "NORM"]
