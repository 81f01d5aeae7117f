"""What Siglep on the unmasked report costs per pretraining step (the text tower runs on the clean report too).

    python -m bench.clean_text_cost [--preset demo] [--batch_size 64] [--text_length 40] [--steps 10]

One forward + backward + AdamW step of `CMELTForPreTraining` on random inputs, with `siglep_clean_text` on and
off, the two timed alternately so that load on the machine hits both alike. Reports the median seconds per step of
each and the relative extra cost. Writes bench/results/clean_text_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from modeling_cmelt import CMELTConfig, CMELTForPreTraining

from bench.machine import machine_info, write_result
from cmelt.train_scripts.profiling import random_pretraining_batch

RESULTS = Path(__file__).resolve().parent / "results" / "clean_text_cost.json"


def step_function(config: CMELTConfig, batch: dict):
    torch.manual_seed(0)
    model = CMELTForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--text_length", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each variant after 2 warm-up steps")
    args = parser.parse_args(argv)

    steps, times = {}, {}
    for clean in (True, False):
        config = CMELTConfig.from_preset(args.preset, siglep_clean_text=clean)
        batch = random_pretraining_batch(config, args.batch_size, args.text_length)
        steps[clean], times[clean] = step_function(config, batch), []
        steps[clean]()
        steps[clean]()
    for _ in range(args.steps):
        for clean in (True, False):
            times[clean].append(steps[clean]())
    with_clean, without = statistics.median(times[True]), statistics.median(times[False])
    result = {
        "name": "clean_text_cost",
        "command": "python -m bench.clean_text_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "results": {
            "preset": args.preset,
            "batch_size": args.batch_size,
            "text_length": args.text_length,
            "seconds_per_step_clean_text": round(with_clean, 4),
            "seconds_per_step_masked_text": round(without, 4),
            "extra_cost": round(with_clean / without - 1, 3),
            "torch_threads": torch.get_num_threads(),
        },
        "machine": machine_info(),
    }
    write_result(RESULTS, result, print_results=True)
    return result


if __name__ == "__main__":
    main()
