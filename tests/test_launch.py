"""The README's multi-process launch lines, run for real on CPU with 2 processes (gloo): pretraining with N3S
from an empty cache, checkpoints, resume, the final save; a loss switched off under DDP; a 2-process fine-tune;
zero-shot and linear probe split over 2 processes (domain transfer shares their ECG pass)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmelt.data.text_tower import build_tiny_t5

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
# The README's CPU line: the single-node DDP config with 2 processes; `--use_cpu true` (a TrainingArguments flag)
# makes each process a gloo CPU rank (`accelerate launch --cpu` would start one process only, without MPI).
CPU_2PROC = ["--config_file", str(CONFIGS / "accelerate" / "ddp.yaml"), "--num_processes", "2",
             "--mixed_precision", "no"]


def run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def corpus_and_encoder(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pretraining import REPORTS, tiny_corpus

    root = tmp_path_factory.mktemp("launch")
    encoder = build_tiny_t5(REPORTS * 5, root / "t5", vocab_size=64, d_model=32, d_ff=64)
    corpus = tiny_corpus(num_rows=32).remove_columns("n3s_negatives")
    corpus.save_to_disk(str(root / "corpus"))
    return root / "corpus", encoder


def pretrain_command(dataset: Path, encoder: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *LAUNCH, *CPU_2PROC, "train_scripts/pretrain.py", "--dataset_path", str(dataset), "--model_preset", "tiny",
        "--text_encoder_name_or_path", str(encoder), "--n3s_encoder", str(encoder), "--n3s_k", "3",
        "--output_dir", str(output_dir), "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
        "--global_batch_size", "8", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
        "--report_to", "none", "--dataloader_num_workers", "0", "--save_total_limit", "5", "--use_cpu", "true", *extra,
    ]


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_process_pretraining_n3s_checkpoint_resume_and_final_save(corpus_and_encoder, tmp_path):
    from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor

    dataset, encoder = corpus_and_encoder
    output = tmp_path / "run"
    first = run(pretrain_command(dataset, encoder, output))
    # N3S from an empty cache: embedded once (the main process first), then read by the other process
    assert first.stderr.count("embedding reports: 100%") == 1, first.stderr[-3000:]
    assert "global batch 8 = 2 per device x 2 accumulation x 2 processes" in first.stderr
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    model_dir = output / "model"
    files = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_cmelt.py", "processing_cmelt.py", "pipeline_cmelt.py",
            "feature_extraction_cmelt.py", "tokenizer_config.json", "processor_config.json", "README.md"} <= files
    config = json.loads((model_dir / "config.json").read_text())
    assert "AutoModel" in config["auto_map"]
    # checkpoints carry the code and the processor too (cmelt-zero-shot --model .../checkpoint-N works)
    checkpoint = output / "checkpoint-4"
    AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    assert (checkpoint / "modeling_cmelt.py").is_file()

    loaded = AutoModelForPreTraining.from_pretrained(model_dir, trust_remote_code=True)
    final_in_memory = load_weights(checkpoint)  # the weights the training processes held after the last step
    state = loaded.state_dict()
    for name, tensor in final_in_memory.items():
        assert torch.equal(state[name], tensor), name
    encoder_only = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    assert encoder_only.config.auto_map == loaded.config.auto_map
    AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)

    # a job killed after checkpoint-2: the rerun resumes from it and ends with the same weights
    resumed = tmp_path / "resumed"
    shutil.copytree(output, resumed, ignore=shutil.ignore_patterns("checkpoint-4", "model"))
    record = json.loads((resumed / "cmelt_run.json").read_text())
    (resumed / "cmelt_run.json").write_text(json.dumps({**record, "finished": False}))
    second = run(pretrain_command(dataset, encoder, resumed))
    assert "resuming from" in second.stderr and str(resumed / "checkpoint-2") in second.stderr
    assert "embedding reports" not in second.stderr  # the N3S cache is reused
    again = load_weights(resumed / "model")
    for name, tensor in load_weights(model_dir).items():
        torch.testing.assert_close(again[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_two_process_pretraining_with_a_loss_switched_off(corpus_and_encoder, tmp_path):
    """Without ETM and Siglep, parts of the model get no gradient: DDP must be told to look for them."""
    dataset, encoder = corpus_and_encoder
    output = tmp_path / "ablation"
    result = run(pretrain_command(dataset, encoder, output, "--use_etm", "false", "--use_siglep", "false",
                                  "--max_steps", "2", "--negatives", "random"))
    assert (output / "model" / "model.safetensors").is_file(), result.stderr[-2000:]




@pytest.mark.slow
def test_two_process_fine_tune_writes_once_and_saves_a_loadable_model(model_folder, dataset_path, tmp_path):  # noqa: F811
    from transformers import AutoModelForAudioClassification

    output = tmp_path / "finetune"
    result = run([
        *LAUNCH, *CPU_2PROC, "-m", "cmelt.train_scripts.finetune", "--model", str(model_folder), "--dataset_path",
        str(dataset_path), "--output_dir", str(output), "--no_progress", "--no_figures", "--batch_size", "16",
        "--epochs", "2", "--train_batch_size", "6", "--learning_rate", "1e-3", "--dataloader_num_workers", "0",
        "--save_model", "--use_cpu", "true", "--gradient_accumulation_steps", "2", "--warmup_steps", "1",
    ])
    results = json.loads((output / "results.json").read_text())
    assert len(results["results"]) == 1
    assert result.stdout.count("results written to") == 1  # the main process alone wrote and printed them
    row = results["results"][0]
    assert row["protocol"] == "fine-tune" and 0.0 <= row["value"] <= 1.0
    args = torch.load(Path(row["details"]["best_checkpoint"]) / "training_args.bin", weights_only=False)
    assert args.world_size == 2 and args.gradient_accumulation_steps == 2 and args.warmup_steps == 1
    model = AutoModelForAudioClassification.from_pretrained(output / "model", trust_remote_code=True)
    assert model.config.num_labels == len(row["per_label"]), result.stderr[-1000:]


def evaluation_command(module: str, model_folder: Path, dataset_path: Path, output: Path, *extra: str) -> list[str]:
    """An evaluation script's flags; 18 test rows in batches of 4 per process leave an uneven last batch."""
    return [f"cmelt.train_scripts.{module}", "--model", str(model_folder), "--dataset_path", str(dataset_path),
            "--output_dir", str(output), "--no_progress", "--no_figures", "--batch_size", "4",
            "--dataloader_num_workers", "0", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("module, extra", [
    ("zero_shot", ["--baseline", "random", "--bootstrap_resamples", "50"]),
    ("linear_probe", ["--epochs", "3", "--label_fraction", "0.5", "1.0", "--bootstrap_resamples", "50"]),
])
def test_two_process_evaluation_equals_one_process_and_writes_once(model_folder, dataset_path, tmp_path, module,  # noqa: F811
                                                                   extra):
    """The ECG passes are split over the processes (Trainer.predict) and gathered in row order: the launched
    run's results equal a single process's, and only the main process writes them."""
    import importlib

    single_flags = evaluation_command(module, model_folder, dataset_path, tmp_path / "one", *extra, "--use_cpu", "true")
    importlib.import_module(single_flags[0]).main(single_flags[1:])
    launched = run([*LAUNCH, *CPU_2PROC, "-m", *evaluation_command(
        module, model_folder, dataset_path, tmp_path / "two", *extra, "--use_cpu", "true")])
    assert launched.stdout.count("results written to") == 1, launched.stdout[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())["results"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    assert [row["details"]["ecg_pass_processes"] for row in one + two] == [1] * len(one) + [2] * len(two)
    assert len(one) == len(two) >= 1
    for first, second in zip(one, two):
        assert first["n_test"] == second["n_test"] == 18
        assert second["value"] == pytest.approx(first["value"], abs=1e-6)
        for label, value in (first["per_label"] or {}).items():
            assert second["per_label"][label] == pytest.approx(value, abs=1e-6, nan_ok=True), label
        if first["baseline"] is not None:
            assert second["baseline"]["value"] == pytest.approx(first["baseline"]["value"], abs=1e-6)
