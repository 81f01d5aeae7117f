"""The pretraining `Trainer`: fairseq's tri-stage learning-rate schedule, per-loss logging (MLM, MEM, ETM,
Siglep, ETM accuracy), optional periodic zero-shot evaluation, and checkpoints that are complete or absent."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback
from transformers import trainer as hf_trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, rotate_checkpoints

STAGING_DIR = ".staging"
# Checkpoint files that resume training but do not belong to the Hub model repo.
_RESUME_ONLY_FILES = ["optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin",
                      "trainer_state.json", "global_step*/**", "pytorch_model_fsdp*/**", "optimizer_*/**"]


def remove_stale_staging(run_dir: str | os.PathLike) -> bool:
    """Delete `<run_dir>/.staging` (checkpoints a killed job was still writing); True when there was one."""
    staging = os.path.join(run_dir, STAGING_DIR)
    if not os.path.isdir(staging):
        return False
    shutil.rmtree(staging, ignore_errors=True)
    return True


@dataclass(frozen=True)
class TriStageSchedule:
    """fairseq's tri-stage learning-rate schedule; the defaults are the paper's (the one home of these numbers).

    Args:
        warmup_ratio: fraction of the steps spent warming up linearly from `init_lr_scale` x lr to lr.
        hold_ratio: fraction of the steps held at the peak lr.
        decay_ratio: fraction of the steps decaying exponentially to `final_lr_scale` x lr.
        init_lr_scale: where the warm-up starts, as a multiple of the peak lr.
        final_lr_scale: where the decay ends (and stays), as a multiple of the peak lr.
    """

    warmup_ratio: float = 0.1
    hold_ratio: float = 0.4
    decay_ratio: float = 0.5
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05


def tri_stage_factor(step: int, num_training_steps: int, **schedule) -> float:
    """The tri-stage schedule (`TriStageSchedule(**schedule)`) as a multiplier of the peak learning rate: linear
    warm-up from `init_lr_scale`, hold at 1, exponential decay to `final_lr_scale`, then stay there."""
    settings = TriStageSchedule(**schedule)
    warmup = int(num_training_steps * settings.warmup_ratio)
    hold = int(num_training_steps * settings.hold_ratio)
    decay = int(num_training_steps * settings.decay_ratio)
    if step < warmup:
        return settings.init_lr_scale + (1.0 - settings.init_lr_scale) * step / warmup
    step -= warmup
    if step < hold:
        return 1.0
    step -= hold
    if step < decay:
        return math.exp(math.log(settings.final_lr_scale) * step / decay)
    return settings.final_lr_scale


def get_tri_stage_schedule(optimizer: torch.optim.Optimizer, num_training_steps: int, **ratios) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: tri_stage_factor(step, num_training_steps, **ratios))


class _EvaluateEvery(TrainerCallback):
    """Asks for an evaluation every `steps` optimisation steps (pretraining has no eval_dataset to key it on)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps == 0:
            control.should_evaluate = True
        return control


class CMELTPretrainingTrainer(Trainer):
    """`Trainer` for `CMELTForPreTraining`.

    Args:
        zero_shot_evaluator: optional callable(model) -> {metric: value}, run at every evaluation (e.g. held-out
            zero-shot macro AUC); its metrics are logged with the `eval_` prefix.
        zero_shot_eval_steps: run the evaluator every this many steps (None: only when asked).
        tri_stage: fields of `TriStageSchedule` (ratios and scales); None keeps `args.lr_scheduler_type`.
    """

    def __init__(
        self,
        *args,
        zero_shot_evaluator: Callable | None = None,
        zero_shot_eval_steps: int | None = None,
        tri_stage: dict | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.zero_shot_evaluator = zero_shot_evaluator
        if zero_shot_evaluator is not None and zero_shot_eval_steps:
            self.add_callback(_EvaluateEvery(zero_shot_eval_steps))
        self.tri_stage = tri_stage
        self._running = defaultdict(lambda: [torch.zeros((), device=self.args.device), 0])

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.tri_stage is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = get_tri_stage_schedule(optimizer or self.optimizer, num_training_steps, **self.tri_stage)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """transformers' choice (no decay on norms and biases) minus the model's `no_weight_decay_patterns`."""
        patterns = getattr(model, "no_weight_decay_patterns", ())
        names = super().get_decay_parameter_names(model)
        return [name for name in names if not any(re.search(pattern, name) for pattern in patterns)]

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        world = {"data_parallel_rank": self.args.process_index, "data_parallel_world_size": self.args.world_size}
        outputs = model(**inputs, **world)
        if model.training:
            for name in ("loss_mlm", "loss_mem", "loss_etm", "loss_siglep"):
                value = outputs.get(name)
                if value is not None:
                    self._track(name, value)
            if outputs.get("etm_probs") is not None:
                predicted = (outputs["etm_probs"] > 0.5).float()
                self._track("etm_accuracy", (predicted == inputs["is_aligned"]).float().mean())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _track(self, name: str, value: torch.Tensor) -> None:
        running = self._running[name]
        running[0] = running[0] + value.detach().float()
        running[1] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._running:
            for name, (total, count) in self._running.items():
                logs[name] = round(self.accelerator.reduce(total / count, reduction="mean").item(), 4)
            self._running.clear()
            skipped = getattr(self.data_collator, "skipped", 0)
            if skipped:
                logs["skipped_records"] = skipped
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.zero_shot_evaluator is not None:
            was_training = self.model.training
            self.model.eval()
            zero_shot = {f"{metric_key_prefix}_{k}": v for k, v in self.zero_shot_evaluator(self.model).items()}
            self.model.train(was_training)
            self.log(zero_shot)
            metrics.update(zero_shot)
        return metrics

    def _get_output_dir(self, trial):
        staging = getattr(self, "_checkpoint_staging", None)
        return staging if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint under `<output_dir>/.staging/` and move it into place only when every process
        has finished writing, so `checkpoint-N` is complete or absent whenever the job dies."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._checkpoint_staging = os.path.join(run_dir, STAGING_DIR)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(os.path.join(run_dir, name))  # the final folder, never the staging one

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Upload the checkpoint folder itself as the Hub repo (it is complete: weights, config with `auto_map`,
        code files, processor), without the resume-only files; with `hub_strategy` checkpoint / all_checkpoints
        the whole checkpoint also goes to `last-checkpoint` / `checkpoint-N`. Called once the checkpoint has
        been renamed into place (transformers' own call, from inside the staging write, is skipped)."""
        if getattr(self, "_checkpoint_staging", None) is not None:
            return
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        message = f"Training in progress, step {self.state.global_step}"
        jobs = [self._upload(checkpoint_folder, message, ignore_patterns=_RESUME_ONLY_FILES, run_as_future=True)]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path_in_repo = "last-checkpoint" if self.args.hub_strategy == HubStrategy.CHECKPOINT else os.path.basename(
                checkpoint_folder)
            jobs.append(self._upload(checkpoint_folder, message + ", checkpoint", path_in_repo=path_in_repo,
                                     run_as_future=True))
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = hf_trainer.PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def push_model_folder(self, folder: str | os.PathLike, commit_message: str = "End of training") -> None:
        """Upload a finished model folder (main process; waits for the checkpoint uploads still running first)."""
        if not self.is_world_process_zero():
            return
        self._finish_current_push()
        self._upload(str(folder), commit_message, run_as_future=False)

    def _upload(self, folder: str, message: str, **kwargs):
        return hf_trainer.hf_api().upload_folder(
            repo_id=self.hub_model_id, folder_path=folder, commit_message=message, token=self.args.hub_token,
            revision=self.args.hub_revision, **kwargs,
        )
