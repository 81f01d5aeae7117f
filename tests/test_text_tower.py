"""build_tiny_t5: a local SentencePiece T5 tokenizer + random-init T5 encoder that load with no network."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, T5EncoderModel

from cmelt.data.text_tower import build_tiny_t5

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

REPORTS = [
    "sinus rhythm normal ecg",
    "sinus bradycardia otherwise normal ecg",
    "atrial fibrillation with rapid ventricular response",
    "left bundle branch block",
    "right bundle branch block left anterior fascicular block",
    "st depression in lateral leads possible ischemia",
    "inferior infarct age undetermined",
    "sinus tachycardia with premature ventricular complexes",
    "first degree av block",
    "low qrs voltages in limb leads",
] * 20


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    return build_tiny_t5(REPORTS, tmp_path_factory.mktemp("tiny_t5"), vocab_size=128, d_model=32, num_heads=4, d_ff=64)


def test_tokenizer_uses_the_trained_pieces(tower_dir):
    tokenizer = AutoTokenizer.from_pretrained(tower_dir)
    encoded = tokenizer("sinus rhythm with st depression")
    ids = encoded["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    assert len(ids) - 1 < len("sinusrhythmwithstdepression")  # learned multi-character pieces
    assert tokenizer.decode(ids, skip_special_tokens=True) == "sinus rhythm with st depression"


def test_special_tokens_and_sentinels(tower_dir):
    tokenizer = AutoTokenizer.from_pretrained(tower_dir)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    sentinel_ids = [tokenizer.convert_tokens_to_ids(f"<extra_id_{index}>") for index in range(100)]
    assert len(set(sentinel_ids)) == 100 and tokenizer.unk_token_id not in sentinel_ids
    assert sentinel_ids[0] == len(tokenizer) - 1  # T5 order: <extra_id_0> is the last id
    assert tokenizer.mask_token is None


def test_encoder_loads_and_runs(tower_dir):
    tokenizer = AutoTokenizer.from_pretrained(tower_dir)
    model = T5EncoderModel.from_pretrained(tower_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.d_model == 32 and model.config.num_layers == 2
    batch = tokenizer(["sinus rhythm", "left bundle branch block"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, batch["input_ids"].shape[1], 32)
    assert torch.isfinite(hidden).all()


def test_same_seed_same_weights(tmp_path):
    first = build_tiny_t5(REPORTS, tmp_path / "a", vocab_size=64, d_model=16, num_heads=2, d_ff=32, seed=3)
    second = build_tiny_t5(REPORTS, tmp_path / "b", vocab_size=64, d_model=16, num_heads=2, d_ff=32, seed=3)
    state_a = T5EncoderModel.from_pretrained(first).state_dict()
    state_b = T5EncoderModel.from_pretrained(second).state_dict()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()


def test_real_reports_corpus(tmp_path):
    pandas = pytest.importorskip("pandas")
    table = SHARED_DATA / "ptbxl" / "ptbxl_database_subset.csv"
    if not table.is_file():
        pytest.skip(f"shared test data not found at {table}")
    reports = pandas.read_csv(table)["report"].dropna().str.lower().tolist()[:1000]
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_t5(reports, tmp_path))
    assert tokenizer.unk_token_id not in tokenizer(reports[0])["input_ids"]
    pieces = tokenizer.tokenize("sinusrhythmus normales ekg")
    assert "▁ekg" in pieces and len(pieces) <= 6  # frequent words are one or two pieces


def test_empty_corpus_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-empty text"):
        build_tiny_t5(["", "   "], tmp_path)
