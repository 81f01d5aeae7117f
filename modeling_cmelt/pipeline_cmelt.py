"""Zero-shot ECG labelling: `pipeline("zero-shot-ecg-classification", model=folder, trust_remote_code=True)`.

Each candidate label becomes text (a clinical description from a prompt set of `label_descriptions.json` —
`prompts="cmelt"`, ours, or `"merl"`, MERL's CKEPE prompts (MIT, notice in the file) — a JSON file of the user's,
the user's own `descriptions`, or the label itself as free text); the label's embedding is the mean of its texts' embeddings, computed
once per label set and cached. An ECG's score for a label is sigmoid(scale * ecg . label + bias) — independent per
label (`multi_label=True`, the default) — or a softmax over the candidates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from transformers import Pipeline

from .processing_cmelt import clean_report

DESCRIPTIONS_FILE = "label_descriptions.json"
SHIPPED_PROMPT_SETS = ("cmelt", "merl")
TASK = "zero-shot-ecg-classification"
LabelTexts = Mapping[str, str | Sequence[str]]


@lru_cache(maxsize=4)
def _read_descriptions(path: str, prompts: str = "cmelt") -> dict | None:
    document = json.loads(Path(path).read_text())
    if prompts == "cmelt":
        return document["label_sets"]
    return document.get("prompt_sets", {}).get(prompts, {}).get("label_sets")


def resolve_model_file(name_or_path: str | Path | None, filename: str, revision: str | None = None) -> str | None:
    """Path of `filename` shipped with a model: in a local folder, or in the Hub cache for a repo id (downloaded when
    online, read from the cache under `HF_HUB_OFFLINE=1`); None when the model has no such file.

    Uses `transformers.utils.cached_file`, the lookup `from_pretrained` itself uses, so a resource is found wherever
    the weights were: a saved folder, a copy of it elsewhere, or `models--org--name/snapshots/<rev>/` of the cache.
    """
    if not name_or_path:
        return None
    from transformers.utils import cached_file

    return cached_file(
        str(name_or_path),
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def load_label_descriptions(
    label_set: str | None = None,
    folder: str | Path | None = None,
    revision: str | None = None,
    prompts: str = "cmelt",
) -> dict:
    """A shipped prompt set (`prompts`: "cmelt", our clinical descriptions, or "merl", MERL's CKEPE prompts):
    every label set (`{set: {code: text}}`), or one set's `{code: text}`.

    `folder`: a saved model folder or a Hub repo id (`model.name_or_path`); its `label_descriptions.json` is
    resolved with `resolve_model_file` first, then the copy next to this file (the installed package) is used."""
    if prompts not in SHIPPED_PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompts!r}; shipped sets: {list(SHIPPED_PROMPT_SETS)} (or a JSON file)")
    resolved = resolve_model_file(folder, DESCRIPTIONS_FILE, revision)
    beside = Path(__file__).resolve().parent / DESCRIPTIONS_FILE
    paths = [path for path in (Path(resolved) if resolved else None, beside) if path is not None and path.is_file()]
    if not paths:
        raise FileNotFoundError(
            f"{DESCRIPTIONS_FILE} not found in {folder!r} (a model folder or Hub repo id) nor in {beside.parent}"
        )
    # a folder saved before a prompt set was added falls back to the packaged file
    sets = next((found for path in paths if (found := _read_descriptions(str(path), prompts)) is not None), None)
    if sets is None:
        raise ValueError(f"prompt set {prompts!r} not found in {[str(path) for path in paths]}")
    if label_set is None:
        return sets
    if label_set not in sets:
        raise ValueError(f"unknown label_set {label_set!r} in prompt set {prompts!r}; known sets: {sorted(sets)}")
    return sets[label_set]


def read_prompt_file(path: str | Path, label_set: str | None = None) -> dict[str, str | list[str]]:
    """A user's prompts: JSON `{code: text or [texts]}`, or `{label set: {code: ...}}` (then `label_set` picks)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"prompts file {path}: expected a JSON file {{code: text or [texts]}} ({error})") from error
    if isinstance(document, dict) and label_set in document and isinstance(document[label_set], dict):
        document = document[label_set]

    def is_texts(value) -> bool:
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(text, str) for text in value))

    if not isinstance(document, dict) or not all(is_texts(value) for value in document.values()):
        raise ValueError(f"prompts file {path}: expected a JSON object {{code: text or [texts]}}")
    return document


def resolve_prompts(prompts, label_set: str | None, folder: str | Path | None = None) -> tuple[dict, str]:
    """`(prompts {code: text or [texts]}, name)` of a prompt choice: "cmelt" (default) or "merl" (shipped sets of
    `label_set`), a path to a JSON file (name: the file name) or a mapping (name: "user")."""
    if prompts is None or (isinstance(prompts, str) and prompts in SHIPPED_PROMPT_SETS):
        name = prompts or "cmelt"
        return (load_label_descriptions(label_set, folder, prompts=name) if label_set else {}), name
    if isinstance(prompts, Mapping):
        return dict(prompts), "user"
    if isinstance(prompts, (str, Path)) and Path(prompts).is_file():
        return read_prompt_file(prompts, label_set), Path(prompts).name
    raise ValueError(f"prompts must be one of {list(SHIPPED_PROMPT_SETS)}, a JSON file or a mapping; got {prompts!r}")


