"""Full fine-tuning (paper Tab. 1) with the Hugging Face `Trainer`, on 12 leads or a reduced lead set.

    python -m cmelt.train_scripts.finetune --model MODEL --dataset physionet2021 --root PN2021 --output_dir runs/ft \
        --leads P-3 --epochs 100 --train_batch_size 256            # Dx: lr 5e-5, CinC 2021 challenge score
    python -m cmelt.train_scripts.finetune --model MODEL --dataset physionet2021_id --root PN2021 --output_dir runs/ft \
        --leads 12                                                  # patient identification: lr 1e-4, accuracy

Lead sets (data.leads): 12; P-6 = I II III aVR aVL aVF; P-3 = I II V2; P-2 = I II; P-1 = I; or a list I,II. The other leads are zero-padded
**and** marked absent in `lead_mask`, in training and in evaluation.

Metric (also the checkpoint-selection metric on validation): the CinC 2021 challenge score (sigmoid > 0.5) for
PhysioNet 2021 Dx; macro AUROC for the other multi-label datasets; for patient identification (rows with
`identity` and `role`, see data.physionet2021) the model is trained as a single-label classifier over the training
identities, and evaluated by matching each `probe` segment to the `gallery` segments of the split by cosine
similarity of the encoder's pooled features (top-1 accuracy = the nearest gallery segment is the same identity).
The test split is scored with the checkpoint of best validation metric (`load_best_model_at_end`).
`--baseline random` fine-tunes the same architecture from seeded random weights with the same protocol; the
result row carries both, with bootstrap 95 % intervals and the paired difference.
Optional LoRA (`--lora_rank R`): adapters on the ECG attention projections q_proj / v_proj, the head trained fully.

Every other `TrainingArguments` flag passes through to the `Trainer` (HfArgumentParser): `--bf16 true`,
`--gradient_accumulation_steps 4`, `--warmup_steps 500`, `--report_to tensorboard`, `--deepspeed ds.json`,
`--fsdp "full_shard auto_wrap"`, `--resume_from_checkpoint DIR`, ...; the protocol's own settings (epoch-wise
evaluation and checkpoint selection) are their defaults. Under `accelerate launch` / `torchrun` training and the
test-set prediction are distributed; results, figures and the model are written by the main process only.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from cmelt.data.leads import add_leads_argument, apply_lead_subset, lead_keep_mask, lead_names
from cmelt.train_scripts.datasets_registry import (
    CLASSIFICATION,
    IDENTIFICATION,
    add_dataset_arguments,
    add_model_arguments,
    data_from_args,
    require_split,
)
from cmelt.train_scripts.evaluation import (
    accuracy_row_fields,
    cinc_row_fields,
    current_commit,
    load_metric,
    macro_auroc_row_fields,
    random_init_like,
    result_row,
    runs_on_cpu,
    task_and_dataset,
    training_arguments_from_flags,
    write_and_print_rows,
)
from cmelt.train_scripts.figures import save_evaluation_figures
from cmelt.train_scripts.scoring import CMELTECGCollator, encoder_features, labels_of

LEARNING_RATES = {CLASSIFICATION: 5e-5, IDENTIFICATION: 1e-4}
CINC_LABEL_SET = "physionet2021"
SIGMOID_THRESHOLD = 0.5
ROW_METRIC_NAMES = {"macro_auroc": "macro_auroc", "challenge_score": "cinc2021_score", "accuracy": "accuracy"}


def classification_metrics(logits: np.ndarray, references: np.ndarray, codes: list[str], label_set: str | None) -> dict:
    """{"macro_auroc", "per_class_auroc"} and, for PhysioNet 2021 Dx, "challenge_score" (sigmoid > 0.5)."""
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    auroc = load_metric("macro_auroc").compute(references=references, predictions=scores, label_names=codes)
    result = {"macro_auroc": auroc["macro_auroc"], "per_class_auroc": auroc["per_class"], "scores": scores}
    if label_set == CINC_LABEL_SET:
        cinc = load_metric("cinc2021_challenge_score").compute(
            references=references, predictions=(scores > SIGMOID_THRESHOLD).astype(np.float64), label_names=codes
        )
        result["challenge_score"] = cinc["challenge_score"]
    return result


def _classification_model(model):
    """The `CMELTForECGClassification` inside a Trainer / PEFT wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def identification_accuracy(model, dataset, keep: np.ndarray, batch_size: int = 64, progress: bool = False) -> dict:
    """Gallery / probe matching on the encoder's pooled features (cosine); top-1 and top-5 accuracy."""
    roles = np.asarray(dataset["role"])
    identities = np.asarray(dataset["identity"])
    gallery_rows, probe_rows = np.flatnonzero(roles == "gallery"), np.flatnonzero(roles == "probe")
    if len(gallery_rows) == 0 or len(probe_rows) == 0:
        raise ValueError(f"identification split needs 'gallery' and 'probe' rows; roles found: {sorted(set(roles.tolist()))}")
    gallery_identities = identities[gallery_rows].tolist()
    matched = np.array([identity in gallery_identities for identity in identities[probe_rows]])
    probe_rows = probe_rows[matched]
    if len(probe_rows) == 0:
        raise ValueError("no probe identity has a gallery segment")
    features = encoder_features(
        _classification_model(model), dataset, batch_size, progress, functools.partial(apply_lead_subset, keep=keep)
    )
    features = torch.nn.functional.normalize(features, dim=-1)
    similarity = (features[probe_rows] @ features[gallery_rows].t()).numpy()
    references = np.array([gallery_identities.index(identity) for identity in identities[probe_rows]])
    top_k = min(5, len(gallery_rows))
    result = load_metric("accuracy").compute(predictions=similarity, references=references, top_k=top_k)
    correct = similarity.argmax(axis=1) == references
    return {"accuracy": result["accuracy"], "correct": correct, f"top_{top_k}_accuracy": result[f"top_{top_k}_accuracy"],
            "probes": int(len(probe_rows)), "probes_without_gallery": int((~matched).sum()),
            "gallery": int(len(gallery_rows))}


