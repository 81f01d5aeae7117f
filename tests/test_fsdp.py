"""FSDP2 on CPU: `pretrain()` with `--fsdp "full_shard auto_wrap"` and the FSDP2 config over 2 gloo processes
(torchrun): accelerate shards the tiny model (`fsdp2_prepare_model`, our layer classes), the Trainer takes 2 steps
and writes sharded checkpoints, and the final save (`save_model_folder`: FULL_STATE_DICT switch, `Trainer.save_model`,
accelerate's `get_state_dict`) must write the full trained weights, loadable, not a rank's shard.

accelerate 1.x does not run FSDP on CPU: with `use_cpu` it builds a gloo DDP state (`MULTI_CPU`) and drops the FSDP
plugin (it sets FSDP up for GPU-like distributed types only); without `use_cpu`, a CPU machine gets no process group
at all. So the worker's Trainer puts back the FSDP2 plugin that `--fsdp_config` asked for, as accelerate does on GPUs;
everything after that (sharding, training, checkpoints, saving) is accelerate's and transformers' own code."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cmelt.data.text_tower import build_tiny_t5

REPO = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.tensor import DTensor
    from transformers import AutoTokenizer

    import cmelt.train_scripts.pretraining as pretrain_script
    from modeling_cmelt import CMELTConfig, CMELTForPreTraining
    from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
    from modeling_cmelt.processing_cmelt import CMELTProcessor
    from cmelt.train_scripts.trainer import CMELTPretrainingTrainer

    tokenizer_dir, out, tests_dir, seed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sys.path.insert(0, tests_dir)
    from test_pretraining import lookup, tiny_corpus


    class FSDPOnCPUTrainer(CMELTPretrainingTrainer):
        accelerate_chose = []

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            self.accelerate_chose.append(state.distributed_type)
            if not self.is_fsdp_enabled:
                state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
                state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                self.is_fsdp_enabled = True


    pretrain_script.CMELTPretrainingTrainer = FSDPOnCPUTrainer
    # the layer classes of configs/accelerate/fsdp.yaml
    layer_classes = ["CMELTECGLayer", "CMELTFusionLayer", "CMELTMEMDecoderLayer", "T5Block"]
    args = pretrain_script.CMELTTrainingArguments(
        output_dir=str(out), use_cpu=True, max_steps=2, save_steps=1, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, report_to="none", dataloader_num_workers=0,
        fsdp="full_shard auto_wrap",
        fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": layer_classes,
                     "state_dict_type": "SHARDED_STATE_DICT", "cpu_ram_efficient_loading": False},
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = CMELTProcessor(CMELTFeatureExtractor(num_samples=1000), tokenizer)
    torch.manual_seed(seed)
    model = CMELTForPreTraining(CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)}))
    if args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / "initial.pt")

    trainer = pretrain_script.pretrain(
        pretrain_script.CMELTModelArguments(), pretrain_script.CMELTDataArguments(), args,
        train_dataset=tiny_corpus(), report_texts=lookup, model=model, processor=processor,
    )
    # accelerate 1.x on CPU: gloo DDP, the FSDP plugin dropped (if this fails, accelerate runs FSDP on CPU now,
    # and FSDPOnCPUTrainer can go)
    assert FSDPOnCPUTrainer.accelerate_chose[0] == DistributedType.MULTI_CPU, FSDPOnCPUTrainer.accelerate_chose
    assert trainer.accelerator.is_fsdp2 and type(trainer.model).__name__ == "FSDPCMELTForPreTraining"
    weights = trainer.model.state_dict()
    assert all(isinstance(tensor, DTensor) for tensor in weights.values())
    full = {name: tensor.full_tensor() for name, tensor in weights.items()}  # another route to the weights
    if args.process_index == 0:
        shard = {name: tensor.to_local().clone() for name, tensor in weights.items()}
        torch.save({"full": full, "rank0_shard": shard}, out / "trained.pt")

    """
)


