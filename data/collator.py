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

from .ecg_store import decode_ecg

ReportLookup = Callable[[Sequence[int]], list[str]]


def _has_candidates(row: dict) -> bool:
    negatives = row.get("n3s_negatives")
    return negatives is not None and len(negatives) > 0


@dataclass
class CMELTPretrainingCollator:
    """Turns rows of the converted corpus (`ecg`, `lead_mask`, `report`, `report_id`, `n3s_negatives`) into the
    keyword arguments of `CMELTForPreTraining.forward`.

    Args:
        processor: a `CMELTProcessor` (tokenizer + the one MLM masking convention).
        report_texts: report ids -> texts (e.g. `ReportTable.texts`), for the swapped-in N3S negatives.
        negatives: where a negative text comes from. "n3s": one of the row's `n3s_negatives` (the farthest
            reports); "random": the report of another row of the batch, drawn uniformly among those with a
            different report (the paper's -N3S ablation); "none": every pair stays aligned.
        mlm_probability: fraction of report tokens masked.
        mlm_mask_token: the token that replaces masked tokens when the tokenizer has no mask token (T5); use the
            model config's `mlm_mask_token`.
        lead_mask_prob: probability that each recorded lead is hidden (at least one lead always stays).
        negative_fraction: expected fraction of the batch whose text becomes a negative; the count is
            int(fraction * batch + U(0, 1)) as in the reference, so odd batches average out.
        max_length: tokens kept per report.
        seed: base seed of every random draw.
        key_column: the column that identifies a row (for the per-batch seed).
        ecg_num_tokens: tokens the model's conv stack makes (`config.ecg_config.num_tokens`); when given, the
            collator also draws MEM's token-dropping noise, so the whole batch is reproducible.
    """

    processor: object
    report_texts: ReportLookup | None = None
    negatives: Literal["n3s", "random", "none"] = "n3s"
    mlm_probability: float = 0.25
    mlm_mask_token: str = "<extra_id_0>"
    lead_mask_prob: float = 0.5
    negative_fraction: float = 0.5
    max_length: int = 256
    seed: int = 0
    key_column: str = "study_id"
    ecg_num_tokens: int | None = None
    skipped: int = field(default=0, init=False)

    def __post_init__(self):
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

        ecgs = np.stack([np.asarray(row["ecg"]) for row in usable])
        input_values = torch.from_numpy(decode_ecg(ecgs) if ecgs.dtype.kind in "iu" else ecgs.astype(np.float32))
        recorded = np.stack([np.asarray(row.get("lead_mask", [True] * ecgs.shape[1]), dtype=bool) for row in usable])
        lead_mask = recorded & (rng.random(recorded.shape) >= self.lead_mask_prob)
        empty = ~lead_mask.any(axis=1)  # keep one recorded lead so no ECG becomes all zeros
        for i in np.flatnonzero(empty):
            choices = np.flatnonzero(recorded[i])
            if choices.size:
                lead_mask[i, rng.choice(choices)] = True

        texts = [row["report"] for row in usable]
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

        encoded = self.processor.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        torch_generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        input_ids, labels = self.processor.mask_tokens(
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
        if self.ecg_num_tokens:
            features["noise"] = torch.from_numpy(rng.random((batch, self.ecg_num_tokens)).astype(np.float32))
        return features

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
