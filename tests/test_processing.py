"""Report cleaning, CMELTProcessor (feature extractor + tiny local T5 tokenizer) and the MLM masking convention."""

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerFast

from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from cmelt.data.collator import mask_token_id, mask_tokens
from cmelt.data.mimic_iv_ecg import merge_reports
from modeling_cmelt.processing_cmelt import CMELTProcessor, clean_report

REPORTS = [
    "sinus rhythm normal ecg",
    "sinus bradycardia otherwise normal ecg",
    "atrial fibrillation with rapid ventricular response",
    "left bundle branch block",
    "st depression in lateral leads possible ischemia",
    "inferior infarct age undetermined",
    "sinus tachycardia with premature ventricular complexes",
    "first degree av block",
] * 10


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tower = build_tiny_t5(REPORTS, tmp_path_factory.mktemp("t5"), vocab_size=128, d_model=16, num_heads=2, d_ff=32)
    return CMELTProcessor(CMELTFeatureExtractor(), AutoTokenizer.from_pretrained(tower))


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("Sinus rhythm. Normal EKG.", "sinus rhythm normal ecg"),
        ("*** Critical Test Result: STEMI ***", "critical test result stemi"),
        ("Sinus rhythm =- Abnormal ECG =", "sinus rhythm abnormal ecg"),
        ("ST-T abnormality, lateral leads; QRS(T) abnormal", "st-t abnormality lateral leads qrs t abnormal"),
        ("PR 0.22 s, BP 140/80, ratio 2:1, 70% -- rule out", "pr 0.22 s bp 140/80 ratio 2:1 70% rule out"),
        ("  multiple\twhitespace\n\nhere  ", "multiple whitespace here"),
        ("-leading and trailing- dashes --", "leading and trailing dashes"),
        ("Linkstyp, überdrehter Lagetyp", "linkstyp überdrehter lagetyp"),
        ("patient's_report", "patient's report"),
        ("", ""),
    ],
)
def test_clean_report(raw, cleaned):
    assert clean_report(raw) == cleaned


def test_clean_report_non_string():
    assert clean_report(float("nan")) == "" and clean_report(None) == ""


def test_merge_reports():
    statements = ["Sinus rhythm.", float("nan"), None, "", "   ", "Left axis deviation", "Abnormal EKG ***"]
    assert merge_reports(statements) == "sinus rhythm left axis deviation abnormal ecg"
    assert merge_reports([None, math.nan]) == ""


def test_processor_outputs(processor):
    ecg = np.random.default_rng(0).normal(size=(2, 12, 6000)).astype(np.float32)
    output = processor(ecg=ecg, text=["Sinus rhythm. Normal EKG.", "Left bundle branch block"], sampling_rate=500)
    assert output["input_values"].shape == (2, 12, 5000) and output["input_values"].dtype == torch.float32
    assert output["lead_mask"].dtype == torch.bool and output["lead_mask"].all()
    assert output["input_ids"].shape == output["attention_mask"].shape and output["input_ids"].shape[0] == 2
    tokenizer = processor.tokenizer
    first = output["input_ids"][0][output["attention_mask"][0].bool()].tolist()
    assert first == tokenizer("sinus rhythm normal ecg")["input_ids"]
    raw = processor(text="Normal EKG.", clean_text=False)
    assert raw["input_ids"][0].tolist() == tokenizer("Normal EKG.")["input_ids"]
    assert set(processor(text="x", return_tensors=None)) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="ecg"):
        processor()


def test_processor_truncation(processor):
    long_text = " ".join(["sinus rhythm"] * 200)
    output = processor(text=[long_text, "ecg"], max_length=16)
    assert output["input_ids"].shape == (2, 16)
    assert output["attention_mask"][1].sum() < 16


