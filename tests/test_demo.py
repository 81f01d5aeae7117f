"""The embedded default end to end at toy size: MIMIC tree -> conversion -> N3S -> tiny T5 -> pretraining ->
Hub-ready folder with card, results and figures; then the saved folder labels a real record through the pipeline."""

import json

import pytest
import yaml
from transformers import pipeline

from cmelt.train_scripts.demo import main as demo_main


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
    document = json.loads((folder / "results.json").read_text())
    entry = document["results"][0]
    assert document["schema"] == "cmelt-results/1"
    assert entry["protocol"] == "zero-shot" and 0.0 <= entry["value"] <= 1.0
    # the demo's lead masking (its preset's 0.1) is what its config and card state
    assert json.loads((folder / "config.json").read_text())["ecg_config"]["lead_mask_prob"] == 0.1
    assert "random lead masking uses p = 0.1." in (folder / "README.md").read_text()
    header = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(entry["value"])
    # checkpoints were written on the way, and every one is complete
    checkpoints = list((out / "run").glob("checkpoint-*"))
    assert checkpoints and all((c / "model.safetensors").is_file() for c in checkpoints)

    classifier = pipeline("zero-shot-ecg-classification", model=str(folder), trust_remote_code=True)
    ranked = classifier(str(shared_data / "wfdb" / "s0010_re"), candidate_labels=["AFIB", "NORM", "STE"], label_set="cpsc2018")
    assert sorted(item["label"] for item in ranked) == ["AFIB", "NORM", "STE"]

    # re-running reuses every finished stage (corpus, text tower, N3S cache) and resumes training
    [again] = demo_main(args)
    assert again["model_dir"] == folder


@pytest.mark.slow
def test_the_demo_card_reports_the_lead_masking_it_trained_with(tmp_path, monkeypatch):
    """Issue 12: the demo trained with lead masking 0.1 while its card printed the config's 0.5."""
    import cmelt.train_scripts.pretraining as pretrain_module

    used = []

    class RecordingCollator(pretrain_module.CMELTPretrainingCollator):
        def __call__(self, rows):
            used.append(self.lead_mask_prob)
            return super().__call__(rows)

    monkeypatch.setattr(pretrain_module, "CMELTPretrainingCollator", RecordingCollator)
    out = tmp_path / "demo"
    demo_main(["--output_dir", str(out), "--num_subjects", "30", "--max_steps", "2", "--batch_size", "8",
               "--eval_every", "100", "--n3s_k", "4", "--num_proc", "1", "--lead_mask_prob", "0.2",
               "--real_data_dir", str(tmp_path / "absent"), "--config_overrides", '{"mem_mask_ratio": 0.25}'])
    folder = out / "run" / "model"
    assert json.loads((folder / "config.json").read_text())["mem_mask_ratio"] == 0.25  # --config_overrides reached it
    assert used and set(used) == {0.2}  # what was trained
    assert json.loads((folder / "config.json").read_text())["ecg_config"]["lead_mask_prob"] == 0.2  # what is saved
    assert "random lead masking uses p = 0.2." in (folder / "README.md").read_text()  # what the card says


# ---------------------------------------------------------------------------------------------------------------
# stage reuse (issue 13 item 4): a stage is reused only when it completed with the same parameters


def _tree_args(out, num_subjects):
    from cmelt.train_scripts.demo import parse_args

    return parse_args(["--output_dir", str(out), "--num_subjects", str(num_subjects), "--num_proc", "1",
                       "--n3s_k", "4"])


def _tree_stage(out, num_subjects):
    from cmelt.data.synthetic import GENERATOR_VERSION, write_mimic_tree
    from cmelt.train_scripts.demo import run_stage
    from cmelt.train_scripts.profiling import StageTimer

    root = out / "mimic-iv-ecg-demo"
    timer = StageTimer()
    reused = run_stage(timer, "corpus tree", root, {"num_subjects": num_subjects, "seed": 0, "generator": GENERATOR_VERSION},
                       lambda: write_mimic_tree(root, num_subjects=num_subjects, seed=0))
    return root, reused


def _records(root):
    return len((root / "record_list.csv").read_text().strip().splitlines()) - 1


def test_an_interrupted_corpus_is_written_again(tmp_path):
    root = tmp_path / "mimic-iv-ecg-demo"
    root.mkdir()
    # what an interrupted run left: record_list.csv is written first, so it exists with only some records
    (root / "record_list.csv").write_text("subject_id,study_id,file_name,ecg_time,path\n")
    root, reused = _tree_stage(tmp_path, 6)
    assert not reused and _records(root) >= 6
    marker = json.loads((root / ".demo_stage.json").read_text())
    assert marker["parameters"]["num_subjects"] == 6
    assert not list(root.glob(".*.tmp"))  # the marker was renamed into place, no temporary left


def test_changed_num_subjects_reruns_the_stage_and_same_parameters_reuse_it(tmp_path):
    root, reused = _tree_stage(tmp_path, 5)
    first = _records(root)
    assert not reused
    root, reused = _tree_stage(tmp_path, 5)
    assert reused and _records(root) == first
    root, reused = _tree_stage(tmp_path, 9)
    assert not reused and _records(root) > first
    assert json.loads((root / ".demo_stage.json").read_text())["parameters"]["num_subjects"] == 9