def label_texts_for(
    candidate_labels: Sequence[str],
    label_set: str | None = None,
    descriptions: LabelTexts | None = None,
    hypothesis_template: str = "{}",
    folder: str | Path | None = None,
    prompts="cmelt",
) -> dict[str, list[str]]:
    """Resolve each candidate label to its prompt texts.

    Precedence: the user's `descriptions`; then, with `label_set`, the code's text in the prompt set `prompts`
    (see `resolve_prompts`; a code unknown to it is an error); without `label_set`, a user prompt set's text or
    else the label as free text. The template is applied last.
    """
    candidate_labels = _checked_labels(candidate_labels)
    _check_template(hypothesis_template)
    if descriptions is not None and not isinstance(descriptions, Mapping):
        raise ValueError(f"descriptions must be a dict {{label: text or [texts]}}, got {type(descriptions).__name__}")
    shipped, prompt_name = resolve_prompts(prompts, label_set, folder)
    resolved = {}
    for label in candidate_labels:
        if descriptions is not None and label in descriptions:
            texts = descriptions[label]
        elif label in shipped:
            texts = shipped[label]
        elif label_set:
            raise ValueError(
                f"label {label!r} is not a code of label set {label_set!r} in prompt set {prompt_name!r} and has no "
                f"text in `descriptions`; codes it covers: {sorted(shipped)}"
            )
        else:
            texts = label
        if not isinstance(texts, (str, list, tuple)):
            raise ValueError(f"the description of label {label!r} must be a string or a list of strings, got {texts!r:.80}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"label {label!r} has an empty description (expected non-blank strings, got {texts!r:.80})")
        resolved[label] = [hypothesis_template.format(text) for text in texts]
    return resolved


def _checked_labels(candidate_labels) -> list[str]:
    """A non-empty list of distinct, non-blank label strings (a comma-separated string is split)."""
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
    if not isinstance(candidate_labels, (list, tuple)):
        raise ValueError(f"candidate_labels must be a list of strings, got {type(candidate_labels).__name__}")
    if not candidate_labels:
        raise ValueError("candidate_labels is empty: give label codes of a known set or free-text labels")
    for label in candidate_labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"candidate_labels must be non-blank strings, got {label!r:.80}")
    if len(set(candidate_labels)) != len(candidate_labels):
        raise ValueError(f"candidate_labels has duplicates: {list(candidate_labels)!r:.200}")
    return list(candidate_labels)


def _check_template(hypothesis_template) -> None:
    """The template must hold exactly one empty `{}` field (the label text) and no other field."""
    import string

    expected = "a string with exactly one '{}' (e.g. 'an ECG showing {}')"
    if not isinstance(hypothesis_template, str):
        raise ValueError(f"hypothesis_template must be {expected}, got {hypothesis_template!r:.80}")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(hypothesis_template) if name is not None]
    except ValueError as error:
        raise ValueError(f"hypothesis_template must be {expected}, got {hypothesis_template!r} ({error})") from error
    if fields != [""]:
        raise ValueError(f"hypothesis_template must be {expected}, got {hypothesis_template!r}")
    try:
        hypothesis_template.format("x")
    except (ValueError, IndexError, KeyError) as error:  # e.g. a conversion or format spec that rejects text
        raise ValueError(f"hypothesis_template must be {expected}, got {hypothesis_template!r} ({error})") from error


