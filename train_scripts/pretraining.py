"""C-MELT pretraining, the library behind `cmelt-pretrain` (train_scripts/pretrain.py) and the demo.

`CMELTModelArguments`, `CMELTDataArguments` and `CMELTTrainingArguments` (a `TrainingArguments`, whose defaults are
the paper's optimiser row: Adam beta 0.9/0.98, eps 1e-6, weight decay 0.01, lr 5e-5, tri-stage 0.1/0.4/0.5, 300k
steps, batch 128) describe a run; `pretrain` runs it. Re-running the same command resumes from the last complete checkpoint in `output_dir`; re-running a finished job
does nothing. `output_dir/cmelt_run.json` records the model config, data and training arguments of the run: a rerun
whose settings differ stops with a ValueError listing the differences (pass `--overwrite_output_dir` to start
fresh, which deletes the old checkpoints and model).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate.logging import get_logger
from datasets import load_from_disk
from transformers import AutoModelForTextEncoding, AutoTokenizer, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from cmelt.data.collator import CMELTPretrainingCollator
from cmelt.data.ecg_store import write_json_atomically
from cmelt.model_card.generate import write_model_card
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.modeling_cmelt import copy_hub_code
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor
from cmelt.train_scripts.trainer import CMELTPretrainingTrainer, TriStageSchedule, remove_stale_staging

logger = get_logger(__name__)

RUN_RECORD_FILE = "cmelt_run.json"
# Training arguments that do not change what is trained: where and how often it logs, loader speed, hub upload.
_TRAINING_ARGS_NOT_COMPARED = (
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step",
    "logging_nan_inf_filter", "report_to", "run_name", "project", "disable_tqdm", "save_steps", "save_total_limit",
    "save_strategy", "save_on_each_node", "save_only_model", "resume_from_checkpoint", "local_rank", "log_level",
    "log_level_replica", "log_on_each_node", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "trackio_space_id", "eval_steps",
    "per_device_eval_batch_size", "do_eval", "do_predict", "do_train", "ddp_find_unused_parameters", "fsdp",
    "fsdp_config", "deepspeed", "ddp_backend", "ddp_timeout", "use_cpu",
)

@dataclass
class CMELTModelArguments:
    """What model to pretrain."""

    model_preset: str = field(default="paper", metadata={"help": "CMELTConfig preset: paper | demo | tiny"})
    model_name_or_path: str | None = field(default=None, metadata={"help": "continue from a C-MELT model folder"})
    text_encoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "local text encoder (e.g. a Flan-T5-base folder): its config, weights and tokenizer"},
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "defaults to the text encoder"})
    use_mlm: bool = field(default=True, metadata={"help": "masked language modelling loss"})
    use_mem: bool = field(default=True, metadata={"help": "masked ECG modelling loss"})
    use_etm: bool = field(default=True, metadata={"help": "ECG-text matching loss"})
    use_siglep: bool = field(default=True, metadata={"help": "Siglep contrastive loss"})
    siglep_duplicate_aware: bool = field(default=False, metadata={"help": "identical reports count as positives"})
    freeze_text_encoder: bool = field(default=False, metadata={"help": "no gradient to the text tower"})
    freeze_ecg_encoder: bool = field(default=False, metadata={"help": "no gradient to the ECG tower"})
    lora_rank: int = field(default=0, metadata={"help": "> 0: train LoRA adapters on the text tower instead (peft)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q", "v"], metadata={"help": "text-tower modules given adapters (T5: q k v o)"}
    )
    # written into the model config (their one home), which the collator reads and the saved card reports
    lead_mask_prob: float | None = field(
        default=None, metadata={"help": "random lead masking probability (default: the model config's, paper 0.5)"}
    )
    mlm_probability: float | None = field(
        default=None, metadata={"help": "fraction of report tokens MLM masks (default: the model config's, 0.25)"}
    )
    max_text_length: int | None = field(
        default=None, metadata={"help": "tokens kept per report (default: the model config's, 256)"}
    )


@dataclass
class CMELTDataArguments:
    """Where the corpus is and how batches are made."""

    dataset_path: str | None = field(
        default=None, metadata={"help": "converted corpus (cmelt-convert-mimic, then cmelt-n3s); required (the demo is cmelt-demo)"}
    )
    n3s_cache_dir: str | None = field(
        default=None, metadata={"help": "N3S cache written by `cmelt-n3s` (default: <dataset_path>/n3s_cache)"}
    )
    n3s_encoder: str | None = field(
        default=None, metadata={"help": "report encoder of the N3S cache (e.g. a local flan-t5-small folder)"}
    )
    n3s_k: int = field(default=64, metadata={"help": "N3S candidates per report"})
    negatives: str = field(
        default="n3s",
        metadata={
            "help": "negative texts: n3s (farthest reports, the paper), random (another report of the batch: the "
            "paper's -N3S ablation) or none (every pair aligned)",
            "choices": ["n3s", "random", "none"],
        },
    )
    negative_fraction: float = field(default=0.5, metadata={"help": "fraction of each batch given a negative text"})


@dataclass
class CMELTTrainingArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the paper's optimiser row, plus the tri-stage schedule."""

    output_dir: str | None = field(default="outputs/cmelt-pretrain", metadata={"help": "checkpoints and final model"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam beta2"})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled weight decay"})
    max_steps: int = field(default=300_000, metadata={"help": "optimisation steps"})
    per_device_train_batch_size: int = field(
        default=128, metadata={"help": "batch per device (the most per device when --global_batch_size is set)"}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "samples per optimisation step over all processes (the paper: 128); per-device batch and "
                  "gradient accumulation are derived from it and the number of processes"},
    )
    dataloader_num_workers: int = field(
        default_factory=lambda: min(4, len(os.sched_getaffinity(0)) // 2 if hasattr(os, "sched_getaffinity") else 0),
        metadata={"help": "loader processes per device (decoding and tokenising overlap the step); default: 4, or "
                  "half the cores this process may use when fewer"},
    )
    logging_steps: float = field(default=100, metadata={"help": "log every N steps"})
    save_steps: float = field(default=5000, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=3, metadata={"help": "checkpoints kept"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "the collator needs every column"})
    dataloader_drop_last: bool = field(default=True, metadata={"help": "equal batches on every rank"})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "loggers"})
    tri_stage_schedule: bool = field(default=True, metadata={"help": "fairseq tri-stage lr (else lr_scheduler_type)"})
    tri_stage_ratios: list[float] = field(
        default_factory=lambda: [TriStageSchedule.warmup_ratio, TriStageSchedule.hold_ratio, TriStageSchedule.decay_ratio],
        metadata={"help": "warm-up / hold / decay fractions of max_steps"},
    )
    tri_stage_init_lr_scale: float = field(
        default=TriStageSchedule.init_lr_scale, metadata={"help": "warm-up starts at this x lr"}
    )
    tri_stage_final_lr_scale: float = field(
        default=TriStageSchedule.final_lr_scale, metadata={"help": "decay ends at this x lr"}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "start fresh: delete the checkpoints, final model and run record already in output_dir"},
    )

    @property
    def tri_stage(self) -> dict | None:
        if not self.tri_stage_schedule:
            return None
        warmup, hold, decay = self.tri_stage_ratios
        return {
            "warmup_ratio": warmup,
            "hold_ratio": hold,
            "decay_ratio": decay,
            "init_lr_scale": self.tri_stage_init_lr_scale,
            "final_lr_scale": self.tri_stage_final_lr_scale,
        }


