"""Pretraining machinery: the batch collator, the tri-stage schedule, atomic checkpoints and resume after SIGKILL."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Sequence, Value

from cmelt.data.collator import CMELTPretrainingCollator
from cmelt.data.ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE, encode_ecg
from cmelt.data.text_tower import build_tiny_t5
from cmelt.train_scripts.trainer import tri_stage_factor
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor

REPORTS = [
    "sinus rhythm normal ecg",
    "sinus bradycardia otherwise normal ecg",
    "atrial fibrillation with rapid ventricular response abnormal ecg",
    "left bundle branch block abnormal ecg",
    "sinus tachycardia st elevation consider acute infarct",
    "right bundle branch block borderline ecg",
]


def tiny_corpus(num_rows: int = 24, num_samples: int = 1000, seed: int = 0) -> Dataset:
    """Rows shaped like the converted corpus (ECG int16 uV, report, report id, N3S candidates)."""
    rng = np.random.default_rng(seed)
    report_ids = rng.integers(0, len(REPORTS), num_rows)
    negatives = [[int(j) for j in range(len(REPORTS)) if j != r][:3] for r in report_ids]
    features = Features(
        {
            "study_id": Value("int64"),
            "ecg": ECG_FEATURE if num_samples == 5000 else Sequence(Sequence(Value("int16"))),
            "lead_mask": LEAD_MASK_FEATURE,
            "report": Value("string"),
            "report_id": Value("int64"),
            "n3s_negatives": Sequence(Value("int64")),
        }
    )
    return Dataset.from_dict(
        {
            "study_id": list(range(1000, 1000 + num_rows)),
            "ecg": list(encode_ecg(rng.normal(0, 0.5, (num_rows, 12, num_samples)))),
            "lead_mask": [[True] * 12 for _ in range(num_rows)],
            "report": [REPORTS[r] for r in report_ids],
            "report_id": report_ids.tolist(),
            "n3s_negatives": negatives,
        },
        features=features,
    )


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    folder = build_tiny_t5(REPORTS * 5, tmp_path_factory.mktemp("t5"), vocab_size=64, d_model=32, d_ff=64)
    from transformers import AutoTokenizer

    return CMELTProcessor(CMELTFeatureExtractor(num_samples=1000), AutoTokenizer.from_pretrained(folder))


def lookup(ids):
    return [REPORTS[i] for i in ids]


def test_collator_swaps_half_and_masks_the_text_it_feeds(processor):
    rows = list(tiny_corpus())
    collator = CMELTPretrainingCollator(processor, report_texts=lookup, seed=3, ecg_num_tokens=62)
    batch = collator(rows[:16])
    aligned = batch["is_aligned"].bool()
    assert 7 <= int((~aligned).sum()) <= 9  # int(0.5 * 16 + U(0, 1))
    assert torch.equal(batch["text_report_ids"][aligned], batch["ecg_report_ids"][aligned])
    assert not torch.any(batch["text_report_ids"][~aligned] == batch["ecg_report_ids"][~aligned])
    # reference defect 2: MLM labels are the tokens of the text actually fed (the negative), not the original
    for i in torch.nonzero(~aligned).flatten().tolist():
        fed = processor.tokenizer(REPORTS[int(batch["text_report_ids"][i])])["input_ids"]
        original = processor.tokenizer(rows[i]["report"])["input_ids"]
        restored = torch.where(batch["labels"][i] != -100, batch["labels"][i], batch["input_ids"][i])
        length = int(batch["attention_mask"][i].sum())
        assert restored[:length].tolist() == fed and fed != original
    assert batch["noise"].shape == (16, 62)
    assert batch["input_values"].dtype == torch.float32 and batch["input_values"].shape == (16, 12, 1000)


def test_collator_lead_masking_keeps_a_lead_and_is_reproducible(processor):
    rows = list(tiny_corpus())
    collator = CMELTPretrainingCollator(processor, report_texts=lookup, lead_mask_prob=0.95, seed=1)
    first, second = collator(rows[:8]), collator(rows[:8])
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert first["lead_mask"].any(dim=1).all()
    assert first["lead_mask"].float().mean() < 0.3
    other = CMELTPretrainingCollator(processor, report_texts=lookup, lead_mask_prob=0.95, seed=2)(rows[:8])
    assert not torch.equal(first["lead_mask"], other["lead_mask"])


def test_collator_skips_and_counts_corrupt_rows(processor):
    rows = list(tiny_corpus())[:4]
    rows[1] = None
    rows[2] = {**rows[2], "ecg": np.full((12, 1000), np.nan, dtype=np.float32)}
    collator = CMELTPretrainingCollator(processor, report_texts=lookup)
    batch = collator(rows)
    assert batch["input_values"].shape[0] == 2 and collator.skipped == 2
    with pytest.raises(ValueError, match="corrupt"):
        collator([None])


def test_collator_reads_its_masking_settings_from_the_model_config(processor):
    """The model config is the one home of lead masking, MLM probability / mask token and text length."""
    from modeling_cmelt import CMELTConfig

    config = CMELTConfig.from_preset("tiny", mlm_probability=0.4, max_text_length=12, ecg_config={"lead_mask_prob": 0.3})
    collator = CMELTPretrainingCollator(processor, report_texts=lookup, config=config)
    assert (collator.lead_mask_prob, collator.mlm_probability, collator.max_length) == (0.3, 0.4, 12)
    assert collator.mlm_mask_token == config.mlm_mask_token and collator.ecg_num_tokens == config.ecg_config.num_tokens
    assert collator(list(tiny_corpus(8)))["input_ids"].shape[1] <= 12
    defaults = CMELTPretrainingCollator(processor, report_texts=lookup)  # no config: the config class's defaults
    assert (defaults.lead_mask_prob, defaults.mlm_probability, defaults.max_length) == (0.5, 0.25, 256)
    assert CMELTPretrainingCollator(processor, report_texts=lookup, config=config, lead_mask_prob=0.9).lead_mask_prob == 0.9


def test_tri_stage_schedule_shape():
    total = 1000
    factors = [tri_stage_factor(step, total) for step in range(total + 50)]
    assert factors[0] == pytest.approx(0.01)
    assert factors[50] == pytest.approx(0.01 + 0.99 * 0.5)
    assert factors[100] == 1.0 and factors[499] == 1.0
    assert factors[750] == pytest.approx(0.05**0.5)
    assert factors[1000] == pytest.approx(0.05) and factors[-1] == pytest.approx(0.05)
    assert all(a <= b for a, b in zip(factors[:100], factors[1:101]))
    assert all(a >= b for a, b in zip(factors[500:1000], factors[501:1001]))


RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from transformers import AutoTokenizer, TrainerCallback
    sys.path.insert(0, sys.argv[3])
    from test_pretraining import REPORTS, tiny_corpus, lookup
    from modeling_cmelt import CMELTConfig, CMELTForPreTraining
    from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
    from modeling_cmelt.processing_cmelt import CMELTProcessor
    from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain

    output_dir, tokenizer_dir, _, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = CMELTProcessor(CMELTFeatureExtractor(num_samples=1000), tokenizer)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    import torch; torch.manual_seed(0)
    model = CMELTForPreTraining(config)
    args = CMELTTrainingArguments(
        output_dir=output_dir, max_steps=8, per_device_train_batch_size=4, save_steps=2, logging_steps=1,
        learning_rate=1e-3, report_to="none", seed=7, save_total_limit=10, dataloader_num_workers=0,
    )
    import cmelt.train_scripts.trainer as trainer_module
    original_init = trainer_module.CMELTPretrainingTrainer.__init__
    def init_with_kill(self, *a, **k):
        original_init(self, *a, **k)
        self.add_callback(Kill())
    trainer_module.CMELTPretrainingTrainer.__init__ = init_with_kill
    pretrain(CMELTModelArguments(), CMELTDataArguments(), args, train_dataset=tiny_corpus(), report_texts=lookup,
             model=model, processor=processor)
    """
)


