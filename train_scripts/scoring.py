"""Scoring a saved C-MELT model on a labelled dataset: ECG batches and embeddings, zero-shot scores and their
evaluation, encoder features, the dual encoder of a model folder, a user's prompt file and the label matrix.

The library behind the evaluation scripts (zero_shot, linear_probe, finetune, domain_transfer, label, embed, search)
and the demo; it is not a script itself. The scoring is the pipeline's (`modeling_cmelt.pipeline_cmelt`): label
embeddings = mean of their prompts' embeddings, score = sigmoid(scale * ecg . label + bias). Here it runs in
batches over a `datasets.Dataset` whose rows hold `ecg` (int16 uV, 12 x 5000), `lead_mask` and a multi-hot `labels`
vector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, Trainer

from cmelt.data.ecg_store import ecg_batch_tensor
from cmelt.data.leads import apply_lead_subset
from cmelt.train_scripts.evaluation import load_metric, random_init_like
from modeling_cmelt import CMELTModel
from modeling_cmelt.pipeline_cmelt import encode_label_texts, zero_shot_logits


ECG_COLUMNS = ["ecg", "lead_mask"]


def ecg_batches(dataset, batch_size: int, device, progress: bool = True, description: str = "ECG embeddings"):
    """Yields (input_values float32 mV (b, 12, 5000), lead_mask bool (b, 12)) tensors on `device`, in row order."""
    columns = dataset.with_format("numpy", columns=ECG_COLUMNS)
    for start in tqdm(range(0, len(dataset), batch_size), desc=description, disable=not progress):
        rows = columns[start : start + batch_size]
        input_values = ecg_batch_tensor(rows["ecg"]).to(device)
        lead_mask = torch.from_numpy(np.asarray(rows["lead_mask"], dtype=bool)).to(device)
        yield input_values, lead_mask


@torch.no_grad()
def ecg_embeddings(model, dataset, batch_size: int = 64, progress: bool = True, keep=None) -> torch.Tensor:
    """(len(dataset), projection_dim) ECG embeddings of a dataset with `ecg` and `lead_mask` columns.

    `keep`: (12,) bool lead subset (`data.leads.lead_keep_mask`); the other leads are zeroed and masked."""
    model.eval()
    pooled = CMELTPooledECG(model, projected=True)
    embeds = []
    for input_values, lead_mask in ecg_batches(dataset, batch_size, model.device, progress):
        if keep is not None:
            input_values, lead_mask = apply_lead_subset(input_values, lead_mask, keep)
        embeds.append(pooled(input_values, lead_mask)["features"].cpu())
    return torch.cat(embeds)


@torch.no_grad()
def zero_shot_scores(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], batch_size: int = 64, progress: bool = True,
    embeddings: torch.Tensor | None = None, multi_label: bool = True,
) -> np.ndarray:
    """(len(dataset), len(label_texts)) scores, columns in the order of `label_texts`: independent sigmoids, or with
    `multi_label=False` a softmax over the labels (mutually exclusive classes; the pipeline's `multi_label`).

    `embeddings`: the dataset's `ecg_embeddings`, when already computed (then the ECG tower is not run again)."""
    label_embeds = encode_label_texts(model, tokenizer, label_texts).float().cpu()
    if embeddings is None:
        embeddings = ecg_embeddings(model, dataset, batch_size, progress)
    logits = zero_shot_logits(model, embeddings.float().cpu(), label_embeds)
    return (logits.sigmoid() if multi_label else logits.softmax(dim=-1)).numpy()


def evaluate_zero_shot(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], label_names: Sequence[str] | None = None,
    batch_size: int = 64, progress: bool = True, embeddings: torch.Tensor | None = None,
) -> dict:
    """Macro AUROC (and per-class AUROC) of zero-shot scores against the dataset's multi-hot `labels`.

    `label_names` gives the order of the `labels` columns (default: the keys of `label_texts`); each scored label
    must be one of them."""
    label_names = list(label_names or label_texts)
    missing = [label for label in label_texts if label not in label_names]
    if missing:
        raise ValueError(f"labels {missing} have prompts but no column in the dataset's labels {label_names}")
    scores = zero_shot_scores(model, tokenizer, dataset, label_texts, batch_size, progress, embeddings)
    references = labels_of(dataset)[:, [label_names.index(label) for label in label_texts]]
    result = load_metric("macro_auroc").compute(
        references=references, predictions=scores, label_names=list(label_texts)
    )
    return {
        "macro_auroc": result["macro_auroc"], "per_class": result["per_class"], "scores": scores,
        "skipped_classes": result["skipped_classes"],
    }