def test_a_truncated_marker_is_not_completion(tmp_path):
    from cmelt.train_scripts.demo import mark_stage_completed, stage_completed

    folder = tmp_path / "stage"
    folder.mkdir()
    mark_stage_completed(folder, {"a": (1, 2)})
    assert stage_completed(folder, {"a": [1, 2]}) and not stage_completed(folder, {"a": [1, 3]})
    marker = folder / ".demo_stage.json"
    marker.write_text(marker.read_text()[:10])
    assert not stage_completed(folder, {"a": [1, 2]})


def test_prepare_corpus_rebuilds_every_stage_downstream_of_a_changed_one(tmp_path):
    from cmelt.train_scripts.demo import prepare_corpus

    corpus, _, _, _ = prepare_corpus(_tree_args(tmp_path, 6), tmp_path)
    small = len(corpus["train"]) + len(corpus["validation"])
    corpus, _, _, _ = prepare_corpus(_tree_args(tmp_path, 12), tmp_path)
    assert len(corpus["train"]) + len(corpus["validation"]) > small
    assert "n3s_negatives" in corpus["train"].column_names


# ---------------------------------------------------------------------------------------------------------------
# out-of-generator check


def test_out_of_generator_cases_have_the_rates_they_are_labelled_with(shared_data):
    import numpy as np

    from cmelt.data.out_of_generator import RATE_CLASSES, build_rate_cases, heart_rate, rate_class

    cases = build_rate_cases(shared_data, per_class=3, seed=1)
    assert {"real 100", "real s0010_re", "re-timed 100", "re-timed s0010_re", "ECGSYN"} == set(cases.sources)
    for signal, fs, label in zip(cases.signals, cases.sampling_rates, cases.labels):
        measured = heart_rate(signal - signal.mean(axis=1, keepdims=True), fs)
        assert rate_class(measured) == int(np.argmax(label)), (measured, RATE_CLASSES[int(np.argmax(label))])
    assert cases.labels.sum(axis=0).min() >= 6  # every rate class is present


def test_out_of_generator_check_scores_a_model_and_says_when_real_records_are_absent(tmp_path):
    import numpy as np
    from transformers import AutoTokenizer

    from cmelt.data.text_tower import build_tiny_t5
    from modeling_cmelt import CMELTConfig, CMELTForPreTraining
    from cmelt.train_scripts.out_of_generator import RATE_PROMPTS, format_out_of_generator, out_of_generator_check

    texts = [text for prompts in RATE_PROMPTS.values() for text in prompts]
    build_tiny_t5(texts, tmp_path / "t5", vocab_size=60, d_model=32, num_layers=1, num_heads=2, d_ff=32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "t5")
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    model = CMELTForPreTraining(config).eval()
    check = out_of_generator_check(model, tokenizer, None, per_class=4)
    summary = check["summary"]
    assert set(summary["by_source"]) == {"ECGSYN"} and "not found" in summary["note"]
    assert summary["pooled"]["n"] == 12 and 0.0 <= summary["pooled"]["macro_auroc"] <= 1.0
    assert check["scores"].shape == (12, 3) and np.isfinite(check["scores"]).all()
    # mutually exclusive classes: one of three per ECG (softmax); the sigmoid figure is reported beside it
    np.testing.assert_allclose(check["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert 0.0 <= summary["pooled_independent_sigmoid"]["macro_auroc"] <= 1.0 and "softmax" in summary["scoring"]
    assert "ECGSYN" in format_out_of_generator(check, 0.9)


def test_fastest_thread_count_picks_the_faster_setting_and_restores_the_previous_one():
    import time

    import torch

    from cmelt.train_scripts.profiling import fastest_thread_count

    before = torch.get_num_threads()
    seen = []

    def step():  # pretend that two threads stall on a shared machine
        seen.append(torch.get_num_threads())
        time.sleep(0.2 if torch.get_num_threads() > 1 else 0.0)

    best, seconds = fastest_thread_count(step, [1, 2], repeats=1)
    assert best == 1 and set(seconds) == {1, 2} and seconds[2] > seconds[1]
    assert set(seen) == {1, 2} and torch.get_num_threads() == before


def test_stage_timer_table_and_json(tmp_path):
    from cmelt.train_scripts.profiling import StageTimer

    timer = StageTimer()
    with timer.stage("corpus tree"):
        pass
    timer.note("corpus tree", "reused")
    with timer.stage("training"):
        pass
    path = timer.write_json(tmp_path / "profile.json", steps_per_second={"C-MELT": 1.0})
    saved = json.loads(path.read_text())
    assert [row["stage"] for row in saved["stages"]] == ["corpus tree", "training"]
    assert saved["stages"][0]["note"] == "reused" and saved["steps_per_second"] == {"C-MELT": 1.0}
    assert "corpus tree" in timer.table() and "total" in timer.table()


def test_random_pretraining_batch_spreads_report_lengths_when_asked():
    import torch
    from modeling_cmelt import CMELTConfig

    from cmelt.train_scripts.profiling import random_pretraining_batch

    config = CMELTConfig.from_preset("tiny")
    full = random_pretraining_batch(config, 8, 20)
    assert bool(full["attention_mask"].all())
    spread = random_pretraining_batch(config, 8, 20, min_text_length=6)
    lengths = spread["attention_mask"].sum(-1)
    assert int(lengths.min()) == 6 and int(lengths.max()) == 20 and len(set(lengths.tolist())) == 8
    padding = ~spread["attention_mask"].bool()
    assert bool((spread["input_ids"][padding] == 0).all()) and bool((spread["labels"][padding] == -100).all())
    assert torch.equal(spread["siglep_attention_mask"], spread["attention_mask"])