def run_worker(script: Path, tokenizer_dir: Path, output_dir: Path, seed: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tokenizer_dir), str(output_dir), str(Path(__file__).parent), str(seed)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """run/: the worker's first run (initial.pt, trained.pt with the full weights and rank 0's shard, checkpoints,
    model/); resumed/: a rerun of that job killed after checkpoint-1 (a new torchrun, as after a crash)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pretraining import REPORTS

    out = tmp_path_factory.mktemp("fsdp")
    tokenizer_dir = build_tiny_t5(REPORTS * 5, out / "t5", vocab_size=64, d_model=32, d_ff=64)
    script = out / "fsdp_worker.py"
    script.write_text(WORKER)
    run_worker(script, tokenizer_dir, out / "run", seed=0)
    resumed = out / "resumed"
    # what a crash after checkpoint-1 leaves (scheduler.pt included); only the test's own records stay behind
    shutil.copytree(out / "run", resumed, ignore=shutil.ignore_patterns("checkpoint-2", "model", "initial.pt", "trained.pt"))
    record = json.loads((resumed / "cmelt_run.json").read_text())
    (resumed / "cmelt_run.json").write_text(json.dumps({**record, "finished": False}))
    stderr = run_worker(script, tokenizer_dir, resumed, seed=1)  # other initial weights: it must load checkpoint-1
    assert f"resuming from {resumed / 'checkpoint-1'}" in stderr, stderr[-3000:]
    return out


@pytest.mark.slow
def test_fsdp2_sharded_model_saves_a_full_loadable_folder(fsdp_run):
    from transformers import AutoModel, AutoModelForPreTraining

    from modeling_cmelt import CMELTForPreTraining

    initial = torch.load(fsdp_run / "run" / "initial.pt")
    trained = torch.load(fsdp_run / "run" / "trained.pt")
    full, shard = trained["full"], trained["rank0_shard"]
    # the step trained the model, and the shards really were shards
    assert any(not torch.equal(full[name], initial[name]) for name in initial)
    assert any(shard[name].shape != full[name].shape for name in full)

    # checkpoints are sharded (every rank wrote its part: resume reads them back); the final folder is whole
    assert (fsdp_run / "run" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()
    folder = fsdp_run / "run" / "model"
    files = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_cmelt.py", "processor_config.json", "README.md"} <= files
    # only C-MELT's own code ships: none of torch's FSDP modules (the sharded model's class lives there)
    code = {path.name for path in REPO.joinpath("modeling_cmelt").glob("*.py")} - {"__init__.py"}
    assert {name for name in files if name.endswith(".py")} == code
    for loader in (CMELTForPreTraining.from_pretrained,
                   lambda path: AutoModelForPreTraining.from_pretrained(path, trust_remote_code=True)):
        loaded = loader(folder).state_dict()
        assert loaded.keys() == full.keys()
        for name, tensor in full.items():
            assert torch.equal(loaded[name], tensor), name
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).state_dict()
    assert encoder and encoder.keys() <= full.keys()
    for name, tensor in encoder.items():
        assert torch.equal(tensor, full[name]), name


def step_logs(run_dir: Path) -> list[tuple[int, float, float]]:
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    return [(row["step"], row["loss"], row["learning_rate"]) for row in state["log_history"] if "loss" in row]


@pytest.mark.slow
def test_fsdp2_resume_reads_the_sharded_checkpoint(fsdp_run):
    """The rerun (other initial weights) loads checkpoint-1's shards: step 2 sees the same weights and batch, so
    the same loss, and the final weights are the trained ones, not its own initial ones."""
    from modeling_cmelt import CMELTForPreTraining

    (step1, step2), (resumed_step1, resumed_step2) = step_logs(fsdp_run / "run"), step_logs(fsdp_run / "resumed")
    assert resumed_step1 == step1  # copied from checkpoint-1's trainer state
    assert resumed_step2[:2] == step2[:2]  # step 2, same loss (float equality: same weights, same batch)
    full = torch.load(fsdp_run / "run" / "trained.pt")["full"]
    own_initial = torch.load(fsdp_run / "resumed" / "initial.pt")
    resumed = CMELTForPreTraining.from_pretrained(fsdp_run / "resumed" / "model").state_dict()
    for name, tensor in full.items():
        assert (resumed[name] - tensor).abs().max() < 1e-2 * max(1.0, (own_initial[name] - tensor).abs().max()), name


@pytest.mark.slow
def test_fsdp2_resume_continues_the_learning_rate_schedule(fsdp_run):
    from modeling_cmelt import CMELTForPreTraining

    assert step_logs(fsdp_run / "resumed") == step_logs(fsdp_run / "run")
    full = torch.load(fsdp_run / "run" / "trained.pt")["full"]
    resumed = CMELTForPreTraining.from_pretrained(fsdp_run / "resumed" / "model").state_dict()
    for name, tensor in full.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_a_rank_shard_saved_as_the_model_does_not_load(fsdp_run, tmp_path):
    """What the test above guards against: one rank's FSDP shard written as the model is refused on load."""
    from safetensors.torch import save_file

    from modeling_cmelt import CMELTForPreTraining

    shard = torch.load(fsdp_run / "run" / "trained.pt")["rank0_shard"]
    broken = tmp_path / "broken"
    shutil.copytree(fsdp_run / "run" / "model", broken)
    tied_copy = "text_model.encoder.embed_tokens.weight"  # safetensors stores the tied embedding once
    save_file({name: tensor.contiguous() for name, tensor in shard.items() if name != tied_copy},
              str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        CMELTForPreTraining.from_pretrained(broken)
