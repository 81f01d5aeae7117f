"""C-MELT model classes on tiny configs: shapes, gradients, switches, bad input, Hub round trip."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import BertConfig

from modeling_cmelt import CMELTConfig, CMELTECGConfig, CMELTForECGClassification, CMELTForPreTraining, CMELTModel
from modeling_cmelt.modeling_cmelt import CMELTECGModel

BATCH, TEXT_LEN = 4, 10


def make_batch(config: CMELTConfig, seed: int = 0, batch: int = BATCH):
    generator = torch.Generator().manual_seed(seed)
    input_values = torch.randn(batch, 12, config.ecg_config.num_samples, generator=generator)
    input_ids = torch.randint(2, config.text_config.vocab_size, (batch, TEXT_LEN), generator=generator)
    attention_mask = torch.ones(batch, TEXT_LEN, dtype=torch.long)
    attention_mask[0, 7:] = 0
    input_ids[0, 7:] = 0
    labels = torch.full((batch, TEXT_LEN), -100)
    labels[:, 2] = input_ids[:, 2]
    labels[1:, 5] = input_ids[1:, 5]
    return {
        "input_values": input_values,
        "lead_mask": torch.ones(batch, 12, dtype=torch.bool),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "is_aligned": torch.tensor([1.0, 0.0, 1.0, 1.0][:batch]),
    }


@pytest.fixture
def tiny_config():
    return CMELTConfig.from_preset("tiny")


def test_paper_config_is_the_default():
    config = CMELTConfig()
    ecg = config.ecg_config
    assert (ecg.hidden_size, ecg.num_hidden_layers, ecg.num_attention_heads, ecg.intermediate_size) == (768, 8, 12, 3072)
    assert list(ecg.conv_dim) == [256] * 4 and list(ecg.conv_kernel) == [2] * 4 and list(ecg.conv_stride) == [2] * 4
    assert ecg.num_tokens == 312 and ecg.samples_per_token == 16
    assert (ecg.num_conv_pos_embeddings, ecg.num_conv_pos_embedding_groups, config.mem_mask_ratio) == (128, 16, 0.75)
    assert config.text_config.model_type == "t5" and config.text_config.d_model == 768
    assert config.text_config.vocab_size == 32128 and config.max_text_length == 256
    assert (config.fusion_num_layers, config.fusion_num_attention_heads, config.mem_fusion_layer) == (6, 12, 3)
    assert (config.mem_decoder_hidden_size, config.mem_decoder_num_layers, config.mem_decoder_num_attention_heads) == (
        384,
        4,
        6,
    )
    assert config.mlm_probability == 0.25
    assert not config.siglep_learnable_scale and not config.siglep_normalize


def test_mem_mask_ratio_is_top_level_and_old_configs_still_load(tmp_path):
    """MEM's token-drop ratio sits with the other `mem_*` fields; configs saved with `ecg_config.mask_ratio` keep it."""
    config = CMELTConfig.from_preset("tiny", mem_mask_ratio=0.6)
    assert config.mem_mask_ratio == 0.6 and not hasattr(config.ecg_config, "mask_ratio")
    assert CMELTConfig.from_preset("tiny", ecg_config={"mask_ratio": 0.4}).mem_mask_ratio == 0.4
    assert CMELTConfig(ecg_config=CMELTECGConfig(mask_ratio=0.3)).mem_mask_ratio == 0.3
    CMELTConfig.from_preset("tiny").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("mem_mask_ratio")
    saved["ecg_config"]["mask_ratio"] = 0.55  # the layout before the move
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = CMELTConfig.from_pretrained(tmp_path)
    assert loaded.mem_mask_ratio == 0.55 and "mask_ratio" not in loaded.ecg_config.to_dict()
    with pytest.raises(StrictDataclassClassValidationError, match="mem_mask_ratio"):
        CMELTConfig.from_preset("tiny", mem_mask_ratio=1.0)


def test_paper_model_parameter_counts_per_part():
    with torch.device("meta"):
        model = CMELTForPreTraining(CMELTConfig())
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(p.numel() for p in model.parameters())
    print("\nparameters per part:", json.dumps(parts), "total", total)
    assert 55e6 < parts["ecg_model"] < 70e6  # 8 x 7.1M layers + conv stack + positional conv
    assert 105e6 < parts["text_model"] < 115e6  # Flan-T5-base encoder incl. its 24.7M embedding
    assert 105e6 < parts["fusion"] < 120e6  # 2 x 6 layers of self + cross attention + FFN
    assert sum(parts.values()) == total


