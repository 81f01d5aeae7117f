"""The embedded demo end to end: seconds per stage, training steps/s and the machine's matmul ceiling.

    python -m bench.demo                      # the README's first command as it is (the full demo)
    python -m bench.demo --quick              # a small corpus and 20 steps (for bench/run_all.py)
    python -m bench.demo -- --max_steps 600   # anything after -- goes to the demo

Runs `train_scripts/demo.py` in this process into a fresh output folder (so no stage is reused), then reads the
`demo_profile.json` it wrote. Goal: the whole demo within 10 minutes on the development machine class (2 cores;
compare across machines with the matmul ceiling it reports). Writes bench/results/demo.json (rows = stages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.machine import machine_info, write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"
QUICK_FLAGS = ["--num_subjects", "150", "--max_steps", "20", "--batch_size", "32", "--eval_every", "10",
               "--n3s_k", "16", "--num_proc", "1"]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    demo_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, 20 steps")
    parser.add_argument("--keep", default=None, help="keep the demo's output here (default: a temporary folder)")
    args = parser.parse_args(own)
    from cmelt.train_scripts.demo import main as demo_main

    output_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cmelt-demo-bench-"))
    if output_dir.exists() and args.keep:
        shutil.rmtree(output_dir)  # a fresh run: nothing reused
    flags = (QUICK_FLAGS if args.quick else []) + demo_flags + ["--output_dir", str(output_dir)]
    try:
        demo_main(flags)
        profile = json.loads((output_dir / "demo_profile.json").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(output_dir, ignore_errors=True)
    steps = next(iter(profile["steps_per_second"].values()), None)
    result = {
        "name": "demo",
        "command": "python -m bench.demo " + " ".join(argv),
        "goal": {"metric": "total_minutes", "op": "<=", "value": 10.0},
        "results": {
            "total_minutes": round(profile["total_seconds"] / 60, 2),
            "training_steps_per_second": None if steps is None else round(steps, 3),
            "held_out_zero_shot_macro_auc": next(iter(profile["held_out_zero_shot_macro_auc"].values())),
            "out_of_generator_macro_auc": next(iter(profile["out_of_generator"].values()))["pooled"]["macro_auroc"],
            "matmul_ceiling_gflops_per_second": profile["matmul_ceiling_gflops_per_second"],
            "torch_threads": profile["torch_threads"],
            "demo_flags": " ".join(flags[:-2]),
        },
        "rows": [{"stage": row["stage"], "seconds": row["seconds"], "note": row["note"]} for row in profile["stages"]],
        "machine": machine_info(),
    }
    print(f"{'stage':<28}{'seconds':>10}")
    for row in result["rows"]:
        print(f"{row['stage']:<28}{row['seconds']:>10.1f}")
    write_result(RESULTS, result, print_results=True)
    return result


if __name__ == "__main__":
    main()
