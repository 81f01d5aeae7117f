"""Where a long run spends its time: named stage timers and the machine's fp32 matmul ceiling, so a run's
wall-clock figures can be compared across machines (the demo prints both; bench/ reuses them)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch


def matmul_ceiling(size: int = 2048, repetitions: int = 10, dtype=torch.float32) -> float:
    """Best-of-N FLOP/s of one large square matmul: what this machine's BLAS can do at most."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repetitions):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def random_pretraining_batch(
    config, batch_size: int, text_length: int, seed: int = 0, min_text_length: int | None = None
) -> dict:
    """Random `CMELTForPreTraining` inputs shaped like a real batch (12-lead ECGs, `config.mlm_probability` of the
    report tokens masked, half the texts negatives), for timing a step (the demo's thread choice, bench/). Every
    report is `text_length` tokens long, or, with `min_text_length`, the lengths are spread evenly from that to
    `text_length` (right-padded, rows shuffled), as real reports vary."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, config.text_config.vocab_size, (batch_size, text_length), generator=generator)
    shortest = text_length if min_text_length is None else min_text_length
    lengths = torch.linspace(shortest, text_length, batch_size).round()
    lengths = lengths[torch.randperm(batch_size, generator=generator)]
    attention_mask = (torch.arange(text_length) < lengths[:, None]).long()
    ids = ids * attention_mask  # pad id 0
    labels = torch.full_like(ids, -100)
    masked = (torch.rand(ids.shape, generator=generator) < config.mlm_probability) & attention_mask.bool()
    labels[masked] = ids[masked]
    return {
        "input_values": torch.randn(batch_size, 12, config.ecg_config.num_samples, generator=generator),
        "lead_mask": torch.ones(batch_size, 12, dtype=torch.bool),
        "input_ids": ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "is_aligned": (torch.arange(batch_size) % 2).float(),
        "siglep_input_ids": ids,  # the own reports (read only with `siglep_own_report`)
        "siglep_attention_mask": attention_mask,
    }


def fastest_thread_count(step, candidates: list[int], repeats: int = 2) -> tuple[int, dict[int, float]]:
    """Time `step()` (after one warm-up call) with each torch thread count and return the fastest, with the
    seconds per call measured for each. On a small CPU model, two threads can be several times slower than one
    when the cores are shared (every small op waits at an OpenMP barrier for a descheduled thread), and faster
    when they are not; measuring is the only reliable way to know."""
    previous = torch.get_num_threads()
    seconds = {}
    try:
        for count in dict.fromkeys(candidates):
            torch.set_num_threads(count)
            step()
            started = time.perf_counter()
            for _ in range(repeats):
                step()
            seconds[count] = (time.perf_counter() - started) / repeats
    finally:
        torch.set_num_threads(previous)
    return min(seconds, key=seconds.get), seconds


@dataclass
class StageTimer:
    """Wall-clock seconds per named stage, in the order the stages first ran (a stage run twice adds up).

    with timer.stage("conversion"):
        ...
    """

    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def note(self, name: str, text: str) -> None:
        """A remark shown beside a stage (e.g. "reused" when a completed stage was not run again)."""
        self.notes[name] = text

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def rows(self) -> list[dict]:
        return [{"stage": name, "seconds": round(value, 2), "note": self.notes.get(name, "")}
                for name, value in self.seconds.items()]

    def table(self) -> str:
        lines = [f"  {'stage':<28}{'seconds':>10}"]
        lines += [f"  {row['stage']:<28}{row['seconds']:>10.1f}  {row['note']}".rstrip() for row in self.rows()]
        lines.append(f"  {'total':<28}{self.total:>10.1f}")
        return "\n".join(lines)

    def write_json(self, path: str | Path, **extra) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"stages": self.rows(), "total_seconds": round(self.total, 2), **extra}
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(payload, indent=2))
        temporary.replace(path)
        return path
