"""The Hub model card: YAML header, model-index vs the results files, paper vs measured columns, usage snippets that
run against the folder, figures, training summary, parameter counts."""

import json
import re

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData

from cmelt.model_card.__main__ import main as model_card_main
from cmelt.model_card.generate import count_parameters, write_model_card
from modeling_cmelt import CMELTConfig, CMELTForPreTraining, CMELTModel
from cmelt.model_card.results import RESULTS_SCHEMA, read_results

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


def result_row(task, protocol, metric, value, **fields) -> dict:
    """A row of the shared results schema (COMMON.md), as the evaluation scripts write it."""
    return {"task": task, "dataset": task, "split_source": None, "prompt_set": None, "protocol": protocol,
            "label_fraction": None, "leads": "12", "metric": metric, "value": value, "ci95": None, "baseline": None,
            "delta_vs_baseline": None, "per_label": None, "n_test": 100, "seed": 0, "model": "cmelt-tiny",
            "commit": None, **fields}


def write_rows(path, rows) -> None:
    path.write_text(json.dumps({"schema": RESULTS_SCHEMA, "results": rows}))


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "results.json"
    write_rows(path, [
        result_row("ptbxl-super", "zero-shot", "macro_auroc", 0.6512, per_label={"NORM": 0.71, "MI": None},
                   ci95=[0.6012, 0.7031], prompt_set="cmelt", split_source="merl",
                   baseline={"kind": "random-init", "value": 0.5011, "ci95": [0.45, 0.55]},
                   delta_vs_baseline={"value": 0.1501, "ci95": [0.1, 0.2]}),
        result_row("ptbxl-super", "linear-probe", "macro_auroc", 0.8433, label_fraction=1.0),
        result_row("ptbxl-super", "linear-probe", "macro_auroc", 0.7021, label_fraction=0.01),
        result_row("physionet2021", "fine-tune", "cinc2021_score", 0.4567, leads="P-1"),
        result_row("my_hospital", "zero-shot", "macro_auroc", 0.5893),
        result_row("csn", "zero-shot", "macro_auroc", None),
        result_row("ptbxl_super->csn", "domain-transfer", "macro_auroc", 0.6234),
    ])
    (path.parent / "roc_ptbxl_super.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    return path


@pytest.fixture(scope="module")
def card(model_folder, results_file):
    path = write_model_card(model_folder, [results_file], repo_id=str(model_folder))
    return path, path.read_text()


def test_yaml_header_has_the_hub_keys(card):
    metadata, _ = split_card(card[1])
    assert metadata["license"] == "unknown"  # weights of unknown origin: no licence is claimed for them
    assert metadata["library_name"] == "transformers"
    # no ECG tag on the Hub: a dual encoder's outputs are embeddings; the real task is a tag
    assert metadata["pipeline_tag"] == "feature-extraction"
    assert {"ecg", "zero-shot-ecg-classification", "custom_code", "medical", "biosignals"} <= set(metadata["tags"])
    assert "datasets" not in metadata  # training data unknown; evaluation datasets live in the model-index
    assert {"roc_auc", "cinc2021_challenge_score"} <= set(metadata["metrics"])
    assert "base_model" not in metadata  # the config does not say where the text tower came from


def test_model_index_round_trips_through_huggingface_hub(card, results_file):
    loaded = ModelCard.load(card[0])  # huggingface_hub parses and validates the model-index
    rows = [row for row in read_results(results_file) if row["value"] is not None]
    results = loaded.data.eval_results
    assert loaded.data.model_name == "cmelt-tiny" and len(results) == len(rows) == 6
    for row in rows:
        matches = [result for result in results if result.dataset_config == row["task"] and result.metric_value == row["value"]]
        assert len(matches) == 1, row
        assert matches[0].task_type == "other" and matches[0].dataset_split == "test"
        assert "ECG" in matches[0].task_name and matches[0].dataset_type and matches[0].metric_type
    names = [(result.dataset_config, result.metric_name) for result in results]
    assert len(set(names)) == len(names)  # e.g. the 1 % and 100 % linear probes are told apart
    metadata, _ = split_card(card[1])
    assert len(ModelCardData(**metadata).eval_results) == 6


def test_paper_numbers_appear_only_in_the_paper_column(card):
    metadata, body = split_card(card[1])
    rows = evaluation_rows(body)
    measured = "measured (this model) [95 % CI]"
    assert len(rows) == 7  # the null result is listed too, as not computable
    zero_shot = next(row for row in rows if "superclasses" in row["dataset"] and row["setting"].startswith("zero-shot"))
    assert zero_shot[measured] == "65.12 [60.12, 70.31]"
    assert zero_shot["baseline"] == "50.11 (random-init); Δ 15.01"
    assert zero_shot["paper-reported"].startswith(PAPER_ZERO_SHOT_PTBXL_SUPER)
    full_probe = next(row for row in rows if row["setting"] == "linear probe, 100 % labels, 12 leads")
    assert full_probe[measured] == "84.33" and full_probe["baseline"] == "—"
    assert full_probe["paper-reported"].startswith(PAPER_LINEAR_PROBE_PTBXL_SUPER)
    lead_i = next(row for row in rows if "leads I" in row["setting"])
    assert lead_i["paper-reported"].startswith(PAPER_FINETUNE_DX_LEAD_I)
    # settings the paper has no number for
    assert next(row for row in rows if "1 % labels" in row["setting"])["paper-reported"] == "—"
    assert next(row for row in rows if row["dataset"] == "my_hospital")["paper-reported"] == "—"
    assert next(row for row in rows if row["dataset"].startswith("Chapman") and "zero-shot," in row["setting"])[
        measured].startswith("n/a")
    transfer = next(row for row in rows if row["setting"].startswith("zero-shot domain transfer"))
    assert transfer["dataset"].startswith("Chapman") and "ptbxl_super" in transfer["dataset"]
    assert transfer[measured] == "62.34" and transfer["paper-reported"] == "—"
    # nowhere else: not in the YAML header, not in the measured column, not in the prose
    rest = body
    for row in rows:
        rest = rest.replace(row["paper-reported"], "")
    for number in (PAPER_ZERO_SHOT_PTBXL_SUPER, PAPER_LINEAR_PROBE_PTBXL_SUPER, PAPER_FINETUNE_DX_LEAD_I):
        assert number not in rest
        assert number not in yaml.safe_dump(metadata)


def test_results_of_the_earlier_layout_are_read_as_rows(tmp_path):
    legacy = tmp_path / "results.json"
    legacy.write_text(json.dumps({"schema_version": 1, "results": [{
        "model": "m", "dataset": "cmelt_demo", "task": "classification", "protocol": "zero_shot", "split": "validation",
        "metric": {"name": "macro_auroc", "value": 0.9}, "per_class": {"NORM": 0.99}, "created": "", "command": ["x"],
        "leads": ["I", "II"]}]}))
    (row,) = read_results(tmp_path)  # folders: other JSON files beside it are no results and are passed over
    assert row["protocol"] == "zero-shot" and row["leads"] == "P-2" and row["split"] == "validation"
    assert row["value"] == 0.9 and row["per_label"] == {"NORM": 0.99}
    (tmp_path / "bad.json").write_text(json.dumps({"schema": RESULTS_SCHEMA, "results": [{"task": "x"}]}))
    with pytest.raises(ValueError, match="missing keys"):
        read_results(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": RESULTS_SCHEMA, "results": [
        result_row("x", "zero_shot", "macro_auroc", 0.5)]}))
    with pytest.raises(ValueError, match="protocol must be one of"):
        read_results(tmp_path / "bad.json")


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


