"""C-MELT processor (ECG feature extractor + text tokenizer), report cleaning and the one MLM masking convention.

Report cleaning (`clean_report`) follows the paper and the reference code: lower case, `ekg` -> `ecg`, strip `***`,
`=-` and `=`, punctuation to spaces, collapse whitespace. Decisions where the paper is silent:
- digits are kept, and so are `.`, `/`, `:` and `,` *between two digits* ("1.5 mm", "140/80", "1:1"), because the
  number carries the meaning; anywhere else they become spaces;
- `-` and `'` are kept *between two letters or digits* ("st-t", "q-wave", "non-specific", "patient's") so compound
  findings stay one word; leading, trailing and repeated dashes become spaces;
- `%` and `+` after a digit are kept ("70%", "2+"); letters outside ASCII (German / Swedish reports) are kept.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from transformers import BatchFeature, ProcessorMixin

_KEPT_BETWEEN_DIGITS = re.compile(r"(?<=\d)([.,/:])(?=\d)")
_KEPT_BETWEEN_WORD_CHARS = re.compile(r"(?<=[^\W_])([-'])(?=[^\W_])")
_KEPT_AFTER_DIGIT = re.compile(r"(?<=\d)([%+])")
_PROTECTED = {".": "\x00", ",": "\x01", "/": "\x02", ":": "\x03", "-": "\x04", "'": "\x05", "%": "\x06", "+": "\x07"}
_RESTORE = {value: key for key, value in _PROTECTED.items()}
_PUNCTUATION = re.compile(r"[^\w\s\x00-\x07]|_")
_WHITESPACE = re.compile(r"\s+")


def clean_report(text: str) -> str:
    """Clean one report (see the module docstring for the exact rules). Non-strings give ""."""
    if not isinstance(text, str):
        return ""
    cleaned = text.lower().replace("ekg", "ecg").replace("***", " ").replace("=-", " ").replace("=", " ")
    for pattern in (_KEPT_BETWEEN_DIGITS, _KEPT_BETWEEN_WORD_CHARS, _KEPT_AFTER_DIGIT):
        cleaned = pattern.sub(lambda match: _PROTECTED[match.group(1)], cleaned)
    cleaned = _PUNCTUATION.sub(" ", cleaned)
    cleaned = cleaned.translate(str.maketrans(_RESTORE))
    return _WHITESPACE.sub(" ", cleaned).strip()


def merge_reports(statements: list[Any]) -> str:
    """Merge the statements of one record (e.g. MIMIC-IV-ECG `report_0` ... `report_17`) into one clean report.

    None, NaN, non-strings and blank statements are dropped; the rest are joined with ". " and cleaned.
    """
    kept = []
    for statement in statements:
        if statement is None or (isinstance(statement, float) and math.isnan(statement)):
            continue
        if not isinstance(statement, str) or not statement.strip():
            continue
        kept.append(statement.strip())
    return clean_report(". ".join(kept))


def _as_texts(text: Any) -> list[str]:
    """`text` as a non-empty list of strings, else a ValueError naming what was given."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"text must be a string or a non-empty list of strings, got {type(text).__name__}: {text!r:.80}")
    if len(text) == 0:
        raise ValueError("text must be a string or a non-empty list of strings, got an empty list")
    for index, item in enumerate(text):
        if not isinstance(item, str):
            raise ValueError(f"text[{index}] must be a string (a report), got {type(item).__name__}: {item!r:.80}")
    return list(text)