@torch.no_grad()
def encode_label_texts(model, tokenizer, label_texts: Mapping[str, Sequence[str]], max_length: int | None = None):
    """(num_labels, projection_dim) label embeddings: mean of each label's text embeddings, renormalised when the
    model L2-normalises its embeddings. Texts are normalised as `config.text_cleaning` says: "report" cleans them
    like the pretraining reports (`clean_report`), "lowercase" only lower-cases them (the reference code)."""
    normalise = clean_report if model.config.text_cleaning == "report" else str.lower
    flat = [normalise(text) for texts in label_texts.values() for text in texts]
    max_length = max_length or model.config.max_text_length
    encoded = tokenizer(flat, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    encoded = {k: v.to(model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    embeds = model.get_text_features(**encoded).pooler_output
    means, start = [], 0
    for texts in label_texts.values():
        means.append(embeds[start : start + len(texts)].mean(dim=0))
        start += len(texts)
    label_embeds = torch.stack(means)
    if model.config.siglep_normalize:
        label_embeds = torch.nn.functional.normalize(label_embeds, dim=-1)
    return label_embeds


def zero_shot_logits(model, ecg_embeds: torch.Tensor, label_embeds: torch.Tensor) -> torch.Tensor:
    """(num_ecgs, num_labels) logits, on the same scale as the pretraining's Siglep logits."""
    scale, bias = model.logit_scale_and_bias()
    return ecg_embeds @ label_embeds.to(ecg_embeds.dtype).t() * scale + bias


def _check_label_arguments(candidate_labels, descriptions, hypothesis_template) -> None:
    """Fail early, with a ValueError naming the argument, before anything is hashed or encoded."""
    if candidate_labels is not None:
        _checked_labels(candidate_labels)
    if hypothesis_template is not None:
        _check_template(hypothesis_template)
    if descriptions is not None:
        if not isinstance(descriptions, Mapping):
            raise ValueError(f"descriptions must be a dict {{label: text or [texts]}}, got {type(descriptions).__name__}")
        for label, texts in descriptions.items():
            if not isinstance(label, str):
                raise ValueError(f"descriptions keys must be label strings, got {label!r:.80}")
            if not (isinstance(texts, str) or isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts)):
                raise ValueError(f"descriptions[{label!r}] must be a string or a list of strings, got {texts!r:.80}")


class ZeroShotECGClassificationPipeline(Pipeline):
    """Scores ECGs against candidate labels.

    Inputs: an array (+ `sampling_rate`, optional `lead_names`), a path to a WFDB / .mat / .npy record, or a list
    of them. Parameters: `candidate_labels` (codes of `label_set`, or free text), `label_set` (e.g.
    "ptbxl_super"), `prompts` ("cmelt", "merl" or a JSON file: which texts describe a label set's codes),
    `descriptions` ({label: text or [texts]}), `hypothesis_template` ("{}"), `multi_label`
    (True: independent sigmoid scores; False: softmax over the candidates). Returns, per ECG, a list of
    {"label", "score"} sorted by score.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._label_cache: dict[tuple, tuple[list[str], torch.Tensor]] = {}

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        label_set=None,
        descriptions=None,
        hypothesis_template=None,
        prompts=None,
        multi_label=None,
        sampling_rate=None,
        lead_names=None,
        **kwargs,
    ):
        preprocess = {k: v for k, v in {"sampling_rate": sampling_rate, "lead_names": lead_names}.items() if v is not None}
        _check_label_arguments(candidate_labels, descriptions, hypothesis_template)
        forward = {}
        if candidate_labels is not None:
            forward["candidate_labels"] = candidate_labels
        for key, value in (("label_set", label_set), ("descriptions", descriptions), ("hypothesis_template", hypothesis_template), ("prompts", prompts)):
            if value is not None:
                forward[key] = value
        postprocess = {"multi_label": True if multi_label is None else multi_label}
        return preprocess, forward, postprocess

    def __call__(self, inputs, candidate_labels=None, **kwargs):
        if candidate_labels is None and "label_set" not in kwargs:
            raise ValueError("pass candidate_labels (label codes or free text) or a label_set")
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, sampling_rate=None, lead_names=None):
        is_path = isinstance(inputs, (str, Path))
        if not is_path and sampling_rate is None:
            raise ValueError("sampling_rate is required for array input (the rate of the recording, in Hz)")
        features = self.feature_extractor(
            inputs, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors="pt"
        )
        return {"input_values": features["input_values"], "lead_mask": features["lead_mask"]}

    def _label_embeddings(self, candidate_labels, label_set, descriptions, hypothesis_template, prompts="cmelt"):
        key = (
            tuple(candidate_labels) if candidate_labels is not None else None,
            label_set,
            json.dumps(descriptions, sort_keys=True) if descriptions else None,
            hypothesis_template,
            json.dumps(prompts, sort_keys=True, default=str),
        )
        if key not in self._label_cache:
            folder = self.model.name_or_path or None
            if candidate_labels is None:
                candidate_labels = list(resolve_prompts(prompts, label_set, folder)[0])
            texts = label_texts_for(candidate_labels, label_set, descriptions, hypothesis_template, folder, prompts)
            self._label_cache[key] = (list(texts), encode_label_texts(self.model, self.tokenizer, texts))
        return self._label_cache[key]

    def _forward(
        self, model_inputs, candidate_labels=None, label_set=None, descriptions=None, hypothesis_template="{}", prompts="cmelt"
    ):
        labels, label_embeds = self._label_embeddings(candidate_labels, label_set, descriptions, hypothesis_template, prompts)
        ecg_embeds = self.model.get_ecg_features(
            model_inputs["input_values"], lead_mask=model_inputs["lead_mask"]
        ).pooler_output
        # one copy of the label list per ECG, so the pipeline's batch splitting hands each ECG its labels
        return {"logits": zero_shot_logits(self.model, ecg_embeds, label_embeds), "labels": [labels] * len(ecg_embeds)}

    def postprocess(self, model_outputs, multi_label=True):
        logits = model_outputs["logits"].float()
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
        labels = model_outputs["labels"]
        labels = labels if labels and isinstance(labels[0], str) else labels[0]
        results = []
        for row in scores:
            order = row.argsort(descending=True).tolist()
            results.append([{"label": labels[i], "score": float(row[i])} for i in order])
        return results[0] if len(results) == 1 else results


def register_pipeline() -> None:
    """Make the task known to `transformers.pipeline` in this process (a saved folder carries it in its config)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ZeroShotECGClassificationPipeline, pt_model=AutoModel)
