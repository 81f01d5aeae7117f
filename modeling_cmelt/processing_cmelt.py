"""C-MELT processor (ECG feature extractor + text tokenizer) and report cleaning.

Report cleaning (`clean_report`) follows the paper and the reference code: lower case, `ekg` -> `ecg`, strip `***`,
`=-` and `=`, punctuation to spaces, collapse whitespace. Decisions where the paper is silent:
- digits are kept, and so are `.`, `/`, `:` and `,` *between two digits* ("1.5 mm", "140/80", "1:1"), because the
  number carries the meaning; anywhere else they become spaces;
- `-` and `'` are kept *between two letters or digits* ("st-t", "q-wave", "non-specific", "patient's") so compound
  findings stay one word; leading, trailing and repeated dashes become spaces;
- `%` and `+` after a digit are kept ("70%", "2+"); letters outside ASCII (German / Swedish reports) are kept.
"""

from __future__ import annotations

import re
from typing import Any

from transformers import BatchFeature, ProcessorMixin

from .configuration_cmelt import CMELTConfig

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
        max_length: int | None = None,
        padding: bool | str = "longest",
        truncation: bool = True,
        return_tensors: str | None = "pt",
        clean_text: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """ECGs and/or reports -> `input_values`, `lead_mask` and/or `input_ids`, `attention_mask`.

        Extra keyword arguments (orientation, units, adc_gain, return_sample_mask, hdf5_index) go to the feature
        extractor. With `clean_text`, reports go through `clean_report` first (as in pretraining). `max_length`
        defaults to `CMELTConfig.max_text_length` (pass the model config's when it differs).
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
                self.tokenizer(texts, max_length=max_length or CMELTConfig.max_text_length, padding=padding,
                               truncation=truncation)
            )
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.feature_extractor.model_input_names) + list(self.tokenizer.model_input_names)


CMELTProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CMELTProcessor", "clean_report"]
