"""Evaluation scripts end to end on a tiny model and a tiny labelled dataset (CPU, seconds each)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from transformers import AutoTokenizer

from data.ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE, encode_ecg
from data.labels import label_codes
from data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.pipeline_cmelt import load_label_descriptions
from modeling_cmelt.processing_cmelt import CMELTProcessor
from train_scripts import domain_transfer, finetune, linear_probe, zero_shot
from train_scripts.datasets_registry import infer_label_set, load_evaluation_data
from train_scripts.evaluation import CANONICAL_LEAD_NAMES, read_results

CODES = label_codes("cpsc2018")
SIZES = {"train": 36, "validation": 12, "test": 18}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    descriptions = load_label_descriptions()
    texts = [text for label_set in descriptions.values() for text in label_set.values()]
    folder = tmp_path_factory.mktemp("cmelt-eval")
    build_tiny_t5(texts, folder / "t5", vocab_size=200, d_model=32, d_ff=64)
    tokenizer = AutoTokenizer.from_pretrained(folder / "t5")
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    CMELTForPreTraining(config).save_pretrained(folder / "model")
    CMELTProcessor(CMELTFeatureExtractor(), tokenizer).save_pretrained(folder / "model")
    return folder / "model"


def labelled_rows(count: int, seed: int) -> dict:
    """Rows like the downstream loaders': class c has a c-dependent rhythm so the labels are learnable."""
    rng = np.random.default_rng(seed)
    time = np.arange(5000) / 500.0
    rows = {"record_id": [], "ecg": [], "lead_mask": [], "label_ids": [], "labels": []}
    for index in range(count):
        positives = sorted({index % len(CODES), *rng.choice(len(CODES), rng.integers(0, 2), replace=False).tolist()})
        frequency = 0.8 + 0.25 * positives[0]
        signal = np.sin(2 * np.pi * frequency * time)[None] * rng.uniform(0.5, 1.5, (12, 1))
        signal = signal + rng.normal(0, 0.05, (12, 5000))
        rows["record_id"].append(f"r{seed}_{index}")
        rows["ecg"].append(encode_ecg(signal))
        rows["lead_mask"].append([True] * 12)
        rows["label_ids"].append(positives)
        rows["labels"].append([1.0 if c in positives else 0.0 for c in range(len(CODES))])
    return rows


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    features = Features({
        "record_id": Value("string"), "ecg": ECG_FEATURE, "lead_mask": LEAD_MASK_FEATURE,
        "label_ids": Sequence(ClassLabel(names=CODES)), "labels": Sequence(Value("float32"), length=len(CODES)),
    })
    dataset_dict = DatasetDict({
        split: Dataset.from_dict(labelled_rows(size, seed), features=features)
        for seed, (split, size) in enumerate(SIZES.items())
    })
    path = tmp_path_factory.mktemp("data") / "cpsc2018_tiny"
    dataset_dict.save_to_disk(str(path))
    return path


def check_entries(output_dir, protocol: str, expected_count: int = 1) -> list[dict]:
    entries = read_results(output_dir / "results.json")  # validates the schema
    assert len(entries) == expected_count
    for entry in entries:
        assert entry["protocol"] == protocol
        value = entry["metric"]["value"]
        assert value is not None and 0.0 <= value <= 1.0
        assert all(v is None or 0.0 <= v <= 1.0 for v in entry["per_class"].values())
        for path in entry["extra"]["figures"].values():
            assert (output_dir / path).exists() or __import__("os").path.exists(path)
    return entries
