"""Data-parallel pretraining equals single-process pretraining on the concatenated batch (Siglep over the global
batch with a gradient-carrying all-gather). Runs two CPU processes with gloo under torchrun."""

import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from modeling_cmelt import CMELTConfig, CMELTForPreTraining

    def build():
        torch.manual_seed(0)
        no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0}
        config = CMELTConfig.from_preset(
            "tiny", fusion_dropout=0.0, ecg_config=no_dropout, text_config={"dropout_rate": 0.0},
            siglep_learnable_scale=True, siglep_normalize=True,
        )
        return CMELTForPreTraining(config), config

    def make_batch(config, batch=4, length=8):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(2, 100, (batch, length), generator=g)
        labels = torch.full((batch, length), -100)
        labels[:, 3] = ids[:, 3]  # the same number of masked tokens per sample keeps per-rank means comparable
        return {
            "input_values": torch.randn(batch, 12, config.ecg_config.num_samples, generator=g),
            "input_ids": ids,
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
            "labels": labels,
            "is_aligned": torch.tensor([1.0, 0.0, 1.0, 1.0]),
            "noise": torch.rand(batch, config.ecg_config.num_tokens, generator=g),
        }

    def grads(model):
        return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    out_path = sys.argv[1]
    if os.environ.get("WORLD_SIZE") is None:
        model, config = build()
        output = model(**make_batch(config))
        output.loss.backward()
        torch.save({"loss": output.loss.detach(), "siglep": output.loss_siglep.detach(), "grads": grads(model)}, out_path)
    else:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model, config = build()
        ddp = DistributedDataParallel(model)
        batch = {k: v[2 * rank : 2 * rank + 2] for k, v in make_batch(config).items()}
        output = ddp(**batch, data_parallel_rank=rank, data_parallel_world_size=dist.get_world_size())
        output.loss.backward()
        losses = torch.stack([output.loss.detach(), output.loss_siglep.detach()])
        dist.all_reduce(losses)
        losses /= dist.get_world_size()
        if rank == 0:
            torch.save({"loss": losses[0], "siglep": losses[1], "grads": grads(model)}, out_path)
        dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_losses_and_gradients_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    single = tmp_path / "single.pt"
    double = tmp_path / "double.pt"
    run = dict(capture_output=True, text=True, timeout=300)
    result = subprocess.run([sys.executable, str(script), str(single)], **run)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(double)],
        **run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = torch.load(single), torch.load(double)
    assert torch.allclose(one["siglep"], two["siglep"], atol=1e-5)
    assert torch.allclose(one["loss"], two["loss"], atol=1e-5)
    assert one["grads"].keys() == two["grads"].keys()
    for name, grad in one["grads"].items():
        assert torch.allclose(grad, two["grads"][name], atol=1e-5, rtol=1e-4), name