def test_card_states_how_siglep_was_paired_and_initialised(tmp_path):
    for own_report, phrase in ((True, "paired every ECG with its own report"), (False, "scored the text fed to fusion")):
        folder = tmp_path / str(own_report)
        config = CMELTConfig.from_preset("demo", siglep_own_report=own_report)
        CMELTForPreTraining(config).save_pretrained(folder)
        _, body = split_card(write_model_card(folder).read_text())
        assert phrase in body and "learned logit scale and bias (initial scale 5, bias -5)." in body


def test_training_summary_base_model_and_synthetic_warning(tmp_path):
    folder = tmp_path / "demo"
    CMELTForPreTraining(CMELTConfig.from_preset("tiny")).save_pretrained(folder)
    summary = {"corpus": "built-in synthetic demo corpus written as a MIMIC-IV-ECG tree", "steps": 1200,
               "batch_size": 64, "minutes": 12.5, "preset": "demo", "text_encoder_name_or_path": "google/flan-t5-base"}
    (folder / "training_summary.json").write_text(json.dumps(summary))
    metadata, body = split_card(write_model_card(folder).read_text())
    assert metadata["base_model"] == "google/flan-t5-base"
    # the demo was trained on synthetic data only: MIT like the code that made it, and no dataset is claimed
    assert metadata["license"] == "mit" and "datasets" not in metadata and "mimic-iv-ecg" not in yaml.safe_dump(metadata)
    assert "model-index" not in metadata  # no results given
    assert "trained on synthetic data" in body and "**Provenance:** trained from scratch by this repository's demo" in body
    assert "| steps | 1200 |" in body and "| minutes | 12.5 |" in body
    assert "No evaluation results" in body
    summary["text_encoder_name_or_path"] = str(tmp_path)  # a local path is no Hub id
    (folder / "training_summary.json").write_text(json.dumps(summary))
    metadata, _ = split_card(write_model_card(folder).read_text())
    assert "base_model" not in metadata