def batch_split(global_batch_size: int, world_size: int, max_per_device: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) with per-device x accumulation x world = global: the largest
    per-device batch that divides global / world and fits `max_per_device`; accumulation makes up the rest."""
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(f"--global_batch_size {global_batch_size} must be a positive multiple of the "
                         f"{world_size} processes")
    per_process = global_batch_size // world_size
    per_device = max(d for d in range(1, per_process + 1) if per_process % d == 0 and d <= max(1, max_per_device))
    return per_device, per_process // per_device


def apply_global_batch_size(training_args: CMELTTrainingArguments) -> None:
    """Set `per_device_train_batch_size` and `gradient_accumulation_steps` from `global_batch_size` and the
    number of processes (`batch_split`), so one optimisation step always sees the global batch; log the result.

    Note: Siglep and ETM see one micro-batch (gathered over processes) at a time, so accumulation shrinks the
    contrastive batch; prefer more processes or more memory per device to more accumulation."""
    world = training_args.world_size
    if training_args.global_batch_size is not None:
        per_device, accumulation = batch_split(
            training_args.global_batch_size, world, training_args.per_device_train_batch_size
        )
        training_args.per_device_train_batch_size = per_device
        training_args.gradient_accumulation_steps = accumulation
    global_batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    logger.info(
        f"global batch {global_batch} = {training_args.per_device_train_batch_size} per device x "
        f"{training_args.gradient_accumulation_steps} accumulation x {world} processes", main_process_only=True,
    )


def apply_unused_parameters(training_args: CMELTTrainingArguments, config: CMELTConfig) -> None:
    """DDP must look for parameters without a gradient when a loss is switched off (ablations: e.g. no ETM or no
    Siglep leaves projection heads or the fusion layers unused); the full model uses every parameter, and the
    faster `find_unused_parameters=False` is kept. An explicit `--ddp_find_unused_parameters` wins."""
    if training_args.ddp_find_unused_parameters is None:
        all_losses = all(getattr(config, f"use_{name}") for name in ("mlm", "mem", "etm", "siglep"))
        training_args.ddp_find_unused_parameters = not all_losses


def build_model(model_args: CMELTModelArguments, config: CMELTConfig | None = None) -> CMELTForPreTraining:
    switches = {f"use_{name}": getattr(model_args, f"use_{name}") for name in ("mlm", "mem", "etm", "siglep")}
    switches["siglep_duplicate_aware"] = model_args.siglep_duplicate_aware
    if model_args.model_name_or_path:
        model = CMELTForPreTraining.from_pretrained(model_args.model_name_or_path, **switches)
    else:
        if config is None:
            text_config = None
            if model_args.text_encoder_name_or_path:
                text_config = AutoModelForTextEncoding.from_pretrained(model_args.text_encoder_name_or_path).config
                text_config = text_config.to_dict()
            config = CMELTConfig.from_preset(model_args.model_preset, **switches)
            if text_config is not None:
                config = CMELTConfig(**{**config.to_dict(), "text_config": text_config})
        model = CMELTForPreTraining(config)
        if model_args.text_encoder_name_or_path:
            pretrained = AutoModelForTextEncoding.from_pretrained(model_args.text_encoder_name_or_path)
            missing, unexpected = model.text_model.load_state_dict(pretrained.state_dict(), strict=False)
            if missing:
                raise ValueError(f"text encoder weights do not fit the text tower; missing {missing[:5]}")
    if model_args.freeze_text_encoder:
        model.text_model.requires_grad_(False)
    if model_args.freeze_ecg_encoder:
        model.ecg_model.requires_grad_(False)
    if model_args.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=model_args.lora_rank,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
        )
        model.text_model = get_peft_model(model.text_model, lora)
    return model


def apply_config_settings(config: CMELTConfig, model_args: CMELTModelArguments) -> None:
    """Write the batch settings given on the command line (lead masking, MLM probability, text length) into the
    model config, their one home: the collator reads them from there and the saved config and card report them."""
    if model_args.lead_mask_prob is not None:
        config.ecg_config.lead_mask_prob = model_args.lead_mask_prob
    if model_args.mlm_probability is not None:
        config.mlm_probability = model_args.mlm_probability
    if model_args.max_text_length is not None:
        config.max_text_length = model_args.max_text_length
    config.ecg_config.validate()
    config.validate()


def build_processor(model_args: CMELTModelArguments, config: CMELTConfig) -> CMELTProcessor:
    source = model_args.tokenizer_name_or_path or model_args.text_encoder_name_or_path or model_args.model_name_or_path
    if source is None:
        raise ValueError("no tokenizer: pass --text_encoder_name_or_path or --tokenizer_name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(source)
    ecg = config.ecg_config
    feature_extractor = CMELTFeatureExtractor(sampling_rate=ecg.sampling_rate, num_samples=ecg.num_samples)
    return CMELTProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def save_model_folder(trainer: CMELTPretrainingTrainer, processor: CMELTProcessor, output_dir: str | Path) -> Path:
    """The final Hub-ready folder: weights, config with `auto_map`, code, processor (tokenizer and feature
    extractor) and model card. Call it on every process: `trainer.save_model` gathers the full state dict under
    FSDP (switched to FULL_STATE_DICT for this save, so the folder loads) and DeepSpeed ZeRO-3; the processor,
    code and card are written by the main process only."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model.text_model, "merge_and_unload"):
        model.text_model = model.text_model.merge_and_unload()
    fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if fsdp_plugin is not None:  # the sharded configs would be kept with the new type otherwise
        fsdp_plugin.state_dict_config = fsdp_plugin.optim_state_dict_config = None
        fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    # _internal_call: transformers would otherwise push `output_dir`'s parent now, before the processor, code and
    # card are here; `pretrain` pushes this complete folder afterwards (`push_model_folder`)
    trainer.save_model(str(output_dir), _internal_call=True)
    if trainer.args.should_save:
        copy_hub_code(output_dir)
        processor.save_pretrained(output_dir)
        write_model_card(output_dir)
    trainer.accelerator.wait_for_everyone()
    return Path(output_dir)


