"""Linear probing (paper Tab. 2): a frozen ECG encoder and one linear layer trained on its pooled features.

    python -m cmelt.train_scripts.linear_probe --model MODEL --dataset ptbxl_super --root PTBXL --output_dir runs/lp \
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
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmelt.data.leads import add_leads_argument, lead_keep_mask, lead_names
from cmelt.data.splits import label_fraction_subsample
from cmelt.train_scripts.datasets_registry import (
    CLASSIFICATION,
    add_dataset_arguments,
    add_model_arguments,
    data_from_args,
    require_split,
)
from cmelt.train_scripts.evaluation import load_metric
from cmelt.train_scripts.figures import save_evaluation_figures
from cmelt.train_scripts.scoring import labels_of, predict_ecg_features

SELECTION_NOTE = (
    "test macro AUROC at the epoch of best validation macro AUROC (earliest on ties); not the maximum of test "
    "AUROC over epochs"
)
ROW_INDEX_COLUMN = "_linear_probe_row"


def check_label_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1 and math.isfinite(fraction)):
        raise ValueError(f"label fraction must be in (0, 1] (e.g. 0.01, 0.1, 1.0), got {fraction!r}")
    return float(fraction)


def load_probe_model(folder, codes: Sequence[str]):
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
    return model.eval()


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


LOGREG_C_GRID = (0.01, 0.1, 1.0, 10.0)


def mean_binary_log_loss(references: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary cross-entropy averaged over rows and classes (probabilities clipped to [1e-7, 1 - 1e-7])."""
    probabilities = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-np.mean(references * np.log(probabilities) + (1 - references) * np.log(1 - probabilities)))


def logreg_probe(
    train_features: np.ndarray, train_labels: np.ndarray, validation_features: np.ndarray,
    validation_labels: np.ndarray, test_features: np.ndarray, seed: int = 42, c_grid=LOGREG_C_GRID,
) -> tuple[np.ndarray, dict]:
    """The tuned logistic-regression probe: standardised features, one-vs-rest `LogisticRegression`, C from
    `c_grid` with the lowest validation log loss. Returns (test probabilities, {"C", "validation_log_loss"}).

    A class with one label value in the training subset gets sklearn's constant predictor (one-vs-rest)."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    losses, fitted = {}, {}
    for c in c_grid:
        probe = make_pipeline(
            StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=1000, random_state=seed))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "label not present in all training examples"
            probe.fit(train_features, train_labels.astype(int))
        losses[c] = mean_binary_log_loss(validation_labels, probe.predict_proba(validation_features))
        fitted[c] = probe
    best = min(c_grid, key=lambda c: (losses[c], c))
    return fitted[best].predict_proba(test_features), {"C": best, "validation_log_loss": losses}


def paper_probe(initial_head, features: dict, references: dict, rows: torch.Tensor, codes, args) -> tuple[np.ndarray, dict]:
    """The paper's protocol: Adam on a linear head, test scored at the best validation epoch."""
    head = copy.deepcopy(initial_head)
    eval_sets = {split: (features[split], references[split]) for split in ("validation", "test")}
    history, best = train_linear_head(
        head, features["train"][rows], torch.from_numpy(references["train"])[rows], eval_sets, codes,
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.train_batch_size, seed=args.seed,
        progress=not args.no_progress,
    )
    best_index = select_best_epoch(history)
    head.load_state_dict(best["state"])
    with torch.no_grad():
        test_scores = head(features["test"]).sigmoid().numpy()
    finite_tests = [h["test_macro_auroc"] for h in history if h["test_macro_auroc"] is not None and math.isfinite(h["test_macro_auroc"])]
    details = {
        "selection": SELECTION_NOTE, "best_epoch": history[best_index]["epoch"],
        "validation_macro_auroc_at_best_epoch": history[best_index]["validation_macro_auroc"],
        "max_test_macro_auroc_over_epochs": max(finite_tests, default=None), "epochs": args.epochs,
        "learning_rate": args.learning_rate, "batch_size": args.train_batch_size, "history": history,
    }
    return test_scores, {"head": head, **details}


def run_probe(protocol: str, initial_head, features, references, rows, codes, args) -> tuple[np.ndarray, dict]:
    """Test scores and details of one probe protocol ("paper" or "logreg") on the training rows `rows`."""
    if protocol == "paper":
        return paper_probe(initial_head, features, references, rows, codes, args)
    indices = rows.numpy()
    return logreg_probe(
        features["train"].numpy()[indices], references["train"][indices], features["validation"].numpy(),
        references["validation"], features["test"].numpy(), args.seed,
    )


PROTOCOL_NAMES = {"paper": "linear-probe", "logreg": "linear-probe-logreg"}