def test_shapes_of_every_head(tiny_config):
    batch = make_batch(tiny_config)
    model = CMELTForPreTraining(tiny_config)
    output = model(**batch)
    num_tokens = tiny_config.ecg_config.num_tokens
    assert output.loss.dim() == 0
    assert output.mem_predictions.shape == (BATCH, num_tokens, 12 * tiny_config.ecg_config.samples_per_token)
    assert output.mlm_logits.shape == (int((batch["labels"] != -100).sum()), tiny_config.text_config.vocab_size)
    assert output.etm_logits.shape == (BATCH,)
    assert output.logits_per_ecg.shape == (BATCH, BATCH)

    dual = CMELTModel(tiny_config)
    out = dual(batch["input_values"][:3], batch["input_ids"], batch["attention_mask"])
    assert out.logits_per_ecg.shape == (3, BATCH) and out.logits_per_text.shape == (BATCH, 3)
    assert out.ecg_embeds.shape == (3, tiny_config.projection_dim)

    classifier = CMELTForECGClassification(CMELTConfig.from_preset("tiny", num_labels=5))
    multi_hot = torch.zeros(BATCH, 5)
    multi_hot[0, 1] = 1
    result = classifier(batch["input_values"], labels=multi_hot)
    assert result.logits.shape == (BATCH, 5) and result.loss.dim() == 0
    assert classifier.config.problem_type == "multi_label_classification"


@pytest.mark.parametrize("learnable", [False, True])
def test_every_trainable_parameter_gets_a_gradient(learnable):
    config = CMELTConfig.from_preset("tiny", siglep_learnable_scale=learnable, siglep_normalize=learnable)
    model = CMELTForPreTraining(config)
    model(**make_batch(config)).loss.backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert without == []
    assert (model.logit_scale is not None) == learnable


def test_random_masking_is_reproducible_with_noise(tiny_config):
    encoder = CMELTECGModel(tiny_config.ecg_config).eval()
    x = torch.randn(2, 12, tiny_config.ecg_config.num_samples)
    tokens = tiny_config.ecg_config.num_tokens
    noise = torch.rand(2, tokens)
    first = encoder(x, mask_ratio=0.75, noise=noise)
    second = encoder(x, mask_ratio=0.75, noise=noise)
    kept = int(tokens * 0.25)
    assert first.last_hidden_state.shape == (2, 1 + kept, tiny_config.ecg_config.hidden_size)
    assert torch.equal(first.token_mask, second.token_mask)
    assert torch.allclose(first.last_hidden_state, second.last_hidden_state)
    # the kept tokens are those with the smallest noise
    expected_kept = torch.zeros(2, tokens)
    expected_kept.scatter_(1, noise.argsort(dim=1)[:, :kept], 1.0)
    assert torch.equal(first.token_mask, 1.0 - expected_kept)


def test_lead_mask_zeroes_leads(tiny_config):
    encoder = CMELTECGModel(tiny_config.ecg_config).eval()
    x = torch.randn(1, 12, tiny_config.ecg_config.num_samples)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 3:] = False
    zeroed = x.clone()
    zeroed[:, 3:] = 0
    masked_out = encoder(x, lead_mask=mask).pooler_output
    assert torch.allclose(masked_out, encoder(zeroed).pooler_output, atol=1e-6)
    assert not torch.allclose(masked_out, encoder(x).pooler_output, atol=1e-4)


def test_loss_switches_remove_exactly_their_loss(tiny_config):
    batch = make_batch(tiny_config)
    names = ["mlm", "mem", "etm", "siglep"]
    noise = torch.rand(BATCH, tiny_config.ecg_config.num_tokens)
    for off in names:
        config = CMELTConfig.from_preset("tiny", **{f"use_{off}": False})
        torch.manual_seed(0)
        output = CMELTForPreTraining(config).eval()(**batch, noise=noise)
        assert getattr(output, f"loss_{off}") is None
        present = [getattr(output, f"loss_{name}") for name in names if name != off]
        assert all(loss is not None for loss in present)
        assert torch.allclose(output.loss, sum(present))