def test_processor_round_trip_with_remote_code(processor, tmp_path):
    processor.feature_extractor.normalization = "zscore"
    try:
        processor.save_pretrained(tmp_path)
    finally:
        processor.feature_extractor.normalization = "none"
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "CMELTProcessor"
    assert type(loaded.feature_extractor).__name__ == "CMELTFeatureExtractor"
    assert loaded.feature_extractor.normalization == "zscore"
    assert mask_token_id(loaded.tokenizer) == mask_token_id(processor.tokenizer)
    text = ["sinus bradycardia", "first degree av block"]
    assert torch.equal(loaded(text=text)["input_ids"], processor(text=text)["input_ids"])


def test_mask_token_id_variants(processor):
    assert processor.tokenizer.mask_token is None
    assert mask_token_id(processor.tokenizer) == processor.tokenizer.convert_tokens_to_ids("<extra_id_0>")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "sinus": 3, "rhythm": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    with_mask = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    assert mask_token_id(with_mask) == 2
    without = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    with pytest.raises(ValueError, match="mask token"):
        mask_token_id(without)


def test_mask_tokens_uses_the_configured_mask_token(processor):
    """The model config's `mlm_mask_token` is the token MLM masking writes (T5 has no mask token)."""
    sentinel = "<extra_id_5>"
    ids = processor(text=["sinus rhythm normal ecg with first degree av block"] * 8)["input_ids"]
    masked, labels = mask_tokens(processor.tokenizer, ids, mlm_probability=0.9, generator=torch.Generator().manual_seed(0), mask_token=sentinel)
    written = set(masked[labels != -100].tolist()) & {processor.tokenizer.convert_tokens_to_ids(t) for t in ("<extra_id_0>", sentinel)}
    assert written == {processor.tokenizer.convert_tokens_to_ids(sentinel)}


def _batch(processor, size=64):
    texts = [REPORTS[index % 8] + (" with st depression" if index % 3 else "") for index in range(size)]
    return processor(text=texts)


def test_mask_tokens_never_touches_special_or_padding(processor):
    batch = _batch(processor)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(processor.tokenizer, ids, attention, mlm_probability=0.9, generator=torch.Generator().manual_seed(0))
    special = torch.isin(ids, torch.tensor(processor.tokenizer.all_special_ids))
    protected = special | (attention == 0)
    assert protected.any() and (attention == 0).any()
    assert torch.equal(masked[protected], ids[protected])
    assert (labels[protected] == -100).all()
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])
    assert batch["input_ids"].data_ptr() == ids.data_ptr() and not torch.equal(masked, ids)


def test_mask_tokens_rates(processor):
    batch = _batch(processor, size=512)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(processor.tokenizer, ids, attention, mlm_probability=0.25, generator=torch.Generator().manual_seed(1))
    special = torch.isin(ids, torch.tensor(processor.tokenizer.all_special_ids))
    candidates = (~special) & attention.bool()
    selected = labels != -100
    rate = selected.sum().item() / candidates.sum().item()
    assert abs(rate - 0.25) < 0.02
    to_mask = (masked == mask_token_id(processor.tokenizer)) & selected
    unchanged = (masked == ids) & selected
    assert abs(to_mask.sum().item() / selected.sum().item() - 0.8) < 0.04
    assert abs(unchanged.sum().item() / selected.sum().item() - 0.1) < 0.04  # plus rare random == original
    replaced = selected & ~to_mask & ~unchanged
    assert not torch.isin(masked[replaced], torch.tensor(processor.tokenizer.all_special_ids)).any()


def test_mask_tokens_deterministic_with_generator(processor):
    batch = _batch(processor)
    first = mask_tokens(processor.tokenizer, batch["input_ids"], batch["attention_mask"], 0.3, torch.Generator().manual_seed(5))
    second = mask_tokens(processor.tokenizer, batch["input_ids"], batch["attention_mask"], 0.3, torch.Generator().manual_seed(5))
    third = mask_tokens(processor.tokenizer, batch["input_ids"], batch["attention_mask"], 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], third[1])


def test_mask_tokens_bad_probability(processor):
    batch = _batch(processor, size=2)
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(processor.tokenizer, batch["input_ids"], batch["attention_mask"], 1.5)
