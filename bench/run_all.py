"""Run every benchmark script in bench/ and regenerate BENCHMARKS.md.

    python -m bench.run_all [--full] [--only NAME ...] [--timeout SECONDS]
                            [--results bench/results] [--output BENCHMARKS.md]

Each `bench/*.py` except run_all.py, report.py, machine.py (and files starting with "_") runs in its own process
from the repository root, as `python -m bench.<name>`, with `--quick` when its `--help` mentions that flag (unless `--full`). A benchmark that
exits non-zero or times out does not stop the others: its bench/results/<name>.json is replaced by a failure record
(status "failed", exit code, the last lines of its output, and the previous successful JSON under "previous"), so
the page shows it as failed. Exit code: 0 if every benchmark succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
from bench.machine import machine_info, write_result
from bench.report import DEFAULT_OUTPUT, DEFAULT_RESULTS, write_report

NOT_BENCHMARKS = {"__init__.py", "run_all.py", "report.py", "machine.py"}
ERROR_TAIL_LINES = 30


def benchmark_scripts(only: list[str] | None = None) -> list[Path]:
    scripts = sorted(
        path for path in BENCH.glob("*.py") if path.name not in NOT_BENCHMARKS and not path.name.startswith("_")
    )
    if only:
        unknown = sorted(set(only) - {path.stem for path in scripts})
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; available: {[path.stem for path in scripts]}")
        scripts = [path for path in scripts if path.stem in only]
    return scripts


def _environment() -> dict:
    """The child sees the repository on its path even without `pip install -e .`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def script_command(script: Path) -> list[str]:
    """How a script runs: a benchmark of this package as a module (`python -m bench.<name>`), any other file by path."""
    if script.resolve().parent == BENCH:
        return [sys.executable, "-m", f"bench.{script.stem}"]
    return [sys.executable, str(script)]


def supports_quick(script: Path, timeout: float = 120) -> bool:
    try:
        completed = subprocess.run(
            [*script_command(script), "--help"], cwd=REPO, env=_environment(),
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return completed.returncode == 0 and "--quick" in completed.stdout


def run_script(command: list[str], timeout: float | None) -> tuple[int, str]:
    """Run `command`, echoing its output live; return (exit code, last lines). A timeout kills it (exit code -9)."""
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
    process = subprocess.Popen(
        command, cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        bufsize=1,
    )

    def echo() -> None:  # a thread, so a benchmark that prints nothing still times out
        for line in process.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        returncode = -9
    reader.join(timeout=10)
    if returncode == -9:
        tail.append(f"killed after the {timeout:g} s timeout")
    return returncode, "\n".join(tail)


def record_failure(results_dir: Path, name: str, command: list[str], returncode: int, error: str) -> Path:
    path = results_dir / f"{name}.json"
    previous = None
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if isinstance(previous, dict) and previous.get("status") == "failed":
            previous = previous.get("previous")  # keep the last *successful* figures, not an older failure
    failure = {
        "name": name,
        "command": " ".join(["python", *command[1:]]),
        "status": "failed",
        "returncode": returncode,
        "error": error,
        "machine": machine_info(),
    }
    if isinstance(previous, dict):
        failure["previous"] = previous
    return write_result(path, failure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run the scripts with their default (long) settings")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (names without .py)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark before it is killed")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="folder the scripts write their JSON to")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown page to regenerate")
    args = parser.parse_args(argv)

    results_dir = Path(args.results)
    outcomes = []
    for script in benchmark_scripts(args.only):
        command = script_command(script)
        if not args.full and supports_quick(script):
            command.append("--quick")
        print(f"\n=== {script.stem}: {' '.join(['python', *command[1:]])}", flush=True)
        start = time.perf_counter()
        returncode, tail = run_script(command, args.timeout)
        seconds = time.perf_counter() - start
        if returncode != 0:
            path = record_failure(results_dir, script.stem, command, returncode, tail)
            print(f"=== {script.stem} FAILED (exit code {returncode}) after {seconds:.0f} s; recorded in {path}")
        else:
            print(f"=== {script.stem} done in {seconds:.0f} s")
        outcomes.append((script.stem, returncode, seconds))

    output = write_report(results_dir, args.output)
    print("\nbenchmark                      exit   seconds")
    for name, returncode, seconds in outcomes:
        print(f"{name:<30} {returncode:>4}   {seconds:>7.0f}")
    print(f"wrote {output}")
    return 0 if all(returncode == 0 for _, returncode, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
