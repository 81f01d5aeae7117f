"""Deviations from the reference code that change results (issue 11): negatives, Siglep on clean text, the
reference head options, MEM decoder activation, positional-conv init and weight decay."""

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from cmelt.data.collator import CMELTPretrainingCollator
from modeling_cmelt import CMELTConfig, CMELTForPreTraining, CMELTModel
from modeling_cmelt.loss_cmelt import siglep_targets
from tests.test_modeling import make_batch
from tests.test_pretraining import lookup, processor, tiny_corpus  # noqa: F401  (module fixture)


def test_random_negatives_get_etm_label_zero_and_a_different_report(processor):  # noqa: F811
    rows = list(tiny_corpus(num_rows=24))
    collator = CMELTPretrainingCollator(processor, negatives="random", seed=5)
    batch = collator(rows[:16])
    negative = ~batch["is_aligned"].bool()
    assert 7 <= int(negative.sum()) <= 9  # int(0.5 * 16 + U(0, 1)), each swapped row had a partner
    assert not torch.any(batch["text_report_ids"][negative] == batch["ecg_report_ids"][negative])
    # the negative text is the report of another row of the batch, and MLM labels describe that text
    batch_reports = {int(r) for r in batch["ecg_report_ids"]}
    assert {int(r) for r in batch["text_report_ids"][negative]} <= batch_reports
    targets = siglep_targets(16, 16, is_aligned=batch["is_aligned"])
    assert torch.all(targets.diagonal()[negative] == -1) and torch.all(targets.diagonal()[~negative] == 1)


def test_no_negatives_and_unknown_modes(processor):  # noqa: F811
    rows = list(tiny_corpus())
    batch = CMELTPretrainingCollator(processor, negatives="none")(rows[:8])
    assert batch["is_aligned"].bool().all()
    with pytest.raises(ValueError, match="negatives"):
        CMELTPretrainingCollator(processor, negatives="farthest")
    with pytest.raises(ValueError, match="report_texts"):
        CMELTPretrainingCollator(processor, negatives="n3s")


def test_random_negatives_skip_a_batch_of_one_report(processor):  # noqa: F811
    rows = [dict(row, report_id=0, report="sinus rhythm normal ecg") for row in list(tiny_corpus())[:6]]
    batch = CMELTPretrainingCollator(processor, negatives="random")(rows)
    assert batch["is_aligned"].bool().all()  # no partner with a different report: nothing is mislabelled


@pytest.mark.parametrize("head", ["pool_project", "fusion_projection"])
def test_siglep_text_does_not_change_with_mlm_masking(head):
    overrides = {"projection_dim": None} if head == "fusion_projection" else {}
    config = CMELTConfig.from_preset("tiny", siglep_head=head, **overrides)
    torch.manual_seed(0)
    model = CMELTForPreTraining(config).eval()
    batch = make_batch(config)
    noise = torch.rand(4, config.ecg_config.num_tokens)
    clean = batch["input_ids"].clone()
    differently_masked = clean.clone()
    differently_masked[batch["labels"] != -100] = 3  # another mask token at the same positions
    first = model(**{**batch, "input_ids": clean}, noise=noise)
    second = model(**{**batch, "input_ids": differently_masked}, noise=noise)
    torch.testing.assert_close(first.logits_per_ecg, second.logits_per_ecg)
    torch.testing.assert_close(first.loss_siglep, second.loss_siglep)
    assert not torch.allclose(first.loss_mlm, second.loss_mlm)  # fusion and MLM do see the masked text
    # and the Siglep text embedding is the dual encoder's embedding of the clean report
    text = model.get_text_features(clean, batch["attention_mask"]).pooler_output
    ecg = model.get_ecg_features(batch["input_values"], batch["lead_mask"], mask_ratio=config.mem_mask_ratio, noise=noise).pooler_output
    torch.testing.assert_close(first.logits_per_ecg, ecg @ text.t())


def test_siglep_on_masked_text_when_switched_off():
    config = CMELTConfig.from_preset("tiny", siglep_clean_text=False)
    model = CMELTForPreTraining(config).eval()
    batch = make_batch(config)
    masked = batch["input_ids"].clone()
    masked[batch["labels"] != -100] = 3
    noise = torch.rand(4, config.ecg_config.num_tokens)
    assert not torch.allclose(model(**batch, noise=noise).logits_per_ecg, model(**{**batch, "input_ids": masked}, noise=noise).logits_per_ecg)