def test_converted_checkpoint_license_base_model_provenance_and_datasets(tmp_path, results_file):
    """What a checkpoint converter calls: the weights' own licence, where they come from, what they were trained on."""
    folder = tmp_path / "converted"
    CMELTForPreTraining(CMELTConfig.from_preset("tiny")).save_pretrained(folder)
    rows = read_results(results_file)[:2]
    path = write_model_card(folder, license="cc-by-nc-4.0", base_model="org/cmelt-original",
                            provenance="converted from the authors' checkpoint with convert_checkpoint.py",
                            datasets=["mimic-iv-ecg"], results=rows, model_name="org/cmelt-converted")
    loaded = ModelCard.load(path)
    assert loaded.data.license == "cc-by-nc-4.0" and loaded.data.base_model == "org/cmelt-original"
    assert loaded.data.datasets == ["mimic-iv-ecg"] and len(loaded.data.eval_results) == 2
    assert "**Provenance:** converted from the authors' checkpoint" in loaded.text
    assert "this card gives `cc-by-nc-4.0` as the licence of the weights" in loaded.text
    assert "MIMIC-IV-ECG v1.0 (pretraining)" in loaded.text  # its source listed with the licences to read


def test_cli_and_results_of_several_models(tmp_path, results_file):
    folder = tmp_path / "model"
    CMELTForPreTraining(CMELTConfig.from_preset("tiny")).save_pretrained(folder)
    other = tmp_path / "other.json"
    write_rows(other, [result_row("cpsc2018", "zero-shot", "macro_auroc", 0.91, model="another-model")])
    with pytest.raises(ValueError, match="2 models"):
        write_model_card(folder, [results_file, other])
    output = tmp_path / "card" / "README.md"
    model_card_main([str(folder), "--results", str(results_file), str(other), "--result_model", "another-model",
                     "--output", str(output), "--model_name", "org/cmelt-x", "--license", "apache-2.0",
                     "--base_model", "org/base", "--provenance", "fine-tuned here", "--datasets", "ptb-xl"])
    metadata, body = split_card(output.read_text())
    (index,) = metadata["model-index"]
    assert index["name"] == "org/cmelt-x" and [r["metrics"][0]["value"] for r in index["results"]] == [0.91]
    assert metadata["license"] == "apache-2.0" and metadata["base_model"] == "org/base" and metadata["datasets"] == ["ptb-xl"]
    assert 'model="org/cmelt-x"' in body and "**Provenance:** fine-tuned here" in body
    with pytest.raises(ValueError, match="no config.json"):
        write_model_card(tmp_path)


USAGE_FROM_HUB = """
import sys
sys.modules["modeling_cmelt"] = None
sys.modules["data"] = None
import numpy as np
ecg = np.random.default_rng(0).normal(0.0, 0.2, (12, 5000))
exec(open(sys.argv[1]).read())
print(sorted(item["label"] for item in scores))
"""


@pytest.mark.slow
def test_usage_example_works_for_the_hub_repo_id(model_folder, tmp_path):
    """The card's pipeline example, run as a Hub user runs it: by repo id, from the Hub cache, offline, without
    this package (label_set= resolves label_descriptions.json from the repo)."""
    import shutil
    import subprocess
    import sys

    from conftest import hub_cache_with

    folder = tmp_path / "cmelt-demo"
    shutil.copytree(model_folder, folder)
    card = write_model_card(folder, repo_id="your-username/cmelt-demo").read_text()
    snippet = re.findall(r"```python\n(.*?)```", card, re.S)[0]
    assert 'model="your-username/cmelt-demo"' in snippet and "label_set=" in snippet
    hub_cache_with(folder, tmp_path / "hub", "your-username/cmelt-demo")
    (tmp_path / "snippet.py").write_text(snippet)
    (tmp_path / "run.py").write_text(USAGE_FROM_HUB)
    (tmp_path / "work").mkdir()
    result = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "snippet.py")], cwd=tmp_path / "work",
        capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home"),
             "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['1AVB', 'AFIB', 'NORM']"