@torch.no_grad()
def encoder_features(model, dataset, batch_size: int = 64, progress: bool = True, transform=None) -> torch.Tensor:
    """(len(dataset), hidden_size) pooled ECG-encoder outputs of a `CMELTForECGClassification` (its classifier's
    input), in eval mode. `transform(input_values, lead_mask) -> (input_values, lead_mask)` edits each batch first
    (e.g. `finetune.apply_lead_subset`)."""
    was_training = model.ecg_model.training
    model.ecg_model.eval()
    device = next(model.parameters()).device
    pooled = CMELTPooledECG(model, projected=False)
    features = []
    for input_values, lead_mask in ecg_batches(dataset, batch_size, device, progress, "encoder features"):
        if transform is not None:
            input_values, lead_mask = transform(input_values, lead_mask)
        features.append(pooled(input_values, lead_mask)["features"].cpu())
    model.ecg_model.train(was_training)
    if not features:
        return torch.zeros(0, model.config.ecg_config.hidden_size)
    return torch.cat(features)


class CMELTECGCollator:
    """Rows (`ecg` int16 uV, `lead_mask`, optional label column) -> `input_values` mV, `lead_mask` and, with
    `label_column`, `labels`; the lead subset `keep` applied. `label_column`: None (no labels), "labels"
    (multi-hot float) or "identity" (class index)."""

    def __init__(self, keep=None, label_column: str | None = None):
        self.keep = None if keep is None else np.asarray(keep, dtype=bool)
        self.label_column = label_column

    def __call__(self, rows: list[dict]) -> dict:
        input_values = ecg_batch_tensor([row["ecg"] for row in rows])
        lead_mask = torch.from_numpy(np.stack([np.asarray(row["lead_mask"], dtype=bool) for row in rows]))
        if self.keep is not None:
            input_values, lead_mask = apply_lead_subset(input_values, lead_mask, self.keep)
        batch = {"input_values": input_values, "lead_mask": lead_mask}
        if self.label_column == "labels":
            batch["labels"] = torch.from_numpy(np.stack([np.asarray(row["labels"], dtype=np.float32) for row in rows]))
        elif self.label_column is not None:
            batch["labels"] = torch.tensor([int(row[self.label_column]) for row in rows], dtype=torch.long)
        return batch


class CMELTPooledECG(torch.nn.Module):
    """A model's pooled ECG output as a `Trainer.predict` target: `forward(input_values, lead_mask)` returns
    {"features": (batch, dim) float32}. `projected`: the dual encoder's zero-shot embeddings
    (`get_ecg_features`); otherwise the ECG encoder's pooled output (a classifier's input)."""

    def __init__(self, model, projected: bool):
        super().__init__()
        self.model = model
        self.projected = projected

    def forward(self, input_values: torch.Tensor, lead_mask: torch.Tensor | None = None) -> dict:
        if self.projected:
            pooled = self.model.get_ecg_features(input_values, lead_mask=lead_mask).pooler_output
        else:
            pooled = self.model.ecg_model(input_values, lead_mask=lead_mask).pooler_output
        return {"features": pooled.float()}


def predict_ecg_features(model, splits: Mapping, training_args, keep=None, projected: bool = True) -> dict:
    """{split: (rows, dim) float32 tensor} of pooled ECG outputs (see `CMELTPooledECG`) for each dataset in
    `splits`, in row order, through `Trainer.predict`: split over the processes of a multi-process launch and
    gathered on each, under the arguments' precision (`--bf16 true`) and loader settings. `model` is left in eval
    mode on the arguments' device."""
    trainer = Trainer(model=CMELTPooledECG(model, projected).eval(), args=training_args,
                      data_collator=CMELTECGCollator(keep))
    return {
        split: torch.from_numpy(trainer.predict(rows.with_format("numpy", columns=ECG_COLUMNS)).predictions).float()
        for split, rows in splits.items()
    }


def labels_of(dataset) -> np.ndarray:
    """The dataset's multi-hot `labels` column as a float32 (rows, labels) matrix."""
    return np.asarray(dataset.with_format("numpy")["labels"], dtype=np.float32)


def read_descriptions_file(path) -> dict[str, list[str]]:
    """A user's prompts: JSON {code: text or [texts]}."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--descriptions {path}: expected a JSON file {{code: text or [texts]}} ({error})") from error
    if not isinstance(document, dict) or not all(
        isinstance(value, str) or (isinstance(value, list) and all(isinstance(text, str) for text in value))
        for value in document.values()
    ):
        raise ValueError(f"--descriptions {path}: expected a JSON object {{code: text or [texts]}}")
    return document


def load_dual_encoder(folder, device=None):
    """The dual encoder (`CMELTModel`) and tokenizer of a saved model folder, in eval mode, on `device` (None: where
    it loads; `predict_ecg_features` then places it)."""
    model = CMELTModel.from_pretrained(folder).eval()
    model = model if device is None else model.to(device)
    return model, AutoTokenizer.from_pretrained(folder)


def random_baseline_scores(model_folder, tokenizer, test, texts, args, training_args, keep=None) -> np.ndarray | None:
    """With `--baseline random`: zero-shot scores of the same architecture with seeded random weights (else None),
    on the same lead subset `keep`, its ECG pass run like the model's (`predict_ecg_features`)."""
    if args.baseline != "random":
        return None
    baseline = random_init_like(CMELTModel, model_folder, args.seed)
    embeddings = predict_ecg_features(baseline, {"test": test}, training_args, keep)["test"]
    return zero_shot_scores(baseline, tokenizer, test, texts, args.batch_size, embeddings=embeddings)
