"""What machine a benchmark ran on: one dict every bench script stores under the "machine" key of its JSON.

    from bench.machine import machine_info, write_result

Every field is best effort: a value that cannot be read (no /proc on macOS, no git checkout) is None, never an error.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _proc_field(path: str, key: str) -> str | None:
    """First `key: value` line of a /proc file, value stripped (None when absent)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_model() -> str | None:
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or None


def ram_gib() -> float | None:
    total = _proc_field("/proc/meminfo", "MemTotal")  # "16314204 kB"
    if total is None:
        return None
    try:
        return round(int(total.split()[0]) / 1024**2, 1)
    except (ValueError, IndexError):
        return None


def usable_cores() -> int | None:
    """Cores this process may run on (affinity / cgroup-pinned), which is what a benchmark actually gets."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """Short commit of the repository checkout, with "+dirty" when tracked files changed (None outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None


def machine_info() -> dict:
    """CPU model, cores, RAM, library versions, torch threads, date (UTC) and git commit of this run."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gib": ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "datasets": package_version("datasets"),
        "torch_threads": None,
        "cuda": None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


if __name__ == "__main__":
    import json

    print(json.dumps(machine_info(), indent=2))


def write_result(path, result: dict, print_results: bool = False):
    """Write one benchmark's JSON (the schema bench/report.py reads) and say where: the one result writer.
    `print_results` first prints its "results" fields, one per line."""
    import json
    from pathlib import Path

    if print_results:
        for key, value in result.get("results", {}).items():
            print(f"{key:<36}{value!s:>14}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path
