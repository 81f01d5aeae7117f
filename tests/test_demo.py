"""The embedded default end to end at toy size: MIMIC tree -> conversion -> N3S -> tiny T5 -> pretraining ->
Hub-ready folder with card, results and figures; then the saved folder labels a real record through the pipeline."""

import json

import pytest
import yaml
from transformers import pipeline

from train_scripts.demo import main as demo_main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_folder_works(tmp_path, shared_data):
    out = tmp_path / "demo"
    args = ["--output_dir", str(out), "--num_subjects", "40", "--max_steps", "4", "--batch_size", "8",
            "--eval_every", "2", "--n3s_k", "4", "--num_proc", "1"]
    [result] = demo_main(args)
    folder = out / "run" / "model"
    assert result["model_dir"] == folder
    saved = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "results.json", "training_summary.json",
            "modeling_cmelt.py", "pipeline_cmelt.py", "processor_config.json", "tokenizer_config.json"} <= saved
    assert len(list((folder / "figures").glob("*.png"))) == 3
    entry = json.loads((folder / "results.json").read_text())["results"][0]
    assert entry["protocol"] == "zero_shot" and 0.0 <= entry["metric"]["value"] <= 1.0
    header = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(entry["metric"]["value"])
    # checkpoints were written on the way, and every one is complete
    checkpoints = list((out / "run").glob("checkpoint-*"))
    assert checkpoints and all((c / "model.safetensors").is_file() for c in checkpoints)

    classifier = pipeline("zero-shot-ecg-classification", model=str(folder), trust_remote_code=True)
    ranked = classifier(str(shared_data / "wfdb" / "s0010_re"), candidate_labels=["AFIB", "NORM", "STE"], label_set="cpsc2018")
    assert sorted(item["label"] for item in ranked) == ["AFIB", "NORM", "STE"]

    # re-running reuses every finished stage (corpus, text tower, N3S cache) and resumes training
    [again] = demo_main(args)
    assert again["model_dir"] == folder
