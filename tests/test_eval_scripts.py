"""Evaluation scripts end to end on a tiny model and a tiny labelled dataset (CPU, seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Value

from conftest import EVALUATION_CODES, EVALUATION_SIZES
from fixtures_downstream import sine_twelve_leads, write_cpsc_original_tree

from cmelt.data.ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE, encode_ecg
from cmelt.data.labels import label_codes
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS
from cmelt.train_scripts import domain_transfer, finetune, linear_probe, scoring, zero_shot
from cmelt.train_scripts.datasets_registry import infer_label_set, load_evaluation_data
from cmelt.train_scripts.evaluation import read_rows

CODES = label_codes("cpsc2018")
SIZES = EVALUATION_SIZES
assert CODES == EVALUATION_CODES  # the shared dataset_path fixture (conftest) uses these codes


def check_entries(output_dir, protocol: str, expected_count: int = 1) -> list[dict]:
    entries = read_rows(output_dir / "results.json")  # validates the schema
    assert len(entries) == expected_count
    for entry in entries:
        assert entry["protocol"] == protocol
        value = entry["value"]
        assert value is not None and 0.0 <= value <= 1.0
        assert entry["ci95"][0] <= value <= entry["ci95"][1]
        assert all(v is None or 0.0 <= v <= 1.0 for v in (entry["per_label"] or {}).values())
        figures = entry["details"]["figures"]
        assert {"roc", "tsne", "example_ecg"} <= set(figures)
        for name in figures.values():  # stored relative to the results folder
            assert (output_dir / name).is_file() and (output_dir / name).stat().st_size > 1000
    return entries


def common(model_folder, dataset_path, output_dir) -> list[str]:
    return ["--model", str(model_folder), "--dataset_path", str(dataset_path), "--output_dir", str(output_dir),
            "--no_progress", "--batch_size", "16"]


# ------------------------------------------------------------------------------------------------ zero-shot


def test_zero_shot_end_to_end_with_shipped_and_user_prompts(model_folder, dataset_path, tmp_path):
    entry = zero_shot.main(common(model_folder, dataset_path, tmp_path))
    (written,) = check_entries(tmp_path, "zero-shot")
    assert written["task"] == "cpsc2018" and written["details"]["eval_split"] == "test"
    assert written["split_source"] == "user" and written["prompt_set"] == "cmelt" and written["baseline"] is None
    assert set(written["per_label"]) == set(CODES)
    assert written["value"] == pytest.approx(np.mean(list(written["per_label"].values())))
    assert entry["value"] == written["value"]

    # user prompts replace the shipped ones: a different text changes that class's AUROC input, not the schema
    descriptions = tmp_path / "prompts.json"
    descriptions.write_text(json.dumps({"AFIB": ["irregularly irregular rhythm", "no P waves"]}))
    other = tmp_path / "user"
    zero_shot.main(common(model_folder, dataset_path, other) + ["--descriptions", str(descriptions), "--no_figures"])
    (user,) = read_rows(other / "results.json")
    assert user["prompt_set"] == "cmelt+descriptions"
    assert user["per_label"]["VPC"] == pytest.approx(written["per_label"]["VPC"])  # untouched class, same score


def test_zero_shot_bad_descriptions_file(model_folder, dataset_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"AFIB": 3}))
    with pytest.raises(ValueError, match="code: text or"):
        zero_shot.main(common(model_folder, dataset_path, tmp_path) + ["--descriptions", str(bad)])


def test_zero_shot_takes_training_arguments_flags(model_folder, dataset_path, tmp_path):
    """Flags the script does not define go to `TrainingArguments`: bf16 autocast of the ECG pass moves the scores
    a little (bf16 keeps 8 mantissa bits), not the ranking much; an unknown flag fails before anything loads."""
    flags = common(model_folder, dataset_path, tmp_path / "fp32") + ["--no_figures", "--dataloader_num_workers", "0"]
    full = zero_shot.main(flags)
    flags = common(model_folder, dataset_path, tmp_path / "bf16") + ["--no_figures", "--bf16", "true",
                                                                     "--per_device_eval_batch_size", "5"]
    half = zero_shot.main(flags)
    scores = [np.array(list(row["per_label"].values())) for row in (full, half)]
    assert not np.array_equal(scores[0], scores[1])  # the flag reached the ECG pass
    assert half["value"] == pytest.approx(full["value"], abs=0.1)
    with pytest.raises(ValueError, match="--no_such_flag"):
        zero_shot.main(common(model_folder, dataset_path, tmp_path) + ["--no_such_flag", "1"])


# ------------------------------------------------------------------------------------------------ linear probe


def test_linear_probe_fractions_best_validation_epoch_and_determinism(model_folder, dataset_path, tmp_path):
    arguments = common(model_folder, dataset_path, tmp_path / "a") + ["--epochs", "6", "--label_fraction", "0.25", "1.0"]
    linear_probe.main(arguments)
    entries = check_entries(tmp_path / "a", "linear-probe", expected_count=2)
    by_fraction = {entry["label_fraction"]: entry for entry in entries}
    assert set(by_fraction) == {0.25, 1.0}
    assert by_fraction[0.25]["details"]["train_records"] == round(0.25 * SIZES["train"])
    assert by_fraction[1.0]["details"]["train_records"] == SIZES["train"]
    for entry in entries:
        extra = entry["details"]
        history = extra["history"]
        assert len(history) == 6 and "best validation" in extra["selection"]
        validation = [epoch["validation_macro_auroc"] for epoch in history]
        assert extra["best_epoch"] == history[int(np.argmax(validation))]["epoch"]
        assert extra["validation_macro_auroc_at_best_epoch"] == max(validation)
        # the reported test value is the best-validation epoch's, which the history also records
        assert entry["value"] == pytest.approx(history[extra["best_epoch"] - 1]["test_macro_auroc"])
    # same seed, same numbers
    linear_probe.main(common(model_folder, dataset_path, tmp_path / "b") + ["--epochs", "6", "--label_fraction", "0.25", "1.0", "--no_figures"])
    again = {entry["label_fraction"]: entry for entry in read_rows(tmp_path / "b" / "results.json")}
    for fraction, entry in by_fraction.items():
        assert again[fraction]["value"] == entry["value"] and again[fraction]["ci95"] == entry["ci95"]
        assert again[fraction]["details"]["history"] == entry["details"]["history"]


def test_best_epoch_selection_uses_validation_not_test():
    history = [
        {"epoch": 1, "validation_macro_auroc": 0.60, "test_macro_auroc": 0.70},
        {"epoch": 2, "validation_macro_auroc": 0.80, "test_macro_auroc": 0.65},
        {"epoch": 3, "validation_macro_auroc": float("nan"), "test_macro_auroc": 0.99},
        {"epoch": 4, "validation_macro_auroc": 0.80, "test_macro_auroc": 0.90},
        {"epoch": 5, "validation_macro_auroc": 0.75, "test_macro_auroc": 0.95},
    ]
    assert linear_probe.select_best_epoch(history) == 1  # epoch 2: best validation, earliest of the tie with 4
    assert linear_probe.select_best_epoch(history, key="test_macro_auroc") == 2
    with pytest.raises(ValueError, match="no epoch has a finite"):
        linear_probe.select_best_epoch([{"validation_macro_auroc": None}, {"validation_macro_auroc": float("nan")}])


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1", "nan"])
def test_label_fraction_out_of_range_is_rejected(model_folder, dataset_path, tmp_path, fraction):
    with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\]"):
        linear_probe.main(common(model_folder, dataset_path, tmp_path) + ["--label_fraction", fraction])
    assert not (tmp_path / "results.json").exists()


# ------------------------------------------------------------------------------------------------ fine-tune


def test_lead_subsets_zero_the_other_leads_and_mask_them():
    values = torch.randn(3, 12, 5000) + 5.0  # no lead is zero by chance
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 0] = False  # a lead already absent stays absent
    expected = {"12": CANONICAL_LEADS, "P-6": ("I", "II", "III", "aVR", "aVL", "aVF"), "P-3": ("I", "II", "V2"),
                "P-2": ("I", "II"), "P-1": ("I",)}
    for lead_set, leads in expected.items():
        keep = finetune.lead_keep_mask(lead_set)
        assert [CANONICAL_LEADS[i] for i in np.flatnonzero(keep)] == list(leads)
        subset_values, subset_mask = finetune.apply_lead_subset(values, mask, keep)
        for index, lead in enumerate(CANONICAL_LEADS):
            if lead in leads:
                assert torch.equal(subset_values[:, index], values[:, index])
                assert torch.equal(subset_mask[:, index], mask[:, index])
            else:
                assert not subset_values[:, index].any() and not subset_mask[:, index].any()
    # the collator applies the same subset to stored rows
    rows = [{"ecg": encode_ecg(np.full((12, 5000), 0.5)), "lead_mask": [True] * 12, "labels": [1.0] + [0.0] * 8}]
    batch = scoring.CMELTECGCollator(finetune.lead_keep_mask("P-2"))(rows)
    assert batch["input_values"][0, :2].eq(0.5).all() and not batch["input_values"][0, 2:].any()
    assert batch["lead_mask"][0].tolist() == [True, True] + [False] * 10
    with pytest.raises(ValueError, match="unknown lead set 'P-4'"):
        finetune.lead_keep_mask("P-4")


def test_finetune_on_a_lead_subset_end_to_end(model_folder, dataset_path, tmp_path):
    finetune.main(common(model_folder, dataset_path, tmp_path) + [
        "--leads", "P-3", "--epochs", "2", "--train_batch_size", "12", "--learning_rate", "1e-3", "--device", "cpu",
    ])
    (entry,) = check_entries(tmp_path, "fine-tune")
    assert entry["leads"] == "P-3" and entry["metric"] == "macro_auroc"
    extra = entry["details"]
    assert extra["leads"] == ["I", "II", "V2"]
    assert extra["lead_set"] == "P-3" and "best validation" in extra["selection"]
    assert Path(extra["best_checkpoint"]).is_dir()
    assert 0.0 <= extra["best_validation_metric"] <= 1.0
    assert extra["trainable_parameters"] == extra["total_parameters"]


def test_finetune_with_lora_trains_only_adapters_and_head(model_folder, dataset_path, tmp_path):
    finetune.main(common(model_folder, dataset_path, tmp_path) + [
        "--epochs", "1", "--train_batch_size", "12", "--lora_rank", "2", "--no_figures", "--device", "cpu",
    ])
    (entry,) = read_rows(tmp_path / "results.json")
    extra = entry["details"]
    assert extra["lora_rank"] == 2 and 0 < extra["trainable_parameters"] < extra["total_parameters"] / 4
    assert entry["leads"] == "12" and extra["leads"] == list(CANONICAL_LEADS)


def identification_dataset(path) -> None:
    """Train identities with 2 segments each; validation / test identities with a gallery and a probe segment."""
    time = np.arange(5000) / 500.0

    def rows(count: int, roles: tuple[str, ...], seed: int) -> dict:
        rng = np.random.default_rng(seed)
        columns = {"record_id": [], "identity": [], "role": [], "ecg": [], "lead_mask": []}
        for identity in range(count):
            amplitude, frequency = rng.uniform(0.3, 1.5, (12, 1)), rng.uniform(0.8, 2.0)
            for role in roles:
                signal = amplitude * np.sin(2 * np.pi * frequency * time)[None] + rng.normal(0, 0.05, (12, 5000))
                for key, value in (("record_id", f"{seed}_{identity}"), ("identity", identity), ("role", role),
                                   ("ecg", encode_ecg(signal)), ("lead_mask", [True] * 12)):
                    columns[key].append(value)
        return columns

    features = Features({"record_id": Value("string"), "identity": Value("int64"), "role": Value("string"),
                         "ecg": ECG_FEATURE, "lead_mask": LEAD_MASK_FEATURE})
    DatasetDict({
        "train": Dataset.from_dict(rows(5, ("train", "train"), 0), features=features),
        "validation": Dataset.from_dict(rows(4, ("gallery", "probe"), 1), features=features),
        "test": Dataset.from_dict(rows(4, ("gallery", "probe"), 2), features=features),
    }).save_to_disk(str(path))


def test_patient_identification_is_scored_by_gallery_probe_accuracy(model_folder, tmp_path):
    identification_dataset(tmp_path / "id_tiny")
    finetune.main(common(model_folder, tmp_path / "id_tiny", tmp_path / "out") + [
        "--epochs", "1", "--train_batch_size", "5", "--device", "cpu", "--no_figures",
    ])
    (entry,) = read_rows(tmp_path / "out" / "results.json")
    assert entry["task"] == "id_tiny" and entry["metric"] == "accuracy" and entry["n_test"] == 4
    assert entry["value"] in {0.0, 0.25, 0.5, 0.75, 1.0}  # 4 probes
    assert entry["details"]["probes"] == 4 and entry["details"]["gallery"] == 4
    assert entry["details"]["learning_rate"] == 1e-4


def test_finetune_bad_arguments(model_folder, dataset_path, tmp_path):
    with pytest.raises(ValueError, match="unknown lead set"):
        finetune.main(common(model_folder, dataset_path, tmp_path) + ["--leads", "V1-only"])
    with pytest.raises(ValueError, match="lora_rank"):
        finetune.main(common(model_folder, dataset_path, tmp_path) + ["--lora_rank", "0"])


# ------------------------------------------------------------------------------------------------ domain transfer


def test_domain_transfer_scores_mapped_target_classes(model_folder, dataset_path, tmp_path):
    domain_transfer.main(common(model_folder, dataset_path, tmp_path) + ["--source", "ptbxl_super"])
    (entry,) = check_entries(tmp_path, "domain-transfer")
    assert entry["task"] == "ptbxl-super->cpsc2018"
    # PTBXL-Super -> CPSC2018 (paper Tab. 11): NORM, CD -> 1AVB/CRBBB/CLBBB, STTC -> STE/STD; VPC, PAC, AFIB unmapped
    assert set(entry["per_label"]) == {"NORM", "1AVB", "CRBBB", "CLBBB", "STE", "STD"}
    assert entry["details"]["mapping"]["CRBBB"] == ["CD"] and entry["details"]["mapping"]["STD"] == ["STTC"]


def test_domain_transfer_takes_the_best_source_score_per_target():
    mapping = domain_transfer.transfer_mapping("cpsc2018", "csn")
    assert sorted(mapping["STE"]) == ["STD", "STE"]
    source_scores = np.array([[0.2, 0.9], [0.7, 0.1]])
    scores = domain_transfer.target_scores(source_scores, ["STE", "STD"], {"STE": ["STE", "STD"], "STDD": ["STD"]})
    assert scores.tolist() == [[0.9, 0.9], [0.7, 0.1]]
    with pytest.raises(ValueError, match="no domain-transfer mapping"):
        domain_transfer.transfer_mapping("csn", "ptbxl_super")


# ------------------------------------------------------------------------------------------------ datasets


def test_dataset_registry_and_bad_dataset_input(model_folder, dataset_path, tmp_path):
    data = load_evaluation_data(dataset_path=str(dataset_path))
    assert data.label_set == "cpsc2018" and data.codes == CODES and data.task == "classification"
    assert infer_label_set(["AQW", "AFIB", "SR"]) == "csn"  # a subset of exactly one set (CSN after dropping rare labels)
    assert infer_label_set(["NORM"]) is None  # in several sets: ambiguous
    with pytest.raises(ValueError, match="unknown dataset 'mitbih'"):
        zero_shot.main(["--model", str(model_folder), "--dataset", "mitbih", "--root", str(tmp_path), "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="needs --root"):
        load_evaluation_data("ptbxl_super")
    with pytest.raises(ValueError, match="not a folder"):
        load_evaluation_data(dataset_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not codes of label set 'ptbxl_super'"):
        load_evaluation_data(dataset_path=str(dataset_path), label_set="ptbxl_super")


def test_zero_shot_by_dataset_name_runs_the_loader(model_folder, tmp_path):
    records = [
        {"record_id": f"A{index:04d}", "labels": [index % 9 + 1], "signal": sine_twelve_leads(500, 10, 0.8 + 0.1 * index, index)}
        for index in range(30)
    ]
    root = write_cpsc_original_tree(tmp_path / "cpsc", records)
    zero_shot.main(["--model", str(model_folder), "--dataset", "cpsc2018", "--root", str(root), "--cache_dir",
                    str(tmp_path / "cache"), "--output_dir", str(tmp_path / "out"), "--no_progress", "--no_figures"])
    (entry,) = read_rows(tmp_path / "out" / "results.json")
    assert entry["task"] == "cpsc2018" and entry["split_source"] == "seeded"
    assert entry["n_test"] == 6  # the loader's seeded 70 / 10 / 20 split of 30 records
    assert 0.0 <= entry["value"] <= 1.0