@pytest.mark.parametrize("clean_ecg", [True, False])
def test_siglep_ecg_sees_every_token_with_siglep_clean_ecg(clean_ecg):
    """With `siglep_clean_ecg` Siglep scores the whole ECG (the zero-shot embedding), whatever MEM drops; MEM and
    fusion still see the masked ECG. Off, Siglep's ECG embedding follows the MEM draw."""
    config = CMELTConfig.from_preset("tiny", siglep_clean_ecg=clean_ecg, mem_mask_ratio=0.5)
    torch.manual_seed(0)
    model = CMELTForPreTraining(config).eval()
    batch = make_batch(config)
    first = model(**batch, noise=torch.rand(4, config.ecg_config.num_tokens))
    second = model(**batch, noise=torch.rand(4, config.ecg_config.num_tokens))
    assert not torch.allclose(first.loss_mem, second.loss_mem)
    assert torch.allclose(first.logits_per_ecg, second.logits_per_ecg) == clean_ecg
    if clean_ecg:
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        ecg = model.get_ecg_features(batch["input_values"], batch["lead_mask"]).pooler_output
        scale, bias = model.logit_scale_and_bias()
        torch.testing.assert_close(first.logits_per_ecg, ecg @ text.t() * scale + bias)


def test_siglep_own_report_makes_every_row_a_positive(processor):  # noqa: F811
    """With `siglep_own_report` the collator also hands over each ECG's own report, unmasked, and Siglep scores
    the ECGs against those: a swapped-in negative still feeds fusion and ETM but no longer takes a row's positive.
    The loss equals that of the same ECGs fed their own reports with no negatives; without the switch it does not."""
    config = CMELTConfig.from_preset(
        "tiny", siglep_own_report=True, text_config={"vocab_size": len(processor.tokenizer)},
        ecg_config={"num_samples": 1000},
    )
    rows = list(tiny_corpus())[:8]
    batch = CMELTPretrainingCollator(processor, report_texts=lookup, seed=3, config=config)(rows)
    negative = ~batch["is_aligned"].bool()
    assert negative.any()
    own = processor.tokenizer([row["report"] for row in rows], padding="longest", return_tensors="pt")
    torch.testing.assert_close(batch["siglep_input_ids"], own["input_ids"])  # own reports, nothing masked
    assert not torch.equal(batch["input_ids"][negative], own["input_ids"][negative][:, : batch["input_ids"].shape[1]])
    torch.manual_seed(0)
    model = CMELTForPreTraining(config).eval()
    with torch.no_grad():
        swapped = model(**batch)
        fed_own = model(
            input_values=batch["input_values"], lead_mask=batch["lead_mask"], noise=batch["noise"],
            input_ids=own["input_ids"], attention_mask=own["attention_mask"],
        )
        torch.testing.assert_close(swapped.loss_siglep, fed_own.loss_siglep)
        model.config.siglep_own_report = False  # the paper: the swapped text, its diagonal a negative
        paper = model(**{key: value for key, value in batch.items() if not key.startswith("siglep_")})
    assert not torch.allclose(paper.loss_siglep, swapped.loss_siglep)
    assert "siglep_input_ids" not in CMELTPretrainingCollator(processor, report_texts=lookup)(rows)


def test_siglep_own_report_refuses_negatives_without_the_own_reports():
    config = CMELTConfig.from_preset("tiny", siglep_own_report=True)
    batch = make_batch(config)  # row 1 is a negative
    with pytest.raises(ValueError, match="siglep_input_ids"):
        CMELTForPreTraining(config)(**batch)
    batch["is_aligned"] = torch.ones(4)  # no negatives: the fed reports are the own reports
    assert CMELTForPreTraining(config)(**batch).loss_siglep is not None