class CMELTProcessor(ProcessorMixin):
    r"""
    Processor of C-MELT: a [`CMELTFeatureExtractor`] for ECGs and a tokenizer (a T5 tokenizer by default; any
    tokenizer works) for reports.

    Args:
        feature_extractor ([`CMELTFeatureExtractor`]): maps ECGs to `input_values` (batch, 12, 5000) and `lead_mask`.
        tokenizer ([`PreTrainedTokenizerBase`]): tokenizes the (cleaned) reports into `input_ids`, `attention_mask`.
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        ecg: Any = None,
        text: str | list[str] | None = None,
        sampling_rate: float | None = None,
        lead_names: list[str] | None = None,
        max_length: int = 256,
        padding: bool | str = "longest",
        truncation: bool = True,
        return_tensors: str | None = "pt",
        clean_text: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """ECGs and/or reports -> `input_values`, `lead_mask` and/or `input_ids`, `attention_mask`.

        Extra keyword arguments (orientation, units, adc_gain, return_sample_mask, hdf5_index) go to the feature
        extractor. With `clean_text`, reports go through `clean_report` first (as in pretraining).
        """
        if ecg is None and text is None:
            raise ValueError("CMELTProcessor needs `ecg`, `text` or both")
        data: dict[str, Any] = {}
        if ecg is not None:
            data.update(self.feature_extractor(ecg, sampling_rate=sampling_rate, lead_names=lead_names, **kwargs))
        if text is not None:
            texts = _as_texts(text)
            if clean_text:
                texts = [clean_report(item) for item in texts]
            data.update(
                self.tokenizer(texts, max_length=max_length, padding=padding, truncation=truncation)
            )
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.feature_extractor.model_input_names) + list(self.tokenizer.model_input_names)

    def mask_token_id(self, fallback_token: str = "<extra_id_0>") -> int:
        """The tokenizer's mask token, or for tokenizers without one (T5) `fallback_token` (the model config's
        `mlm_mask_token`, a sentinel by default)."""
        if getattr(self.tokenizer, "mask_token", None) is not None and self.tokenizer.mask_token_id is not None:
            return int(self.tokenizer.mask_token_id)
        sentinel_id = self.tokenizer.convert_tokens_to_ids(fallback_token)
        if sentinel_id is not None and sentinel_id != self.tokenizer.unk_token_id:
            return int(sentinel_id)
        raise ValueError(
            f"{type(self.tokenizer).__name__} has neither a mask token nor a {fallback_token!r} token; add one "
            "(tokenizer.add_special_tokens({'mask_token': '[MASK]'})) and resize the text embeddings"
        )

    def mask_tokens(
        self,
        input_ids,
        attention_mask=None,
        mlm_probability: float = 0.25,
        generator=None,
        mask_token: str = "<extra_id_0>",
    ):
        """BERT-style masking for the MLM objective: the one place the convention lives.

        Each non-special, non-padding token is selected with probability `mlm_probability`; of the selected, 80 %
        become the mask token (the tokenizer's, else `mask_token`), 10 % a random ordinary token, 10 % stay unchanged. Returns
        `(masked_input_ids, labels)` with `labels` = original id on selected tokens and -100 elsewhere. Passing a
        seeded `torch.Generator` makes the result deterministic. `input_ids` is not modified.
        """
        import torch

        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dtype not in (torch.int32, torch.int64) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be an integer tensor (batch, length), got {input_ids.dtype} {tuple(input_ids.shape)}")
        device = input_ids.device
        special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=input_ids.dtype, device=device)
        candidates = ~torch.isin(input_ids, special_ids)
        if attention_mask is not None:
            candidates &= torch.as_tensor(attention_mask, device=device).bool()
        draws = torch.rand(input_ids.shape, generator=generator)
        selected = (draws < mlm_probability).to(device) & candidates
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))

        action = torch.rand(input_ids.shape, generator=generator).to(device)
        ordinary_ids = torch.tensor(
            np.setdiff1d(np.arange(len(self.tokenizer)), special_ids.cpu().numpy()), dtype=input_ids.dtype
        )
        random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator)].to(device)
        masked = input_ids.clone()
        masked[selected & (action < 0.8)] = self.mask_token_id(mask_token)
        use_random = selected & (action >= 0.8) & (action < 0.9)
        masked[use_random] = random_ids[use_random]
        return masked, labels


CMELTProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CMELTProcessor", "clean_report", "merge_reports"]
