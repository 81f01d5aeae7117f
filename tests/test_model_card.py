"""The Hub model card: YAML header, model-index vs the results files, paper vs measured columns, usage snippets that
run against the folder, figures, training summary, parameter counts."""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCardData
from transformers import AutoTokenizer

from data.text_tower import build_tiny_t5
from model_card.__main__ import main as model_card_main
from model_card.generate import count_parameters, write_model_card
from modeling_cmelt import CMELTConfig, CMELTForPreTraining, CMELTModel
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.pipeline_cmelt import load_label_descriptions
from modeling_cmelt.processing_cmelt import CMELTProcessor
from train_scripts.evaluation import read_results, write_results

# Paper numbers (REFERENCE.md §3) for the settings written below.
PAPER_ZERO_SHOT_PTBXL_SUPER = "76.2"
PAPER_LINEAR_PROBE_PTBXL_SUPER = "90.11"
PAPER_FINETUNE_DX_LEAD_I = "76.5"


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, "card must start with a YAML header between --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def evaluation_rows(body: str) -> list[dict]:
    section = body.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    texts = [text for label_set in load_label_descriptions().values() for text in label_set.values()]
    build_tiny_t5(texts, root / "t5", vocab_size=200, d_model=32, d_ff=64)
    tokenizer = AutoTokenizer.from_pretrained(root / "t5")
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    CMELTForPreTraining(config).save_pretrained(root / "cmelt-tiny")
    CMELTProcessor(CMELTFeatureExtractor(), tokenizer).save_pretrained(root / "cmelt-tiny")
    return root / "cmelt-tiny"


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "results.json"
    common = {"model": "cmelt-tiny", "task": "classification"}
    write_results(path, dataset="ptbxl_super", protocol="zero_shot", metric_name="macro_auroc", value=0.6512,
                  per_class={"NORM": 0.71, "MI": float("nan")}, **common)
    write_results(path, dataset="ptbxl_super", protocol="linear_probe", metric_name="macro_auroc", value=0.8433,
                  **common)
    write_results(path, dataset="ptbxl_super", protocol="linear_probe", metric_name="macro_auroc", value=0.7021,
                  label_fraction=0.01, **common)
    write_results(path, dataset="physionet2021", protocol="finetune", metric_name="cinc2021_challenge_score",
                  value=0.4567, leads=["I"], **common)
    write_results(path, dataset="my_hospital", protocol="zero_shot", metric_name="macro_auroc", value=0.5893, **common)
    write_results(path, dataset="csn", protocol="zero_shot", metric_name="macro_auroc", value=float("nan"), **common)
    write_results(path, dataset="ptbxl_super->csn", protocol="domain_transfer", metric_name="macro_auroc",
                  value=0.6234, extra={"source_label_set": "ptbxl_super", "target_dataset": "csn"}, **common)
    (path.parent / "roc_ptbxl_super.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    return path


@pytest.fixture(scope="module")
def card(model_folder, results_file):
    path = write_model_card(model_folder, [results_file], repo_id=str(model_folder))
    return path, path.read_text()


def test_yaml_header_has_the_hub_keys(card):
    metadata, _ = split_card(card[1])
    assert metadata["license"] == "mit"
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "zero-shot-classification"  # no ECG tag on the Hub; the real task is a tag
    assert {"ecg", "zero-shot-ecg-classification", "custom_code", "medical", "biosignals"} <= set(metadata["tags"])
    assert metadata["datasets"][0] == "mimic-iv-ecg"
    assert {"ptb-xl", "physionet-challenge-2021", "my_hospital"} <= set(metadata["datasets"])
    assert {"roc_auc", "cinc2021_challenge_score"} <= set(metadata["metrics"])
    assert "base_model" not in metadata  # the config does not say where the text tower came from


def test_every_numeric_result_is_in_the_model_index_with_its_value(card, results_file):
    metadata, _ = split_card(card[1])
    (index,) = metadata["model-index"]
    assert index["name"] == "cmelt-tiny"
    entries = [entry for entry in read_results(results_file) if entry["metric"]["value"] is not None]
    assert len(index["results"]) == len(entries) == 6
    for entry in entries:
        matches = [
            result for result in index["results"]
            if result["dataset"]["config"] == entry["dataset"] and result["dataset"]["split"] == entry["split"]
            and result["metrics"][0]["value"] == entry["metric"]["value"]
        ]
        assert len(matches) == 1, entry
        assert matches[0]["task"]["type"] and matches[0]["dataset"]["type"] and matches[0]["metrics"][0]["type"]
    names = [(result["dataset"]["config"], result["metrics"][0]["name"]) for result in index["results"]]
    assert len(set(names)) == len(names)  # e.g. the 1 % and 100 % linear probes are told apart
    # huggingface_hub parses it as a valid model-index: one EvalResult per measured result
    assert len(ModelCardData(**metadata).eval_results) == 6


def test_paper_numbers_appear_only_in_the_paper_column(card):
    metadata, body = split_card(card[1])
    rows = evaluation_rows(body)
    assert len(rows) == 7  # the NaN result is listed too, as not computable
    zero_shot = next(row for row in rows if "superclasses" in row["dataset"] and row["setting"].startswith("zero-shot"))
    assert zero_shot["measured (this model)"] == "65.12"
    assert zero_shot["paper-reported"].startswith(PAPER_ZERO_SHOT_PTBXL_SUPER)
    full_probe = next(row for row in rows if row["setting"] == "linear probe, 12 leads")
    assert full_probe["measured (this model)"] == "84.33"
    assert full_probe["paper-reported"].startswith(PAPER_LINEAR_PROBE_PTBXL_SUPER)
    lead_i = next(row for row in rows if "leads I" in row["setting"])
    assert lead_i["paper-reported"].startswith(PAPER_FINETUNE_DX_LEAD_I)
    # settings the paper has no number for
    assert next(row for row in rows if "1 % labels" in row["setting"])["paper-reported"] == "—"
    assert next(row for row in rows if row["dataset"] == "my_hospital")["paper-reported"] == "—"
    assert next(row for row in rows if row["dataset"].startswith("Chapman") and "zero-shot," in row["setting"])[
        "measured (this model)"].startswith("n/a")
    transfer = next(row for row in rows if row["setting"].startswith("zero-shot domain transfer"))
    assert transfer["dataset"].startswith("Chapman") and "ptbxl_super" in transfer["dataset"]
    assert transfer["measured (this model)"] == "62.34" and transfer["paper-reported"] == "—"
    # nowhere else: not in the YAML header, not in the measured column, not in the prose
    rest = body
    for row in rows:
        rest = rest.replace(row["paper-reported"], "")
    for number in (PAPER_ZERO_SHOT_PTBXL_SUPER, PAPER_LINEAR_PROBE_PTBXL_SUPER, PAPER_FINETUNE_DX_LEAD_I):
        assert number not in rest
        assert number not in yaml.safe_dump(metadata)


def test_usage_snippets_run_against_the_saved_folder(card):
    blocks = re.findall(r"```python\n(.*?)```", card[1], re.S)
    assert len(blocks) == 2 and all(str(card[0].parent) in block for block in blocks)
    assert 'pipeline("zero-shot-ecg-classification"' in blocks[0] and "trust_remote_code=True" in blocks[0]
    ecg = np.random.default_rng(0).normal(0.0, 0.2, (12, 5000))
    namespace = {"ecg": ecg}
    exec(blocks[0], namespace)
    assert {item["label"] for item in namespace["scores"]} == {"AFIB", "NORM", "1AVB"}
    namespace = {"ecg": ecg}
    exec(blocks[1], namespace)
    assert tuple(namespace["logits"].shape) == (1, 2)


def test_figures_beside_the_results_are_copied_into_the_folder(card, model_folder):
    _, body = split_card(card[1])
    assert "![roc ptbxl super](figures/roc_ptbxl_super.png)" in body
    assert (model_folder / "figures" / "roc_ptbxl_super.png").is_file()


def test_card_states_limitations_input_format_and_citation(card):
    _, body = split_card(card[1])
    assert "not a medical device" in body.lower() and "not been validated for clinical decisions" in body
    assert "single US hospital system" in body or "one US hospital system" in body
    assert "I, II, III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6" in body and "500 Hz" in body
    assert "arXiv:2410.02131" in body and "Pham, Manh and Saeed, Aaqib and Ma, Dong" in body
    assert "no `training_summary.json`" in body


def test_parameter_counts_match_a_real_model():
    config = CMELTConfig.from_preset("tiny")
    counts = count_parameters(config)
    model = CMELTForPreTraining(config)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["ECG encoder"] == sum(p.numel() for p in model.ecg_model.parameters())
    assert counts["text encoder"] == sum(p.numel() for p in model.text_model.parameters())
    config.architectures = ["CMELTModel"]
    dual = count_parameters(config)
    assert "cross-modal fusion" not in dual
    assert sum(dual.values()) == sum(p.numel() for p in CMELTModel(config).parameters())


def test_training_summary_base_model_and_synthetic_warning(tmp_path):
    folder = tmp_path / "demo"
    CMELTForPreTraining(CMELTConfig.from_preset("tiny")).save_pretrained(folder)
    summary = {"corpus": "synthetic dipole ECGs", "steps": 1200, "batch_size": 64, "minutes": 12.5,
               "preset": "demo", "text_encoder_name_or_path": "google/flan-t5-base"}
    (folder / "training_summary.json").write_text(json.dumps(summary))
    metadata, body = split_card(write_model_card(folder).read_text())
    assert metadata["base_model"] == "google/flan-t5-base"
    assert "model-index" not in metadata  # no results given
    assert "trained on synthetic data" in body
    assert "| steps | 1200 |" in body and "| minutes | 12.5 |" in body
    assert "No evaluation results" in body
    summary["text_encoder_name_or_path"] = str(tmp_path)  # a local path is no Hub id
    (folder / "training_summary.json").write_text(json.dumps(summary))
    metadata, _ = split_card(write_model_card(folder).read_text())
    assert "base_model" not in metadata


def test_cli_and_results_of_several_models(tmp_path, results_file):
    folder = tmp_path / "model"
    CMELTForPreTraining(CMELTConfig.from_preset("tiny")).save_pretrained(folder)
    other = tmp_path / "other.json"
    write_results(other, model="another-model", dataset="cpsc2018", task="classification", protocol="zero_shot",
                  metric_name="macro_auroc", value=0.91)
    with pytest.raises(ValueError, match="2 models"):
        write_model_card(folder, [results_file, other])
    output = tmp_path / "card" / "README.md"
    model_card_main([str(folder), "--results", str(results_file), str(other), "--result-model", "another-model",
                     "--output", str(output), "--model-name", "org/cmelt-x"])
    metadata, body = split_card(output.read_text())
    (index,) = metadata["model-index"]
    assert index["name"] == "org/cmelt-x" and [r["metrics"][0]["value"] for r in index["results"]] == [0.91]
    assert 'model="org/cmelt-x"' in body
    with pytest.raises(ValueError, match="no config.json"):
        write_model_card(tmp_path)