def test_reference_head_shares_the_fusion_input_projection():
    config = CMELTConfig.from_preset("tiny", siglep_head="fusion_projection", projection_dim=None, etm_head="two_class")
    model = CMELTForPreTraining(config)
    assert isinstance(model.fusion.text_input_projection, torch.nn.Identity)
    assert not any(name.startswith("fusion.text_input_projection") for name, _ in model.named_parameters())
    assert model.text_projection.out_features == config.fusion_hidden_size
    # the projection gets gradient from fusion alone (Siglep off), so it is the same weights that feed fusion
    only_fusion = CMELTForPreTraining(CMELTConfig.from_preset("tiny", siglep_head="fusion_projection", projection_dim=None, use_siglep=False))
    only_fusion(**make_batch(only_fusion.config)).loss.backward()
    assert only_fusion.text_projection.weight.grad.abs().sum() > 0
    # the embedding is pooler(projection(token 0)): projecting the sequence first gives the same
    batch = make_batch(config)
    model.eval()
    hidden = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    expected = model.text_pooler(model.text_projection(hidden)[:, 0])
    torch.testing.assert_close(model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output, expected)
    output = model(**batch)
    assert output.etm_logits.shape == (4, 2)
    torch.testing.assert_close(output.etm_probs, output.etm_logits.softmax(-1)[:, 1])


def test_reference_head_refuses_a_separate_projection_size():
    with pytest.raises(StrictDataclassClassValidationError, match="fusion width"):
        CMELTConfig.from_preset("tiny", siglep_head="fusion_projection", projection_dim=8)


def test_mlm_logits_cover_every_position_without_labels():
    config = CMELTConfig.from_preset("tiny")
    model = CMELTForPreTraining(config).eval()
    batch = make_batch(config)
    noise = torch.rand(4, config.ecg_config.num_tokens)
    output = model(**{**batch, "labels": None}, noise=noise)
    assert output.mlm_logits.shape == (*batch["input_ids"].shape, config.text_config.vocab_size)
    assert output.loss_mlm is None
    masked = model(**batch, noise=noise).mlm_logits  # with labels: the masked positions only, same values
    torch.testing.assert_close(masked, output.mlm_logits[batch["labels"] != -100], rtol=1e-4, atol=1e-5)


def test_mem_decoder_uses_the_configured_activation_and_epsilon():
    config = CMELTConfig()
    assert (config.mem_decoder_hidden_act, config.mem_decoder_layer_norm_eps) == ("quick_gelu", 1e-5)
    tiny = CMELTConfig.from_preset("tiny", mem_decoder_hidden_act="relu", mem_decoder_layer_norm_eps=1e-3)
    layer = CMELTForPreTraining(tiny).mem_decoder.layers[0]
    assert layer.attention_norm.eps == 1e-3 and layer.feed_forward_norm.eps == 1e-3
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(layer.feed_forward.activation(x), torch.relu(x))
    quick = CMELTForPreTraining(CMELTConfig.from_preset("tiny")).mem_decoder.layers[0].feed_forward.activation
    torch.testing.assert_close(quick(x), x * torch.sigmoid(1.702 * x))


@pytest.mark.parametrize("model_class", [CMELTModel, CMELTForPreTraining])
def test_positional_conv_gets_the_reference_initialisation(model_class):
    config = CMELTConfig.from_preset("demo")
    conv = model_class(config).ecg_model.pos_conv_embed.conv
    expected_std = 2 * math.sqrt(1 / (conv.kernel_size[0] * conv.in_channels))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.all(conv.bias == 0)


def test_weight_decay_skips_tokens_type_embeddings_and_logit_scale(tmp_path):
    from cmelt.train_scripts.pretraining import CMELTTrainingArguments
    from cmelt.train_scripts.trainer import CMELTPretrainingTrainer

    config = CMELTConfig.from_preset("tiny", siglep_learnable_scale=True, siglep_normalize=True)
    model = CMELTForPreTraining(config)
    trainer = CMELTPretrainingTrainer(model=model, args=CMELTTrainingArguments(output_dir=str(tmp_path), report_to="none"))
    decayed = set(trainer.get_decay_parameter_names(model))
    for name in ("ecg_model.cls_token", "mem_decoder.mask_token", "fusion.modality_type_embeddings.weight", "logit_scale", "logit_bias"):
        assert name not in decayed, name
    assert "fusion.text_layers.0.self_attention.q_proj.weight" in decayed