def test_loss_weights_scale_the_total(tiny_config):
    batch = make_batch(tiny_config)
    config = CMELTConfig.from_preset("tiny", mlm_loss_weight=2.0, siglep_loss_weight=0.5)
    output = CMELTForPreTraining(config).eval()(**batch)
    expected = 2.0 * output.loss_mlm + output.loss_mem + output.loss_etm + 0.5 * output.loss_siglep
    assert torch.allclose(output.loss, expected)


def test_etm_labels_are_honoured(tiny_config):
    model = CMELTForPreTraining(tiny_config).eval()
    batch = make_batch(tiny_config)
    noise = torch.rand(BATCH, tiny_config.ecg_config.num_tokens)
    output = model(**batch, noise=noise)
    logits, target = output.etm_logits, batch["is_aligned"]
    expected = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(output.loss_etm, expected.mean(), atol=1e-6)
    flipped = model(**{**batch, "is_aligned": 1 - target}, noise=noise)
    assert not torch.allclose(flipped.loss_etm, output.loss_etm)


def test_text_padding_does_not_leak(tiny_config):
    """Reference defect 3: the text tower must see the attention mask, so pad content cannot matter."""
    config = CMELTConfig.from_preset("tiny", text_pooling="mean")
    model = CMELTModel(config).eval()
    ids = torch.randint(2, config.text_config.vocab_size, (1, TEXT_LEN))
    mask = torch.ones(1, TEXT_LEN, dtype=torch.long)
    mask[:, 6:] = 0
    other = ids.clone()
    other[:, 6:] = torch.randint(2, config.text_config.vocab_size, (1, TEXT_LEN - 6))
    first = model.get_text_features(ids, mask).pooler_output
    second = model.get_text_features(other, mask).pooler_output
    assert torch.allclose(first, second, atol=1e-5)


def test_bert_like_text_tower_works():
    text = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    config = CMELTConfig.from_preset("tiny", text_config=text.to_dict())
    assert config.text_config.model_type == "bert"
    model = CMELTForPreTraining(config)
    batch = make_batch(config)
    model(**batch).loss.backward()
    assert model.text_model.embeddings.word_embeddings.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_loss():
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0}
    config = CMELTConfig.from_preset(
        "tiny", fusion_dropout=0.0, ecg_config=no_dropout, text_config={"dropout_rate": 0.0}
    )
    batch = make_batch(config)
    noise = torch.rand(BATCH, config.ecg_config.num_tokens)
    model = CMELTForPreTraining(config)
    model.eval()
    reference = model(**batch, noise=noise).loss
    model.gradient_checkpointing_enable()
    model.train()
    checkpointed = model(**batch, noise=noise).loss
    checkpointed.backward()
    assert torch.allclose(reference, checkpointed, atol=1e-5)


def test_text_length_buckets_give_the_same_states_losses_and_gradients():
    """Grouping rows by length (`text_length_buckets`) trims padding only: the real tokens' states, the pretraining
    loss and the gradients are those of one padded call, for right- and left-padded rows alike."""
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0}
    without_dropout = {"fusion_dropout": 0.0, "ecg_config": no_dropout, "text_config": {"dropout_rate": 0.0}}
    batch = make_batch(CMELTConfig.from_preset("tiny"), batch=4)
    lengths = [3, 10, 6, 4]
    batch["attention_mask"] = torch.stack([torch.arange(TEXT_LEN) < length for length in lengths]).long()
    batch["attention_mask"][3] = batch["attention_mask"][3].flip(0)  # left-padded
    batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["labels"], -100)
    noise = torch.rand(4, CMELTConfig.from_preset("tiny").ecg_config.num_tokens)
    one_call = CMELTForPreTraining(CMELTConfig.from_preset("tiny", **without_dropout)).eval()
    grouped = CMELTForPreTraining(CMELTConfig.from_preset("tiny", text_length_buckets=3, **without_dropout)).eval()
    grouped.load_state_dict(one_call.state_dict())

    real = batch["attention_mask"].bool()
    states = [model.encode_text(batch["input_ids"], batch["attention_mask"])[0].last_hidden_state
              for model in (one_call, grouped)]
    assert torch.allclose(states[0][real], states[1][real], atol=1e-5)
    losses = [model(**batch, noise=noise).loss for model in (one_call, grouped)]
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    for loss in losses:
        loss.backward()
    embedding = [model.text_model.get_input_embeddings().weight.grad for model in (one_call, grouped)]
    assert embedding[0].abs().sum() > 0
    assert torch.allclose(embedding[0], embedding[1], atol=1e-5)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 8, 1000), r"\(batch, 12 leads, samples\)"),
        ((2, 1000, 12), r"transposed"),
        ((2, 12, 10), r"too few for the conv stack"),
        ((12, 1000), r"\(batch, 12 leads, samples\)"),
    ],
)
def test_bad_ecg_shapes_are_refused(tiny_config, shape, message):
    model = CMELTModel(tiny_config)
    with pytest.raises(ValueError, match=message):
        model.get_ecg_features(torch.randn(*shape))


