"""Pretraining batches: random lead masking, negative swaps (N3S or random), tokenisation and MLM masking of the text
that is actually fed (never the original report: reference defect 2).

Randomness is drawn from a generator seeded by (seed, the batch's row keys), so a batch is the same whether it is
built in a fresh run or after resuming from a checkpoint, in any dataloader worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from modeling_cmelt.configuration_cmelt import CMELTConfig, CMELTECGConfig

from .ecg_store import ecg_batch_tensor

ReportLookup = Callable[[Sequence[int]], list[str]]


def mask_token_id(tokenizer, fallback_token: str = CMELTConfig.mlm_mask_token) -> int:
    """The tokenizer's mask token, or for tokenizers without one (T5) `fallback_token` (the model config's
    `mlm_mask_token`, a sentinel by default)."""
    if getattr(tokenizer, "mask_token", None) is not None and tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    sentinel_id = tokenizer.convert_tokens_to_ids(fallback_token)
    if sentinel_id is not None and sentinel_id != tokenizer.unk_token_id:
        return int(sentinel_id)
    raise ValueError(
        f"{type(tokenizer).__name__} has neither a mask token nor a {fallback_token!r} token; add one "
        "(tokenizer.add_special_tokens({'mask_token': '[MASK]'})) and resize the text embeddings"
    )


def mask_tokens(
    tokenizer,
    input_ids,
    attention_mask=None,
    mlm_probability: float = CMELTConfig.mlm_probability,
    generator: torch.Generator | None = None,
    mask_token: str = CMELTConfig.mlm_mask_token,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for the MLM objective: the one place the convention lives (training only, so it lives
    with the collator, as transformers keeps it in its data collators).

    Each non-special, non-padding token is selected with probability `mlm_probability`; of the selected, 80 %
    become the mask token (the tokenizer's, else `mask_token`), 10 % a random ordinary token, 10 % stay unchanged.
    Returns `(masked_input_ids, labels)` with `labels` = original id on selected tokens and -100 elsewhere. Passing
    a seeded `torch.Generator` makes the result deterministic. `input_ids` is not modified.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dtype not in (torch.int32, torch.int64) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be an integer tensor (batch, length), got {input_ids.dtype} {tuple(input_ids.shape)}")
    device = input_ids.device
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=input_ids.dtype, device=device)
    candidates = ~torch.isin(input_ids, special_ids)
    if attention_mask is not None:
        candidates &= torch.as_tensor(attention_mask, device=device).bool()
    draws = torch.rand(input_ids.shape, generator=generator)
    selected = (draws < mlm_probability).to(device) & candidates
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))

    action = torch.rand(input_ids.shape, generator=generator).to(device)
    ordinary_ids = torch.tensor(np.setdiff1d(np.arange(len(tokenizer)), special_ids.cpu().numpy()), dtype=input_ids.dtype)
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator)].to(device)
    masked = input_ids.clone()
    masked[selected & (action < 0.8)] = mask_token_id(tokenizer, mask_token)
    use_random = selected & (action >= 0.8) & (action < 0.9)
    masked[use_random] = random_ids[use_random]
    return masked, labels


def _has_candidates(row: dict) -> bool:
    negatives = row.get("n3s_negatives")
    return negatives is not None and len(negatives) > 0


@dataclass
class CMELTPretrainingCollator:
    """Turns rows of the converted corpus (`ecg`, `lead_mask`, `report`, `report_id`, `n3s_negatives`) into the
    keyword arguments of `CMELTForPreTraining.forward`.

    Args:
        processor: a `CMELTProcessor` (its tokenizer tokenises the reports; `mask_tokens` masks them).
        report_texts: report ids -> texts (e.g. `ReportTable.texts`), for the swapped-in N3S negatives.
        negatives: where a negative text comes from. "n3s": one of the row's `n3s_negatives` (the farthest
            reports); "random": the report of another row of the batch, drawn uniformly among those with a
            different report (the paper's -N3S ablation); "none": every pair stays aligned.
        negative_fraction: expected fraction of the batch whose text becomes a negative; the count is
            int(fraction * batch + U(0, 1)) as in the reference, so odd batches average out.
        seed: base seed of every random draw.
        key_column: the column that identifies a row (for the per-batch seed).
        config: the model's `CMELTConfig`, the one home of the masking settings below: each one left unset is read
            from it (from `CMELTConfig`'s defaults when no config is given), so what is trained is what the saved
            config and model card state.
        mlm_probability: fraction of report tokens masked (`config.mlm_probability`).
        mlm_mask_token: the token that replaces masked tokens when the tokenizer has no mask token (T5;
            `config.mlm_mask_token`).
        lead_mask_prob: probability that each recorded lead is hidden, at least one lead always staying
            (`config.ecg_config.lead_mask_prob`).
        max_length: tokens kept per report (`config.max_text_length`).
        siglep_own_report: also tokenise each row's own report, unmasked, as `siglep_input_ids` /
            `siglep_attention_mask` (`config.siglep_own_report`: Siglep pairs every ECG with its own report).
        ecg_num_tokens: tokens the model's conv stack makes (`config.ecg_config.num_tokens`); when known, the
            collator also draws MEM's token-dropping noise, so the whole batch is reproducible.
    """

    processor: object
    report_texts: ReportLookup | None = None
    negatives: Literal["n3s", "random", "none"] = "n3s"
    negative_fraction: float = 0.5
    seed: int = 0
    key_column: str = "study_id"
    config: CMELTConfig | None = None
    mlm_probability: float | None = None
    mlm_mask_token: str | None = None
    lead_mask_prob: float | None = None
    max_length: int | None = None
    siglep_own_report: bool | None = None
    ecg_num_tokens: int | None = None
    skipped: int = field(default=0, init=False)

    def __post_init__(self):
        # without a model config, the class defaults of the configs are the values
        config = self.config if self.config is not None else CMELTConfig
        ecg_config = self.config.ecg_config if self.config is not None else CMELTECGConfig
        if self.mlm_probability is None:
            self.mlm_probability = config.mlm_probability
        if self.mlm_mask_token is None:
            self.mlm_mask_token = config.mlm_mask_token
        if self.lead_mask_prob is None:
            self.lead_mask_prob = ecg_config.lead_mask_prob
        if self.max_length is None:
            self.max_length = config.max_text_length
        if self.siglep_own_report is None:
            self.siglep_own_report = config.siglep_own_report
        if self.ecg_num_tokens is None and self.config is not None:
            self.ecg_num_tokens = ecg_config.num_tokens
        if self.negatives not in ("n3s", "random", "none"):
            raise ValueError(f'negatives must be "n3s", "random" or "none"; got {self.negatives!r}')
        if self.negatives == "n3s" and self.report_texts is None:
            raise ValueError('negatives="n3s" needs report_texts (the N3S report table); or use "random" / "none"')

    def _generator(self, rows: list[dict]) -> np.random.Generator:
        keys = ",".join(str(row.get(self.key_column, row.get("report_id", i))) for i, row in enumerate(rows))
        digest = hashlib.blake2b(f"{self.seed}:{keys}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def _usable(self, row) -> bool:
        """A corrupt row (None from a lazy reader, missing or non-finite signal) is skipped and counted."""
        ecg = None if row is None else row.get("ecg")
        if ecg is None:
            return False
        values = np.asarray(ecg)
        return values.size > 0 and (values.dtype.kind in "iu" or bool(np.isfinite(values).all()))

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        usable = [row for row in rows if self._usable(row)]
        self.skipped += len(rows) - len(usable)
        if not usable:
            raise ValueError(f"every row of this batch of {len(rows)} was corrupt (no finite `ecg`)")
        rng = self._generator(usable)
        batch = len(usable)

        input_values = ecg_batch_tensor([row["ecg"] for row in usable])
        num_leads = input_values.shape[1]
        recorded = np.stack([np.asarray(row.get("lead_mask", [True] * num_leads), dtype=bool) for row in usable])
        lead_mask = recorded & (rng.random(recorded.shape) >= self.lead_mask_prob)
        empty = ~lead_mask.any(axis=1)  # keep one recorded lead so no ECG becomes all zeros
        for i in np.flatnonzero(empty):
            choices = np.flatnonzero(recorded[i])
            if choices.size:
                lead_mask[i, rng.choice(choices)] = True

        own_reports = [row["report"] for row in usable]
        texts = list(own_reports)
        ecg_report_ids = np.array([row.get("report_id", -1) for row in usable], dtype=np.int64)
        text_report_ids = ecg_report_ids.copy()
        is_aligned = np.ones(batch, dtype=np.float32)
        if self.negatives != "none" and self.negative_fraction > 0:
            num_swaps = min(batch, int(self.negative_fraction * batch + rng.random()))
            rows_to_swap = rng.permutation(batch)[:num_swaps]
            swaps = self._n3s_swaps(usable, rows_to_swap, rng) if self.negatives == "n3s" else self._random_swaps(
                texts, ecg_report_ids, rows_to_swap, rng
            )
            for i, report_id, text in swaps:
                texts[i], text_report_ids[i], is_aligned[i] = text, report_id, 0.0

        encoded = self._tokenize(texts)
        torch_generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        input_ids, labels = mask_tokens(
            self.processor.tokenizer,
            encoded["input_ids"],
            encoded["attention_mask"],
            self.mlm_probability,
            generator=torch_generator,
            mask_token=self.mlm_mask_token,
        )
        features = {
            "input_values": input_values,
            "lead_mask": torch.from_numpy(lead_mask),
            "input_ids": input_ids,
            "attention_mask": encoded["attention_mask"],
            "labels": labels,
            "is_aligned": torch.from_numpy(is_aligned),
            "ecg_report_ids": torch.from_numpy(ecg_report_ids),
            "text_report_ids": torch.from_numpy(text_report_ids),
        }
        if self.siglep_own_report:
            own = self._tokenize(own_reports)
            features["siglep_input_ids"], features["siglep_attention_mask"] = own["input_ids"], own["attention_mask"]
        if self.ecg_num_tokens:
            features["noise"] = torch.from_numpy(rng.random((batch, self.ecg_num_tokens)).astype(np.float32))
        return features

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.processor.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _n3s_swaps(self, rows: list[dict], rows_to_swap, rng: np.random.Generator):
        """(row, report id, text) for each row to swap that has N3S candidates: one candidate at random."""
        swapped = [int(i) for i in rows_to_swap if _has_candidates(rows[i])]
        chosen = [int(rng.choice(rows[i]["n3s_negatives"])) for i in swapped]
        return list(zip(swapped, chosen, self.report_texts(chosen)))

    @staticmethod
    def _random_swaps(texts: list[str], report_ids: np.ndarray, rows_to_swap, rng: np.random.Generator):
        """(row, report id, text) for each row to swap: the report of a random other row whose report differs
        (by id, or by text where ids are missing); a row with no such partner stays aligned."""
        keys = [f"id:{report_id}" if report_id >= 0 else f"text:{text}" for report_id, text in zip(report_ids, texts)]
        swaps = []
        for i in rows_to_swap:
            partners = [j for j in range(len(texts)) if keys[j] != keys[i]]
            if partners:
                j = int(rng.choice(partners))
                swaps.append((int(i), int(report_ids[j]), texts[j]))
        return swaps