def losses_by_step(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "checkpoint-8" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_with_the_same_loss_curve(tmp_path, processor):
    tokenizer_dir = tmp_path / "tokenizer"
    processor.tokenizer.save_pretrained(tokenizer_dir)
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    tests_dir = str(Path(__file__).parent)

    def run(output_dir, kill_at):
        return subprocess.run(
            [sys.executable, str(script), str(output_dir), str(tokenizer_dir), tests_dir, str(kill_at)],
            capture_output=True, text=True, timeout=600,
        )

    uninterrupted = run(tmp_path / "straight", -1)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    killed = run(tmp_path / "resumed", 5)
    assert killed.returncode == -9  # SIGKILL after step 5: checkpoint-4 exists, nothing after it
    checkpoints = sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert all((tmp_path / "resumed" / c / "model.safetensors").is_file() for c in checkpoints)
    resumed = run(tmp_path / "resumed", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr  # logged (accelerate logger), not printed
    straight, again = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "resumed")
    assert sorted(straight) == list(range(1, 9)) and sorted(again) == list(range(1, 9))
    for step in range(1, 9):
        assert again[step] == pytest.approx(straight[step], rel=1e-4), step
    model_folder = tmp_path / "resumed" / "model"
    saved = {p.name for p in model_folder.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_cmelt.py", "pipeline_cmelt.py"} <= saved
    assert {"tokenizer_config.json", "processor_config.json"} <= saved, saved


def test_pretraining_without_a_corpus_points_to_the_demo():
    """`cmelt-pretrain` is pretraining only (its --help shows the real flags); the demo is its own command."""
    from cmelt.train_scripts.pretrain import main

    with pytest.raises(ValueError, match="cmelt-demo"):
        main(["--output_dir", "/tmp/cmelt-no-corpus"])