def test_mismatched_batch_sizes_are_refused(tiny_config):
    batch = make_batch(tiny_config)
    model = CMELTForPreTraining(tiny_config)
    with pytest.raises(ValueError, match="same size"):
        model(**{**batch, "input_values": batch["input_values"][:2], "lead_mask": None})
    with pytest.raises(ValueError, match="batch sizes must match"):
        CMELTModel(tiny_config)(batch["input_values"][:2], batch["input_ids"], return_loss=True)
    with pytest.raises(ValueError, match="lead_mask must have shape"):
        model(**{**batch, "lead_mask": torch.ones(BATCH, 8, dtype=torch.bool)})


def test_duplicate_aware_siglep_needs_report_ids(tiny_config):
    config = CMELTConfig.from_preset("tiny", siglep_duplicate_aware=True)
    model = CMELTForPreTraining(config)
    batch = make_batch(config)
    with pytest.raises(ValueError, match="report_ids"):
        model(**batch)
    ids = torch.tensor([7, 7, 3, 4])
    assert model(**batch, ecg_report_ids=ids, text_report_ids=ids).loss_siglep is not None


BLOCKED_IMPORT = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_cmelt"] = None  # the package must not be needed
    sys.modules["data"] = None
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining
    try:
        import modeling_cmelt
    except ImportError:
        pass
    else:
        raise SystemExit("the package import was not blocked")
    folder = sys.argv[1]
    batch = torch.load(sys.argv[2])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__name__ == "CMELTConfig", type(config)
    assert "transformers_modules" in type(config).__module__
    dual = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    pre = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    clf = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True, num_labels=3).eval()
    with torch.no_grad():
        out = {
            "logits_per_ecg": dual(batch["input_values"], batch["input_ids"], batch["attention_mask"]).logits_per_ecg,
            "loss": pre(**batch).loss,
            "clf_logits_shape": torch.tensor(clf(batch["input_values"]).logits.shape),
        }
    torch.save(out, sys.argv[3])
    """
)


def test_remote_code_round_trip_without_the_package(tmp_path, tiny_config):
    model = CMELTForPreTraining(tiny_config).eval()
    batch = make_batch(tiny_config)
    batch["noise"] = torch.rand(BATCH, tiny_config.ecg_config.num_tokens)
    with torch.no_grad():
        expected_loss = model(**batch).loss
        expected_logits = CMELTModel.forward(
            model, batch["input_values"], batch["input_ids"], batch["attention_mask"]
        ).logits_per_ecg
    folder = tmp_path / "cmelt"
    model.save_pretrained(folder)
    saved = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_cmelt.py", "configuration_cmelt.py", "loss_cmelt.py"} <= saved
    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_IMPORT)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert torch.allclose(out["loss"], expected_loss, atol=1e-6)
    assert torch.allclose(out["logits_per_ecg"], expected_logits, atol=1e-6)
    assert out["clf_logits_shape"].tolist() == [BATCH, 3]


def test_frozen_encoder_stays_in_eval_mode_without_forward_side_effects(tiny_config):
    model = CMELTForECGClassification(CMELTConfig.from_preset("tiny", num_labels=3))
    model.freeze_ecg_encoder()
    model.train()
    assert model.training and model.classifier.training and not model.ecg_model.training
    model.freeze_ecg_encoder(False)
    assert model.ecg_model.training
    model.eval()
    model(torch.randn(2, 12, tiny_config.ecg_config.num_samples))
    assert not model.ecg_model.training  # forward never changes a module's mode


def test_saved_config_lists_every_auto_class(tmp_path, tiny_config):
    CMELTModel(tiny_config).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForAudioClassification"}
