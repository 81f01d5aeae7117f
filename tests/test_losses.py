"""Each pretraining loss against its formula, on hand-made tensors."""

import math

import numpy as np
import pytest
import torch

from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.loss_cmelt import etm_loss, etm_match_probability, mem_loss, mlm_loss, patchify_ecg, siglep_loss, siglep_targets


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def siglep_by_hand(ecg, text, scale, bias, positive):
    """-1/B sum_i sum_j log sigmoid(y_ij (scale x_i . t_j + bias)), written as plain loops."""
    total = 0.0
    for i in range(len(ecg)):
        for j in range(len(text)):
            z = scale * sum(a * b for a, b in zip(ecg[i], text[j])) + bias
            y = 1.0 if positive(i, j) else -1.0
            total += log_sigmoid(y * z)
    return -total / len(ecg)


ECG = [[1.0, 0.0], [0.5, 0.5], [0.0, -1.0]]
TEXT = [[0.8, 0.1], [0.2, 0.9], [-0.3, -0.7]]


def test_siglep_reference_variant_scale_one_no_bias():
    expected = siglep_by_hand(ECG, TEXT, 1.0, 0.0, lambda i, j: i == j)
    loss = siglep_loss(torch.tensor(ECG), torch.tensor(TEXT))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_siglep_learnable_variant_with_scale_bias_and_normalisation():
    scale, bias = 10.0, -10.0
    normed = lambda rows: [[v / math.hypot(*row) for v in row] for row in rows]  # noqa: E731
    expected = siglep_by_hand(normed(ECG), normed(TEXT), scale, bias, lambda i, j: i == j)
    ecg = torch.nn.functional.normalize(torch.tensor(ECG), dim=-1)
    text = torch.nn.functional.normalize(torch.tensor(TEXT), dim=-1)
    loss = siglep_loss(ecg, text, torch.tensor(scale), torch.tensor(bias))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_siglep_negative_pairs_flip_the_diagonal():
    aligned = torch.tensor([1.0, 0.0, 1.0])
    expected = siglep_by_hand(ECG, TEXT, 1.0, 0.0, lambda i, j: i == j and i != 1)
    loss = siglep_loss(torch.tensor(ECG), torch.tensor(TEXT), is_aligned=aligned)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_siglep_duplicate_aware_targets():
    ecg_reports = torch.tensor([5, 5, 9])
    text_reports = torch.tensor([5, 2, 9])  # ECG 1's text was swapped for report 2
    targets = siglep_targets(3, 3, ecg_report_ids=ecg_reports, text_report_ids=text_reports)
    expected = torch.tensor([[1, -1, -1], [1, -1, -1], [-1, -1, 1]], dtype=torch.float32)
    assert torch.equal(targets, expected)
    loss = siglep_loss(torch.tensor(ECG), torch.tensor(TEXT), ecg_report_ids=ecg_reports, text_report_ids=text_reports)
    by_hand = siglep_by_hand(ECG, TEXT, 1.0, 0.0, lambda i, j: expected[i, j] > 0)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_mem_loss_ignores_visible_tokens():
    torch.manual_seed(0)
    predictions, targets = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    token_mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    loss = mem_loss(predictions, targets, token_mask)
    expected = ((predictions - targets) ** 2).mean(-1)[token_mask.bool()].mean()
    assert torch.allclose(loss, expected)
    changed = predictions.clone()
    changed[token_mask == 0] += 100.0  # wreck every visible token
    assert torch.allclose(mem_loss(changed, targets, token_mask), loss)


def test_patchify_cuts_the_record_into_lead_major_patches():
    signal = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    patches = patchify_ecg(signal, num_tokens=2, samples_per_token=4, normalize=False)
    assert patches.shape == (2, 2, 12)
    # token 1 of sample 0 holds samples 4..7 of lead 0, then lead 1, then lead 2
    assert patches[0, 1].tolist() == [4, 5, 6, 7, 14, 15, 16, 17, 24, 25, 26, 27]
    flat = patchify_ecg(torch.zeros(1, 3, 8), 2, 4, normalize=True)
    assert torch.equal(flat, torch.zeros_like(flat))


