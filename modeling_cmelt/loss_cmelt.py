"""The four C-MELT pretraining losses, each a small function testable against its formula.

- `mlm_loss`: cross-entropy over masked report tokens.
- `mem_loss`: MSE between predicted and target ECG patches, on masked tokens only.
- `etm_loss`: (binary) cross-entropy of ECG-text matching.
- `siglep_loss`: SigLIP's sigmoid loss  -1/B sum_i sum_j log sigmoid(y_ij * (scale * x_i . t_j + bias)),
  computed over the *global* batch when running data-parallel (texts are gathered with their gradient).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not -100. `logits` (..., vocab), `labels` (...)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def patchify_ecg(input_values: torch.Tensor, num_tokens: int, samples_per_token: int, normalize: bool) -> torch.Tensor:
    """(batch, leads, samples) -> (batch, num_tokens, leads * samples_per_token): the MEM target of each token.

    The signal is cut to `num_tokens * samples_per_token` samples (5000 -> 4992 for the paper's conv stack). With
    `normalize`, each lead is z-scored over that whole cut record (unbiased variance, eps 1e-6 under the root) and
    only then cut into patches, as in the reference code: a flat baseline stretch keeps its small amplitude
    instead of being blown up to unit variance, and a zeroed (masked) lead stays zero.
    """
    batch, leads, _ = input_values.shape
    signal = input_values[:, :, : num_tokens * samples_per_token].float()
    if normalize:
        mean = signal.mean(dim=-1, keepdim=True)
        var = signal.var(dim=-1, keepdim=True, unbiased=True)
        signal = (signal - mean) / (var + 1e-6).sqrt()
    patches = signal.reshape(batch, leads, num_tokens, samples_per_token).transpose(1, 2)
    return patches.reshape(batch, num_tokens, leads * samples_per_token)


def mem_loss(predictions: torch.Tensor, targets: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens (token_mask == 1) of the per-token mean squared error; visible tokens are ignored."""
    per_token = (predictions.float() - targets.float()).pow(2).mean(dim=-1)
    token_mask = token_mask.to(per_token.dtype)
    return (per_token * token_mask).sum() / token_mask.sum().clamp(min=1.0)


def etm_loss(logits: torch.Tensor, is_aligned: torch.Tensor) -> torch.Tensor:
    """ECG-text matching loss against `is_aligned` (1 = true pair): binary cross-entropy for one logit per pair
    (batch,), cross-entropy for two logits per pair (batch, 2) with class 1 = aligned (reference code)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), is_aligned.long())
    return F.binary_cross_entropy_with_logits(logits.float(), is_aligned.to(torch.float32))


def etm_match_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(aligned) from ETM logits of either head: sigmoid of one logit, softmax class 1 of two."""
    if logits.dim() == 2:
        return logits.float().softmax(dim=-1)[:, 1]
    return logits.float().sigmoid()


def _gather_rows(tensor: torch.Tensor, sizes: list[int], with_grad: bool) -> torch.Tensor:
    """All-gather tensors whose first dimension differs across ranks (padded to the largest, then cut)."""
    padding = tensor.new_zeros((max(sizes) - tensor.shape[0], *tensor.shape[1:]))
    padded = torch.cat([tensor, padding]).contiguous()
    if with_grad:
        parts = dist.nn.functional.all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def siglep_targets(
    batch_size: int,
    num_texts: int,
    row_offset: int = 0,
    is_aligned: torch.Tensor | None = None,
    ecg_report_ids: torch.Tensor | None = None,
    text_report_ids: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """+1 / -1 targets (batch_size, num_texts) for ECG rows `row_offset ... row_offset + batch_size` of the batch.

    With report ids (duplicate-aware), ECG i and text j are a positive pair whenever text j *is* ECG i's report:
    the same report id. Otherwise the positive of row i is the text at the same batch position, and only when
    that pair is aligned (an N3S swap makes it a negative).
    """
    if ecg_report_ids is not None and text_report_ids is not None:
        positive = ecg_report_ids.reshape(-1, 1) == text_report_ids.reshape(1, -1)
    else:
        rows = torch.arange(batch_size, device=device) + row_offset
        positive = rows.reshape(-1, 1) == torch.arange(num_texts, device=device).reshape(1, -1)
        if is_aligned is not None:
            positive = positive & is_aligned.reshape(-1, 1).bool()
    return positive.to(torch.float32) * 2.0 - 1.0


def siglep_loss(
    ecg_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float = 1.0,
    logit_bias: torch.Tensor | float = 0.0,
    is_aligned: torch.Tensor | None = None,
    ecg_report_ids: torch.Tensor | None = None,
    text_report_ids: torch.Tensor | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """SigLIP sigmoid loss of local ECG rows against every text of the global batch.

    `rank` and `world_size` say where this process stands in data-parallel training (as open_clip's losses take
    them); with `world_size > 1` torch.distributed must be initialised.

    Single process: -1/B sum_ij log sigmoid(y_ij * z_ij), z = scale * ecg @ text.T + bias.
    Data-parallel: each rank scores its own ECGs against all ranks' texts (gathered *with* gradient) and
    returns its rows' sum times world_size / global batch. The mean over ranks then equals the single-process
    loss on the concatenated batch, and so do the gradients after DDP's averaging (the all-gather's backward
    routes each text's gradient from every rank back to its owner). Ranks may hold different batch sizes.
    """
    local_batch = ecg_embeds.shape[0]
    row_offset, global_batch = 0, local_batch
    if world_size > 1:
        size = torch.tensor([local_batch], device=ecg_embeds.device)
        sizes = [torch.zeros_like(size) for _ in range(world_size)]
        dist.all_gather(sizes, size)
        sizes = [int(s.item()) for s in sizes]
        row_offset, global_batch = sum(sizes[:rank]), sum(sizes)
        text_embeds = _gather_rows(text_embeds, sizes, with_grad=True)
        if text_report_ids is not None:
            text_report_ids = _gather_rows(text_report_ids, sizes, with_grad=False)
    targets = siglep_targets(
        local_batch,
        text_embeds.shape[0],
        row_offset=row_offset,
        is_aligned=is_aligned,
        ecg_report_ids=ecg_report_ids,
        text_report_ids=text_report_ids,
        device=ecg_embeds.device,
    )
    logits = ecg_embeds.float() @ text_embeds.float().t() * logit_scale + logit_bias
    # world_size / global_batch: the mean over ranks is then the loss of the whole batch (see docstring)
    return -F.logsigmoid(targets * logits).sum() * world_size / global_batch