def _with_n3s(train_dataset, data_args: CMELTDataArguments, device: str | None = None):
    """The N3S column and report table, from the cache `cmelt-n3s` wrote (computed now if absent).

    The cache's manifest (written by `cmelt-n3s`) supplies the encoder, index type, max length and dtype it used,
    so the precomputed table is found and reused exactly; `--n3s_encoder` overrides the manifest's encoder."""
    from cmelt.data.n3s import ReportTable, add_n3s_column, read_manifest

    cache_dir = Path(data_args.n3s_cache_dir or Path(data_args.dataset_path) / "n3s_cache")
    manifest = read_manifest(cache_dir) or {}
    encoder = data_args.n3s_encoder or manifest.get("encoder")
    if encoder is None:
        raise ValueError(
            "N3S needs the encoder that embedded the reports: pass --n3s_encoder (the path given to cmelt-n3s), "
            "or --negatives random"
        )
    settings = {key: manifest[key] for key in ("index_type", "max_length", "dtype") if key in manifest}
    train_dataset = add_n3s_column(train_dataset, cache_dir, encoder, k=data_args.n3s_k, device=device, **settings)
    return train_dataset, ReportTable.load(cache_dir).texts


def _require_n3s_column(train_dataset) -> None:
    """Refuse N3S on a dataset without the candidates column: the collator would silently keep every pair aligned."""
    from cmelt.data.n3s import DEFAULT_COLUMN

    columns = getattr(train_dataset, "column_names", None)
    if columns is not None and DEFAULT_COLUMN not in columns:
        raise ValueError(
            f"--negatives n3s needs the {DEFAULT_COLUMN!r} column (run cmelt-n3s, or pass --dataset_path so it is "
            f"computed); this dataset has {columns}. For CMELTMIMICLazyDataset call .with_n3s(...) first, or use "
            "--negatives random"
        )