def probe_features(folder, codes, splits, args, training_args, keep=None, seed: int | None = None):
    """(probe model, its initial head on CPU, encoder features per split): the checkpoint's, or with `seed` the
    same architecture with seeded random weights (the `--baseline random` encoder). `keep`: the leads to keep
    (`data.leads.lead_keep_mask`); the others are zeroed and masked. The features come from
    `predict_ecg_features` (split over the processes of a multi-process launch)."""
    from modeling_cmelt import CMELTForECGClassification
    from cmelt.train_scripts.evaluation import random_init_like

    if seed is None:
        model = load_probe_model(folder, codes)
    else:
        model = random_init_like(
            CMELTForECGClassification, folder, seed, num_labels=len(codes), problem_type="multi_label_classification",
            id2label=dict(enumerate(codes)), label2id={code: index for index, code in enumerate(codes)},
        )
        model.freeze_ecg_encoder()
    initial_head = copy.deepcopy(model.classifier).cpu()
    features = predict_ecg_features(model, splits, training_args, keep, projected=False)
    return model, initial_head, features


def main(argv: list[str] | None = None) -> list[dict] | None:
    """Flags the script does not define are `TrainingArguments` flags of the encoder passes (`--bf16 true`,
    `--per_device_eval_batch_size`, `--dataloader_num_workers`, ...); under `accelerate launch` / `torchrun` the
    passes are split over the processes, and the main process trains the heads and writes (the others return None)."""
    from cmelt.train_scripts.evaluation import (
        current_commit, evaluation_training_arguments, macro_auroc_row_fields, result_row, task_and_dataset,
        write_and_print_rows,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--label_fraction", type=float, nargs="+", default=[1.0],
                        help="fractions of the training set, each in (0, 1] (paper: 0.01 0.1 1.0)")
    parser.add_argument("--protocol", nargs="+", choices=sorted(PROTOCOL_NAMES), default=["paper"],
                        help="'paper': Adam linear head, best validation epoch; 'logreg': standardised features, "
                             "one-vs-rest logistic regression, C in {0.01, 0.1, 1, 10} by validation log loss")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the linear head (paper: 200)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--train_batch_size", type=int, default=128, help="batch of the linear head (paper: 128)")
    parser.add_argument("--save_model", action="store_true", help="save each paper-protocol probe to output_dir/model_<fraction>")
    add_leads_argument(parser)
    args, training_flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    training_args = evaluation_training_arguments(args, training_flags)  # fail before loading anything
    fractions = [check_label_fraction(value) for value in args.label_fraction]
    keep = lead_keep_mask(args.leads)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")

    data = data_from_args(args)
    if data.task != CLASSIFICATION:
        raise ValueError(f"linear probing needs a labelled dataset; {data.name!r} is {data.task}")
    splits = {split: require_split(data, split) for split in ("train", "validation", "test")}
    torch.manual_seed(args.seed)
    model, initial_head, features = probe_features(args.model, data.codes, splits, args, training_args, keep)
    baseline = None
    if args.baseline == "random":
        baseline = probe_features(args.model, data.codes, splits, args, training_args, keep, seed=args.seed)
    if training_args.process_index != 0:
        return None  # the encoder passes were shared; the main process trains the small heads and writes, once
    references = {split: labels_of(rows) for split, rows in splits.items()}
    train_rows = splits["train"].remove_columns(
        [c for c in splits["train"].column_names if c != "labels"]
    ).add_column(ROW_INDEX_COLUMN, list(range(len(splits["train"]))))

    output_dir = Path(args.output_dir)
    task, dataset = task_and_dataset(data.label_set, data.name)
    rows_written = []
    for fraction in fractions:
        subset = label_fraction_subsample(train_rows, fraction, args.seed)
        rows = torch.as_tensor(subset[ROW_INDEX_COLUMN], dtype=torch.long)
        for protocol in args.protocol:
            test_scores, details = run_probe(protocol, initial_head, features, references, rows, data.codes, args)
            head = details.pop("head", None)
            baseline_scores = None
            if baseline is not None:
                baseline_scores, baseline_details = run_probe(protocol, baseline[1], baseline[2], references, rows, data.codes, args)
                baseline_details.pop("head", None)
                details["baseline"] = {key: value for key, value in baseline_details.items() if key != "history"}
            per_label = load_metric("macro_auroc").compute(
                references=references["test"], predictions=test_scores, label_names=list(data.codes)
            )["per_class"]
            tag = f"linear_probe_{protocol}_{data.name}_{fraction:g}"
            figures = {} if args.no_figures else save_evaluation_figures(
                output_dir, tag, splits["test"], data.codes, test_scores, references["test"], features["test"].numpy(), args.seed,
                lead_mask_override=keep,
            )
            if args.save_model and head is not None:
                model.classifier.load_state_dict(head.state_dict())
                model.save_pretrained(output_dir / f"model_{fraction:g}")
            rows_written.append(result_row(
                task=task, dataset=dataset, split_source=data.split_source, prompt_set=None,
                protocol=PROTOCOL_NAMES[protocol], label_fraction=fraction, leads=args.leads, metric="macro_auroc",
                per_label=per_label,
                n_test=len(splits["test"]), seed=args.seed, model=args.model_name or str(args.model),
                commit=current_commit(),
                **macro_auroc_row_fields(references["test"], test_scores, baseline_scores, args.seed, args.bootstrap_resamples),
                details={**details, "train_records": len(rows), "label_set": data.label_set, "figures": figures,
                         "lead_set": args.leads, "leads": list(lead_names(args.leads)),
                         "ecg_pass_processes": training_args.world_size},
            ))
    write_and_print_rows(output_dir, rows_written)
    return rows_written


if __name__ == "__main__":
    main()