class CMELTIdentificationTrainer(Trainer):
    """`Trainer` whose evaluation is gallery / probe matching (the eval split's identities are unseen in training)."""

    def __init__(self, *args, keep: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep = keep

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        result = identification_accuracy(self.model, dataset, self.keep, self.args.per_device_eval_batch_size)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in result.items() if key != "correct"}
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def add_lora(model, rank: int):
    """LoRA adapters (rank `rank`, alpha 2 * rank) on the ECG attention q_proj / v_proj; the head stays trainable."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"--lora_rank must be a positive rank, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                        modules_to_save=["classifier"])
    return get_peft_model(model, config)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    add_leads_argument(parser)
    parser.add_argument("--epochs", type=float, default=100.0, help="paper: 100")
    parser.add_argument("--train_batch_size", type=int, default=256, help="per device (paper: 256)")
    parser.add_argument("--learning_rate", type=float, default=None, help="default 5e-5 (Dx) / 1e-4 (identification)")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--lora_rank", type=int, default=None, help="train LoRA adapters of this rank instead of all weights")
    parser.add_argument("--dataloader_num_workers", type=int, default=2, help="loader processes per device")
    parser.add_argument("--save_model", action="store_true", help="save the best model (LoRA merged) to output_dir/model")
    args, training_flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    args.training_flags = training_flags
    protocol_training_arguments(args, "check")  # unknown or malformed flags fail before anything is loaded
    lead_keep_mask(args.leads)  # fail before loading anything
    if args.epochs <= 0:
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    if args.lora_rank is not None and args.lora_rank < 1:
        raise ValueError(f"--lora_rank must be a positive rank, got {args.lora_rank}")
    return args


def protocol_training_arguments(args, run_name: str, metric_name: str = "loss", learning_rate: float = 5e-5,
                                identification: bool = False) -> TrainingArguments:
    """The paper's protocol as `TrainingArguments` defaults (epoch-wise evaluation, best-validation checkpoint,
    the script's batch / lr / seed flags), overridden by any `TrainingArguments` flag left in `args.training_flags`."""
    training_args = training_arguments_from_flags(
        args.training_flags,
        output_dir=str(Path(args.output_dir) / "checkpoints" / run_name),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.train_batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=learning_rate,
        weight_decay=args.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=metric_name,
        greater_is_better=metric_name != "loss",
        remove_unused_columns=False,
        seed=args.seed,
        data_seed=args.seed,
        report_to="none",
        disable_tqdm=args.no_progress,
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=runs_on_cpu(args.device),
    )
    if identification and training_args.world_size > 1:
        raise ValueError("patient identification fine-tuning evaluates gallery / probe matching in one process; "
                         "run it without accelerate launch / torchrun")
    return training_args


