"""How every dataset in this repository stores an ECG, and how a long job reports the records it skipped.

An ECG in an Arrow dataset is the canonical 12 x 5000 array (leads I, II, III, aVR, aVL, aVF, V1-V6; 500 Hz;
10 s) stored as int16 microvolts: 120 kB a record instead of 240 kB as float32, exact to 1 uV, and decoded
to float32 millivolts (what the model eats) with one multiply.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Array2D, Sequence, Value

NUM_LEADS = 12
NUM_SAMPLES = 5000
MICROVOLTS_PER_MILLIVOLT = 1000.0
_INT16_LIMIT = np.iinfo(np.int16).max

ECG_FEATURE = Array2D(shape=(NUM_LEADS, NUM_SAMPLES), dtype="int16")
LEAD_MASK_FEATURE = Sequence(Value("bool"), length=NUM_LEADS)

logger = logging.getLogger(__name__)


def encode_ecg(values_mv: np.ndarray) -> np.ndarray:
    """Float millivolts (..., 12, 5000) -> int16 microvolts, rounded and clipped to +-32.767 mV."""
    microvolts = np.rint(np.asarray(values_mv, dtype=np.float32) * MICROVOLTS_PER_MILLIVOLT)
    return np.clip(microvolts, -_INT16_LIMIT, _INT16_LIMIT).astype(np.int16)


def decode_ecg(stored: np.ndarray) -> np.ndarray:
    """int16 microvolts (..., 12, 5000) -> float32 millivolts."""
    return np.asarray(stored, dtype=np.float32) / np.float32(MICROVOLTS_PER_MILLIVOLT)


@dataclass
class SkipLog:
    """Counts records a job skipped, by reason, keeping a few examples of each for the summary."""

    examples_per_reason: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, record_id: str, reason: str) -> None:
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.examples_per_reason:
            kept.append(str(record_id))

    def merge(self, other: "SkipLog") -> None:
        for reason, count in other.counts.items():
            self.counts[reason] += count
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: max(0, self.examples_per_reason - len(kept))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {
            "skipped": self.total,
            "by_reason": dict(self.counts.most_common()),
            "examples": {reason: self.examples.get(reason, []) for reason in self.counts},
        }

    def report(self, title: str, json_path: str | Path | None = None) -> dict:
        """Log the summary (a warning when records were skipped; and write it as JSON when a path is given);
        returns it."""
        summary = self.as_dict()
        log = logger.warning if summary["skipped"] else logger.info
        lines = [f"{title}: skipped {summary['skipped']} record(s)"]
        for reason, count in summary["by_reason"].items():
            lines.append(f"  {count:>8}  {reason}  (e.g. {', '.join(summary['examples'][reason][:3])})")
        log("\n".join(lines))
        if json_path is not None:
            write_json_atomically(json_path, summary)
        return summary


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)` and rename the result onto `path`: readers see the old file or the complete new
    one, never a torn one. The temporary name is unique (two processes saving the same file do not collide) and
    keeps `path`'s suffix (np.save would append ".npy" otherwise); it is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.stem}-", suffix=path.suffix)
    os.close(handle)
    try:
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make shared caches unreadable to others
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | Path, data, indent: int | None = 2) -> None:
    """`data` as JSON at `path`, written atomically (see `write_atomically`)."""
    text = json.dumps(data, indent=indent)
    write_atomically(path, lambda temporary: temporary.write_text(text))
