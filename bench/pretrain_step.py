"""Seconds per pretraining step, samples/s and model FLOPs utilisation (MFU) at paper width.

    python -m bench.pretrain_step [--batch_size 8] [--text_length 64] [--min_text_length 8] [--steps 3] [--quick]
    python -m bench.pretrain_step --preset demo --batch_size 64 --text_length 40 --steps 8 \
        --overrides '{"siglep_clean_ecg": false}' --output bench/results/pretrain_step_demo_masked_ecg.json

The model is `CMELTConfig.from_preset(--preset)` with the JSON `--overrides` (default: `CMELTConfig()`, the paper configuration: ECG encoder + Flan-T5-base-shaped text tower, random init,
+ fusion + the four heads), one full forward + backward + AdamW step per iteration on random inputs shaped like a
real batch (12 x 5000 ECG, MEM dropping 75 % of tokens, 25 % of the report tokens masked, half the texts
negatives). FLOPs are counted by `torch.utils.flop_counter` on one step; the ceiling is a large fp32 matmul timed in
the same run. MFU = counted FLOPs / step time / ceiling. Goal: MFU >= 60 % (fp32). Writes
bench/results/pretrain_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_cmelt import CMELTConfig, CMELTForPreTraining

from bench.machine import machine_info, write_result
from cmelt.train_scripts.profiling import matmul_ceiling, random_pretraining_batch  # noqa: E402  (one home: the demo uses them too)

RESULTS = Path(__file__).resolve().parent / "results" / "pretrain_step.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--text_length", type=int, default=64, help="tokens per report (the batch's longest)")
    parser.add_argument("--min_text_length", type=int, default=None,
                        help="spread the reports' lengths evenly from this to --text_length (default: all full)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--quick", action="store_true", help="1 timed step (for bench/run_all.py)")
    parser.add_argument("--preset", default="paper", help="CMELTConfig preset: paper | demo | tiny")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help='JSON of CMELTConfig.from_preset keywords, e.g. \'{"siglep_clean_ecg": false}\'')
    parser.add_argument("--output", type=Path, default=RESULTS, help="the result JSON")
    args = parser.parse_args(argv)
    steps = 1 if args.quick else args.steps

    torch.manual_seed(0)
    config = CMELTConfig.from_preset(args.preset, **args.overrides)
    model = CMELTForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    batch = random_pretraining_batch(config, args.batch_size, args.text_length, min_text_length=args.min_text_length)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    flops_per_step = counter.get_total_flops()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    ceiling = matmul_ceiling()
    achieved = flops_per_step / seconds
    result = {
        "name": "pretrain_step",
        "command": "python -m bench.pretrain_step " + " ".join(argv if argv is not None else sys.argv[1:]),
        "goal": {"metric": "mfu_fp32", "op": ">=", "value": 0.60},
        "results": {
            "preset": args.preset,
            "overrides": args.overrides,
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch_size": args.batch_size,
            "text_length": args.text_length,
            "min_text_length": args.min_text_length,
            "seconds_per_step": round(seconds, 3),
            "samples_per_second": round(args.batch_size / seconds, 3),
            "model_gflops_per_step": round(flops_per_step / 1e9, 1),
            "achieved_gflops_per_second": round(achieved / 1e9, 1),
            "matmul_ceiling_gflops_per_second": round(ceiling / 1e9, 1),
            "mfu_fp32": round(achieved / ceiling, 3),
            "torch_threads": torch.get_num_threads(),
        },
        "machine": machine_info(),
    }
    write_result(args.output, result, print_results=True)
    return result


if __name__ == "__main__":
    main()