def test_mem_targets_follow_the_reference_rule_whole_lead_zscore_then_patches():
    """Reference rule: cut to tokens * samples_per_token, z-score each lead over that whole record (unbiased
    variance, eps 1e-6 under the root), then cut into patches. A hand computation in numpy."""
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(2, 3, 27)).astype(np.float32)
    used = signal[:, :, :24]
    mean = used.mean(axis=-1, keepdims=True)
    var = used.var(axis=-1, ddof=1, keepdims=True)
    normed = (used - mean) / np.sqrt(var + 1e-6)
    expected = normed.reshape(2, 3, 4, 6).transpose(0, 2, 1, 3).reshape(2, 4, 18)
    got = patchify_ecg(torch.from_numpy(signal), num_tokens=4, samples_per_token=6, normalize=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mem_targets_keep_a_flat_baseline_small():
    """One beat-like bump on a flat, slightly noisy baseline: the baseline patches must stay near zero, not be
    blown up to unit variance (per-patch normalisation made them std ~1)."""
    generator = torch.Generator().manual_seed(0)
    signal = 0.01 * torch.randn(1, 1, 4992, generator=generator)
    signal[0, 0, 2000:2080] += torch.hann_window(80) * 1.5
    patches = patchify_ecg(signal, num_tokens=312, samples_per_token=16, normalize=True)[0]
    baseline = patches[torch.cat([torch.arange(0, 120), torch.arange(135, 312)])]
    assert baseline.std().item() < 0.2


def test_etm_loss_is_binary_cross_entropy():
    logits, aligned = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0))) + math.log(1 - 1 / (1 + math.exp(-0.5)))) / 3
    assert etm_loss(logits, aligned).item() == pytest.approx(expected, rel=1e-6)


def test_two_class_etm_loss_is_cross_entropy_with_class_one_aligned():
    logits, aligned = torch.tensor([[0.0, 2.0], [1.0, -1.0]]), torch.tensor([1.0, 0.0])
    expected = -(math.log(math.exp(2) / (1 + math.exp(2))) + math.log(math.exp(1) / (math.exp(1) + math.exp(-1)))) / 2
    assert etm_loss(logits, aligned).item() == pytest.approx(expected, rel=1e-6)
    probs = etm_match_probability(logits)
    assert probs.tolist() == pytest.approx([math.exp(2) / (1 + math.exp(2)), math.exp(-1) / (math.exp(1) + math.exp(-1))])
    # the binary head's probability is the sigmoid of its logit: a two-class head with logits (0, z) agrees
    z = torch.tensor([0.3, -2.0])
    assert torch.allclose(etm_match_probability(z), etm_match_probability(torch.stack([torch.zeros(2), z], 1)))


def test_mlm_loss_ignores_unmasked_positions():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [9.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, -100, 2]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(1 / (math.exp(9) + 2))) / 2
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_model_siglep_matches_loss_function_on_its_embeddings():
    config = CMELTConfig.from_preset("tiny", siglep_learnable_scale=True, siglep_normalize=True)
    model = CMELTForPreTraining(config).eval()
    x = torch.randn(3, 12, config.ecg_config.num_samples)
    ids = torch.randint(2, 100, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    labels = torch.full((3, 6), -100)
    labels[:, 1] = ids[:, 1]
    out = model(x, ids, mask, labels=labels)
    # with learnable scale/bias at SigLIP's init, logits = 10 * cos - 10
    ecg = model.get_ecg_features(x).pooler_output  # inference: no token dropping, so recompute with the same mask
    assert torch.allclose(model.logit_scale.exp(), torch.tensor([10.0])) and model.logit_bias.item() == -10.0
    assert out.logits_per_ecg.shape == (3, 3) and ecg.norm(dim=-1).allclose(torch.ones(3), atol=1e-5)
    assert torch.all(out.logits_per_ecg <= 0.0 + 1e-4)  # 10 * cos - 10 <= 0
