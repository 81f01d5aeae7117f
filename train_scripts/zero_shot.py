"""Zero-shot evaluation: score every ECG of a labelled dataset against text prompts of its labels.

The scoring is the pipeline's (`modeling_cmelt.pipeline_cmelt`): label embeddings = mean of their prompts'
embeddings, score = sigmoid(scale * ecg . label + bias). Here it runs in batches over a `datasets.Dataset` whose rows
hold `ecg` (int16 uV, 12 x 5000), `lead_mask` and a multi-hot `labels` vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ecg_store import decode_ecg
from modeling_cmelt.pipeline_cmelt import encode_label_texts, zero_shot_logits
from train_scripts.evaluation import load_metric


@torch.no_grad()
def ecg_embeddings(model, dataset, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """(len(dataset), projection_dim) ECG embeddings of a dataset with `ecg` and `lead_mask` columns."""
    model.eval()
    columns = dataset.with_format("numpy", columns=["ecg", "lead_mask"])
    embeds = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="ECG embeddings", disable=not progress):
        rows = columns[start : start + batch_size]
        input_values = torch.from_numpy(decode_ecg(rows["ecg"])).to(model.device)
        lead_mask = torch.from_numpy(np.asarray(rows["lead_mask"], dtype=bool)).to(model.device)
        embeds.append(model.get_ecg_features(input_values, lead_mask=lead_mask).pooler_output.float().cpu())
    return torch.cat(embeds)


@torch.no_grad()
def zero_shot_scores(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """(len(dataset), len(label_texts)) sigmoid scores, columns in the order of `label_texts`."""
    label_embeds = encode_label_texts(model, tokenizer, label_texts).float().cpu()
    logits = zero_shot_logits(model, ecg_embeddings(model, dataset, batch_size, progress), label_embeds)
    return logits.sigmoid().numpy()


def evaluate_zero_shot(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], label_names: Sequence[str] | None = None,
    batch_size: int = 64, progress: bool = True,
) -> dict:
    """Macro AUROC (and per-class AUROC) of zero-shot scores against the dataset's multi-hot `labels`.

    `label_names` gives the order of the `labels` columns (default: the keys of `label_texts`); each scored label
    must be one of them."""
    label_names = list(label_names or label_texts)
    missing = [label for label in label_texts if label not in label_names]
    if missing:
        raise ValueError(f"labels {missing} have prompts but no column in the dataset's labels {label_names}")
    scores = zero_shot_scores(model, tokenizer, dataset, label_texts, batch_size, progress)
    references = np.asarray(dataset.with_format("numpy")["labels"], dtype=np.float32)
    references = references[:, [label_names.index(label) for label in label_texts]]
    result = load_metric("macro_auroc").compute(
        references=references, predictions=scores, label_names=list(label_texts)
    )
    return {"macro_auroc": result["macro_auroc"], "per_class": result["per_class"], "scores": scores}