def fine_tune_and_test(model, run_name: str, args, data, splits: dict, keep: np.ndarray) -> dict:
    """Fine-tunes `model` with the paper's protocol and scores the test split with the best validation checkpoint.

    Returns {"value", "metric", "trainer", "best_checkpoint", "best_validation", and "scores" (multi-label),
    "correct" (identification: per-probe top-1 hit), "extra_metrics"}."""
    identification = data.task == IDENTIFICATION
    columns = ["ecg", "lead_mask", "identity", "role"] if identification else ["ecg", "lead_mask", "labels"]
    train = splits["train"].filter(lambda role: role == "train", input_columns="role") if identification else splits["train"]
    metric_name = "accuracy" if identification else ("challenge_score" if data.label_set == CINC_LABEL_SET else "macro_auroc")
    learning_rate = args.learning_rate if args.learning_rate is not None else LEARNING_RATES[data.task]
    training_args = protocol_training_arguments(args, run_name, metric_name, learning_rate, identification)
    collator = CMELTECGCollator(keep, "identity" if identification else "labels")
    if identification:
        trainer = CMELTIdentificationTrainer(
            model=model, args=training_args, train_dataset=train.with_format("numpy", columns=columns),
            eval_dataset=splits["validation"], data_collator=collator, keep=keep,
        )
    else:
        def compute_metrics(prediction) -> dict:
            result = classification_metrics(prediction.predictions, prediction.label_ids, data.codes, data.label_set)
            return {key: value for key, value in result.items() if key in ("macro_auroc", "challenge_score")}

        trainer = Trainer(
            model=model, args=training_args, train_dataset=train.with_format("numpy", columns=columns),
            eval_dataset=splits["validation"].with_format("numpy", columns=columns), data_collator=collator,
            compute_metrics=compute_metrics,
        )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    outcome = {"metric": metric_name, "trainer": trainer, "learning_rate": learning_rate,
               "best_checkpoint": trainer.state.best_model_checkpoint, "best_validation": trainer.state.best_metric}
    test = splits["test"]
    if identification:
        result = identification_accuracy(trainer.model, test, keep, args.batch_size, not args.no_progress)
        outcome.update(value=result["accuracy"], correct=result.pop("correct"), per_label=None,
                       extra_metrics={key: val for key, val in result.items() if key != "accuracy"})
    else:
        prediction = trainer.predict(test.with_format("numpy", columns=columns))
        result = classification_metrics(prediction.predictions, labels_of(test), data.codes, data.label_set)
        outcome.update(value=result[metric_name], scores=result["scores"], per_label=result["per_class_auroc"],
                       extra_metrics={"macro_auroc": result["macro_auroc"]})
    return outcome


def finetune_row_fields(outcome: dict, baseline: dict | None, data, test, seed: int, resamples: int) -> dict:
    """Value, CI, baseline and paired difference of the fine-tuning metric (bootstrap of the test set)."""
    other = baseline or {}
    if outcome["metric"] == "accuracy":
        return accuracy_row_fields(outcome["correct"], other.get("correct"), seed, resamples)
    references = labels_of(test)
    if outcome["metric"] == "challenge_score":
        decisions = (outcome["scores"] > SIGMOID_THRESHOLD).astype(np.float64)
        baseline_decisions = None if baseline is None else (baseline["scores"] > SIGMOID_THRESHOLD).astype(np.float64)
        return cinc_row_fields(references, decisions, data.codes, baseline_decisions, seed, resamples)
    return macro_auroc_row_fields(references, outcome["scores"], other.get("scores"), seed, resamples)


