"""Linear probing (paper Tab. 2): a frozen ECG encoder and one linear layer trained on its pooled features.

    python -m train_scripts.linear_probe --model MODEL --dataset ptbxl_super --root PTBXL --output_dir runs/lp \
        --label_fraction 0.01 0.1 1.0 --epochs 200

The model is `CMELTForECGClassification.from_pretrained(MODEL, problem_type="multi_label_classification")` with
`freeze_ecg_encoder()`: the frozen encoder's features are computed once per split (the expensive part), then the
linear head — the model's own `classifier`, same initialisation — is trained on them with Adam (lr 1e-3, batch
128, BCE) for `--epochs` epochs, for each label fraction (seeded subsample of train via
`data.splits.label_fraction_subsample`, every class kept). After each epoch the head is scored on validation and
test; the reported test macro AUROC is the one **at the epoch of best validation macro AUROC** (earliest on ties),
not MERL's maximum of test AUROC over epochs. Deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data.leads import add_leads_argument, apply_lead_subset, lead_keep_mask, lead_names
from data.splits import label_fraction_subsample
from train_scripts.datasets_registry import (
    CLASSIFICATION,
    add_dataset_arguments,
    add_model_arguments,
    data_from_args,
    device_from_args,
    require_split,
)
from train_scripts.evaluation import load_metric, write_results
from train_scripts.zero_shot import ecg_batches, save_evaluation_figures

SELECTION_NOTE = (
    "test macro AUROC at the epoch of best validation macro AUROC (earliest on ties); not the maximum of test "
    "AUROC over epochs"
)
ROW_INDEX_COLUMN = "_linear_probe_row"


def check_label_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1 and math.isfinite(fraction)):
        raise ValueError(f"label fraction must be in (0, 1] (e.g. 0.01, 0.1, 1.0), got {fraction!r}")
    return float(fraction)


def load_probe_model(folder, codes: Sequence[str], device):
    """`CMELTForECGClassification` with a fresh multi-label head over `codes` and a frozen encoder."""
    from modeling_cmelt import CMELTForECGClassification

    model = CMELTForECGClassification.from_pretrained(
        folder,
        num_labels=len(codes),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(codes)),
        label2id={code: index for index, code in enumerate(codes)},
    )
    model.freeze_ecg_encoder()
    return model.to(device).eval()


@torch.no_grad()
def encoder_features(model, dataset, batch_size: int = 64, progress: bool = True, transform=None) -> torch.Tensor:
    """(len(dataset), hidden_size) pooled ECG-encoder outputs of a `CMELTForECGClassification` (its classifier's
    input), in eval mode. `transform(input_values, lead_mask) -> (input_values, lead_mask)` edits each batch first
    (e.g. `finetune.apply_lead_subset`)."""
    was_training = model.ecg_model.training
    model.ecg_model.eval()
    device = next(model.parameters()).device
    features = []
    for input_values, lead_mask in ecg_batches(dataset, batch_size, device, progress, "encoder features"):
        if transform is not None:
            input_values, lead_mask = transform(input_values, lead_mask)
        features.append(model.ecg_model(input_values, lead_mask=lead_mask).pooler_output.float().cpu())
    model.ecg_model.train(was_training)
    if not features:
        return torch.zeros(0, model.config.ecg_config.hidden_size)
    return torch.cat(features)


def select_best_epoch(history: Sequence[dict], key: str = "validation_macro_auroc") -> int:
    """Index into `history` of the epoch with the best `key` (earliest on ties; NaN / None never win).

    Raises ValueError when no epoch has a finite value (e.g. no validation class has both label values)."""
    best_index, best_value = None, -math.inf
    for index, epoch in enumerate(history):
        value = epoch.get(key)
        if value is None or not math.isfinite(value):
            continue
        if value > best_value:
            best_index, best_value = index, value
    if best_index is None:
        raise ValueError(f"no epoch has a finite {key!r}: cannot select the best epoch ({len(history)} epochs)")
    return best_index


def _macro_auroc(metric, references: np.ndarray, logits: torch.Tensor, codes: Sequence[str]) -> dict:
    return metric.compute(references=references, predictions=logits.sigmoid().numpy(), label_names=list(codes))


def train_linear_head(
    head: torch.nn.Linear,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_sets: dict[str, tuple[torch.Tensor, np.ndarray]],
    codes: Sequence[str],
    *,
    epochs: int,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    seed: int = 42,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Adam + BCE on precomputed features; after each epoch macro AUROC on every eval set.

    Returns (history: one dict per epoch with `epoch`, `train_loss`, `<split>_macro_auroc`; the head's state dict
    after each epoch is not kept, only the best one by validation: {"state": ..., "epoch": ...})."""
    metric = load_metric("macro_auroc")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    history, best = [], {"state": copy.deepcopy(head.state_dict()), "epoch": None}
    best_validation = -math.inf
    for epoch in tqdm(range(1, epochs + 1), desc="linear head", disable=not progress):
        head.train()
        order = torch.randperm(len(train_features), generator=generator)
        losses = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(train_features[rows]), train_labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item() * len(rows))
        head.eval()
        record = {"epoch": epoch, "train_loss": sum(losses) / max(1, len(order))}
        with torch.no_grad():
            for split, (features, references) in eval_sets.items():
                record[f"{split}_macro_auroc"] = _macro_auroc(metric, references, head(features), codes)["macro_auroc"]
        history.append(record)
        value = record.get("validation_macro_auroc")
        if value is not None and math.isfinite(value) and value > best_validation:
            best_validation = value
            best = {"state": copy.deepcopy(head.state_dict()), "epoch": epoch}
    return history, best