def run_settings(model, data_args: CMELTDataArguments, training_args: CMELTTrainingArguments) -> dict:
    """What decides the result of a run, as JSON-comparable values: model config, data and training arguments."""
    config = model.config.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures", "auto_map"):
        config.pop(key, None)
    training = {key: value for key, value in training_args.to_dict().items()
                if key not in _TRAINING_ARGS_NOT_COMPARED and not key.startswith("_")}
    settings = {"model_config": config, "data_args": asdict(data_args), "training_args": training}
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def setting_differences(previous: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable `name: old -> new` lines for every setting that differs (nested dicts flattened)."""
    lines = []
    for key in sorted(set(previous) | set(current)):
        old, new = previous.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, dict) and isinstance(new, dict):
            lines.extend(setting_differences(old, new, f"{prefix}{key}."))
        elif old != new:
            lines.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return lines


def _prepare_output_dir(output_dir: Path, settings: dict, overwrite: bool) -> dict | None:
    """Check `output_dir` against this run; returns the previous run record (None when starting fresh).

    Raises a ValueError naming the differences when checkpoints of a run with other settings are there."""
    record_path = output_dir / RUN_RECORD_FILE
    has_checkpoints = output_dir.is_dir() and any(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
    if overwrite:
        for path in [*output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"), output_dir / "model"]:
            shutil.rmtree(path, ignore_errors=True)
        record_path.unlink(missing_ok=True)
        return None
    previous = None
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text())
        except ValueError as error:
            raise ValueError(f"{record_path} is unreadable ({error}); pass --overwrite_output_dir to start fresh") from error
    if previous is None:
        if has_checkpoints:
            raise ValueError(
                f"{output_dir} holds checkpoints but no {RUN_RECORD_FILE}, so they cannot be checked against this "
                "run's settings; pass --overwrite_output_dir to start fresh, or use another --output_dir"
            )
        return None
    differences = setting_differences(previous.get("settings", {}), settings)
    if differences:
        raise ValueError(
            f"{output_dir} holds a run with other settings; resuming it would mix two runs. Differences "
            f"(previous -> now):\n  " + "\n  ".join(differences) + "\nPass --overwrite_output_dir to delete it and "
            "start fresh, or use another --output_dir."
        )
    return previous


def pretrain(
    model_args: CMELTModelArguments,
    data_args: CMELTDataArguments,
    training_args: CMELTTrainingArguments,
    train_dataset=None,
    report_texts=None,
    model: CMELTForPreTraining | None = None,
    processor: CMELTProcessor | None = None,
    zero_shot_evaluator=None,
    zero_shot_eval_steps: int | None = None,
) -> CMELTPretrainingTrainer:
    """Pretrain, resuming from the last complete checkpoint in `output_dir`, and save the final model folder."""
    set_seed(training_args.seed)
    if train_dataset is None:
        if data_args.dataset_path is None:
            raise ValueError(
                "pass --dataset_path (a corpus converted by cmelt-convert-mimic); the embedded demo is `cmelt-demo`"
            )
        corpus = load_from_disk(data_args.dataset_path)
        train_dataset = corpus["train"] if "train" in corpus else corpus
        if data_args.negatives == "n3s" and report_texts is None:
            # one process embeds and searches (on its own device); the others then read its cache
            with training_args.main_process_first(local=True, desc="N3S negatives"):
                train_dataset, report_texts = _with_n3s(train_dataset, data_args, str(training_args.device))
    if data_args.negatives == "n3s":
        _require_n3s_column(train_dataset)
    if hasattr(train_dataset, "with_format"):
        train_dataset = train_dataset.with_format("numpy")  # whole arrays per row, not nested Python lists
    model = model or build_model(model_args)
    apply_config_settings(model.config, model_args)
    processor = processor or build_processor(model_args, model.config)
    apply_global_batch_size(training_args)
    apply_unused_parameters(training_args, model.config)
    collator = CMELTPretrainingCollator(
        processor=processor,
        report_texts=report_texts if data_args.negatives == "n3s" else None,
        negatives=data_args.negatives,
        negative_fraction=data_args.negative_fraction,
        seed=training_args.seed,
        config=model.config,  # lead masking, MLM probability and mask token, text length, MEM's token count
    )
    trainer = CMELTPretrainingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,  # every checkpoint carries the tokenizer and feature extractor
        zero_shot_evaluator=zero_shot_evaluator,
        zero_shot_eval_steps=zero_shot_eval_steps,
        tri_stage=training_args.tri_stage,
    )
    output_dir = Path(training_args.output_dir)
    settings = run_settings(model, data_args, training_args)
    with training_args.main_process_first(local=False, desc="checking output_dir"):
        previous = _prepare_output_dir(output_dir, settings, training_args.overwrite_output_dir and trainer.is_world_process_zero())
        if trainer.is_world_process_zero():
            if remove_stale_staging(output_dir):
                logger.warning(f"removed the partial checkpoint a killed run left in {output_dir}/.staging")
            if previous is None or not previous.get("finished"):
                write_json_atomically(output_dir / RUN_RECORD_FILE, {"settings": settings, "finished": False})
    last_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if previous is not None and previous.get("finished") and last_checkpoint:
        logger.warning(f"{output_dir} already holds this finished run ({last_checkpoint}); nothing to do")
        trainer._load_from_checkpoint(last_checkpoint)
        return trainer
    if last_checkpoint:
        logger.warning(f"resuming from {last_checkpoint}")
    trainer.train(resume_from_checkpoint=last_checkpoint)
    save_model_folder(trainer, processor, output_dir / "model")
    if trainer.is_world_process_zero():
        write_json_atomically(output_dir / RUN_RECORD_FILE, {"settings": settings, "finished": True})
        if training_args.push_to_hub:
            trainer.push_model_folder(output_dir / "model", commit_message="End of training")
    return trainer