def main(argv: list[str] | None = None) -> dict:
    from modeling_cmelt import CMELTForECGClassification

    args = parse_args(argv)
    keep = lead_keep_mask(args.leads)
    data = data_from_args(args)
    splits = {split: require_split(data, split) for split in ("train", "validation", "test")}
    identification = data.task == IDENTIFICATION
    if identification:
        train = splits["train"].filter(lambda role: role == "train", input_columns="role")
        model_kwargs = {"num_labels": int(max(train["identity"])) + 1 if len(train) else 0,
                        "problem_type": "single_label_classification"}
    else:
        train = splits["train"]
        model_kwargs = {
            "num_labels": len(data.codes), "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(data.codes)), "label2id": {code: i for i, code in enumerate(data.codes)},
        }
    if len(train) == 0:
        raise ValueError(f"dataset {data.name!r} has no training rows")

    torch.manual_seed(args.seed)
    model = CMELTForECGClassification.from_pretrained(args.model, **model_kwargs)
    total_parameters = sum(p.numel() for p in model.parameters())
    if args.lora_rank is not None:
        model = add_lora(model, args.lora_rank)
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    outcome = fine_tune_and_test(model, f"{data.name}_{args.leads}", args, data, splits, keep)
    baseline = None
    if args.baseline == "random":
        random_model = random_init_like(CMELTForECGClassification, args.model, args.seed, **model_kwargs)
        if args.lora_rank is not None:
            random_model = add_lora(random_model, args.lora_rank)
        baseline = fine_tune_and_test(random_model, f"{data.name}_{args.leads}_random_init", args, data, splits, keep)

    output_dir = Path(args.output_dir)
    test = splits["test"]
    trainer = outcome["trainer"]
    figures: dict = {}
    if args.save_model:  # every process: FSDP / ZeRO-3 gather the full weights for the main process to write
        if args.lora_rank is not None:
            trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        trainer.save_model(str(output_dir / "model"))
    if not trainer.is_world_process_zero():  # results, figures and the model card come from the main process
        return None
    if not args.no_figures:
        tag = f"finetune_{data.name}_{args.leads}"
        if identification:
            figures = save_evaluation_figures(output_dir, tag, test, [], seed=args.seed, lead_mask_override=keep)
        else:
            embeddings = encoder_features(
                _classification_model(trainer.model), test, args.batch_size, not args.no_progress,
                functools.partial(apply_lead_subset, keep=keep),
            ).numpy()
            figures = save_evaluation_figures(output_dir, tag, test, data.codes, outcome["scores"], labels_of(test),
                                              embeddings, args.seed, lead_mask_override=keep)

    task, dataset = task_and_dataset(data.label_set, data.name) if not identification else ("physionet2021-id", "PhysioNet 2021")
    if identification and data.name != "physionet2021_id":
        task, dataset = data.name, data.name
    row = result_row(
        task=task, dataset=dataset, split_source=data.split_source, prompt_set=None, protocol="fine-tune",
        metric=ROW_METRIC_NAMES[outcome["metric"]], leads=args.leads,
        per_label=outcome["per_label"] if outcome["metric"] == "macro_auroc" else None,
        n_test=len(outcome["correct"]) if identification else len(test), seed=args.seed,
        model=args.model_name or str(args.model), commit=current_commit(),
        **finetune_row_fields(outcome, baseline, data, test, args.seed, args.bootstrap_resamples),
        details={
            "lead_set": args.leads, "leads": list(lead_names(args.leads)),
            "selection": f"test scored with the checkpoint of best validation {outcome['metric']} (load_best_model_at_end)",
            "best_checkpoint": outcome["best_checkpoint"], "best_validation_metric": outcome["best_validation"],
            "baseline_best_validation_metric": None if baseline is None else baseline["best_validation"],
            "epochs": args.epochs, "learning_rate": outcome["learning_rate"], "train_batch_size": args.train_batch_size,
            "lora_rank": args.lora_rank, "trainable_parameters": trainable_parameters,
            "total_parameters": total_parameters,
            "threshold": SIGMOID_THRESHOLD if outcome["metric"] == "challenge_score" else None,
            "label_set": data.label_set, **outcome["extra_metrics"], "figures": figures,
            "per_class_auroc": outcome["per_label"],
        },
    )
    write_and_print_rows(output_dir, [row])
    return row


if __name__ == "__main__":
    main()