def labels_of(dataset) -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")["labels"], dtype=np.float32)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--label_fraction", type=float, nargs="+", default=[1.0],
                        help="fractions of the training set, each in (0, 1] (paper: 0.01 0.1 1.0)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the linear head (paper: 200)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--train_batch_size", type=int, default=128, help="batch of the linear head (paper: 128)")
    parser.add_argument("--save_model", action="store_true", help="save the probe of the largest fraction to output_dir/model_<fraction>")
    add_leads_argument(parser)
    args = parser.parse_args(argv)
    fractions = [check_label_fraction(value) for value in args.label_fraction]
    keep = lead_keep_mask(args.leads)  # fail before loading anything
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")

    data = data_from_args(args)
    if data.task != CLASSIFICATION:
        raise ValueError(f"linear probing needs a labelled dataset; {data.name!r} is {data.task}")
    splits = {split: require_split(data, split) for split in ("train", "validation", "test")}
    progress = not args.no_progress
    torch.manual_seed(args.seed)
    model = load_probe_model(args.model, data.codes, device_from_args(args))
    initial_head = copy.deepcopy(model.classifier).cpu()
    subset = functools.partial(apply_lead_subset, keep=keep)
    features = {split: encoder_features(model, rows, args.batch_size, progress, subset) for split, rows in splits.items()}
    references = {split: labels_of(rows) for split, rows in splits.items()}
    eval_sets = {split: (features[split], references[split]) for split in ("validation", "test")}
    train_rows = splits["train"].remove_columns(
        [c for c in splits["train"].column_names if c != "labels"]
    ).add_column(ROW_INDEX_COLUMN, list(range(len(splits["train"]))))

    output_dir = Path(args.output_dir)
    entries = []
    for fraction in fractions:
        subset = label_fraction_subsample(train_rows, fraction, args.seed)
        rows = torch.as_tensor(subset[ROW_INDEX_COLUMN], dtype=torch.long)
        head = copy.deepcopy(initial_head)
        history, best = train_linear_head(
            head, features["train"][rows], torch.from_numpy(references["train"])[rows], eval_sets, data.codes,
            epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.train_batch_size, seed=args.seed,
            progress=progress,
        )
        best_index = select_best_epoch(history)
        head.load_state_dict(best["state"])
        with torch.no_grad():
            test_scores = head(features["test"]).sigmoid().numpy()
        test_result = load_metric("macro_auroc").compute(
            references=references["test"], predictions=test_scores, label_names=list(data.codes)
        )
        tag = f"linear_probe_{data.name}_{fraction:g}"
        figures = {} if args.no_figures else save_evaluation_figures(
            output_dir, tag, splits["test"], data.codes, test_scores, references["test"], features["test"].numpy(), args.seed,
            lead_mask_override=keep,
        )
        if args.save_model:
            model.classifier.load_state_dict(head.state_dict())
            model.save_pretrained(output_dir / f"model_{fraction:g}")
        entry = write_results(
            output_dir / "results.json",
            model=args.model_name or str(args.model),
            dataset=data.name,
            task=data.task,
            protocol="linear_probe",
            metric_name="macro_auroc",
            value=test_result["macro_auroc"],
            per_class=test_result["per_class"],
            label_fraction=fraction,
            leads=list(lead_names(args.leads)),
            extra={
                "lead_set": args.leads,
                "selection": SELECTION_NOTE,
                "best_epoch": history[best_index]["epoch"],
                "validation_macro_auroc_at_best_epoch": history[best_index]["validation_macro_auroc"],
                "max_test_macro_auroc_over_epochs": max(
                    (h["test_macro_auroc"] for h in history if h["test_macro_auroc"] is not None and math.isfinite(h["test_macro_auroc"])),
                    default=None,
                ),
                "train_records": len(rows),
                "epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "batch_size": args.train_batch_size,
                "seed": args.seed,
                "label_set": data.label_set,
                "classes_without_both_values": test_result["skipped_classes"],
                "history": history,
                "figures": figures,
            },
        )
        entries.append(entry)
        print(
            f"linear probe {data.name} {fraction:g} of train ({len(rows)} records, leads {args.leads}): test macro AUROC "
            f"{test_result['macro_auroc']:.4f} at best validation epoch {history[best_index]['epoch']}/{args.epochs}"
        )
    print(f"results written to {output_dir / 'results.json'}")
    return entries


if __name__ == "__main__":
    main()
