"""How every dataset in this repository stores an ECG, the one route from a record file to a stored ECG (read,
finite check, canonical leads, int16; `read_record`, `stored_ecg`, one skip vocabulary, one worker pool), and how a
long job reports the records it skipped.

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
from typing import TYPE_CHECKING

import numpy as np
from datasets import Array2D, Sequence, Value

if TYPE_CHECKING:
    import torch

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


def ecg_batch_tensor(stored) -> torch.Tensor:
    """The `ecg` values of a batch of rows -> the model's `input_values`: float32 millivolts (batch, 12, 5000).

    `stored`: one (batch, 12, 5000) array or a list of (12, 5000) arrays; int16 microvolts are decoded
    (`decode_ecg`), float arrays are taken as millivolts already."""
    import torch

    values = np.stack([np.asarray(row) for row in stored]) if isinstance(stored, (list, tuple)) else np.asarray(stored)
    return torch.from_numpy(decode_ecg(values) if values.dtype.kind in "iu" else values.astype(np.float32))


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


# ----------------------------------------------------------------------------------------------------------------
# the one route from a record on disk to a stored ECG (MIMIC-IV-ECG converter and every downstream loader):
# read -> finite check -> canonical 12 leads, 500 Hz, 10 s, mV -> int16 uV; a bad record is a skip with a reason

# The skip reasons every converter and loader reports (one vocabulary).
SKIP_MISSING = "signal or header file missing"
SKIP_TRUNCATED = "record shorter than its header claims"
SKIP_UNREADABLE_MAT = "unreadable .mat file"
SKIP_UNREADABLE = "unreadable file"
SKIP_NON_FINITE = "NaN/inf samples"
SKIP_UNUSABLE = "unusable signal"
SKIP_FLAT = "flat signal (no lead recorded)"


def read_skip_reason(error: BaseException) -> str:
    """The skip reason of a reading failure: a vocabulary entry, or `reader error (<type>)` for an exception no
    reader anticipates (a reader bug, a header claiming more memory than exists)."""
    from modeling_cmelt.reading_cmelt import CMELTReadError

    message = str(error).lower()
    if isinstance(error, FileNotFoundError) or "not found" in message:
        return SKIP_MISSING
    if "truncated" in message:
        return SKIP_TRUNCATED
    if "matlab" in message or "'ecg'" in message or ".mat" in message and "struct" in message:
        return SKIP_UNREADABLE_MAT
    if isinstance(error, (CMELTReadError, OSError, EOFError, ValueError)):
        return SKIP_UNREADABLE
    return f"reader error ({type(error).__name__})"


def read_record(path: str | os.PathLike, **read_kwargs):
    """`(recording, None, "")` or `(None, skip reason, what went wrong)`: `reading_cmelt.read_ecg(path, **read_kwargs)`,
    where any exception is a skip, never a crash (one record must never stop a long job)."""
    from modeling_cmelt import reading_cmelt  # looked up at call time: tests replace read_ecg

    try:
        recording = reading_cmelt.read_ecg(path, **read_kwargs)
    except Exception as error:  # noqa: BLE001 - readers raise many types for bad files (MemoryError ...)
        return None, read_skip_reason(error), str(error)
    if recording.signal.size == 0:
        return None, SKIP_UNREADABLE, "no samples"
    return recording, None, ""


def stored_ecg(signal: np.ndarray, sampling_rate: float, lead_names, feature_extractor) -> tuple[dict | None, str | None]:
    """`({"ecg": int16 uV (12, 5000), "lead_mask": bool (12,)}, None)` or `(None, skip reason)` for a leads-first
    signal: non-finite samples are dropped records (not repaired), then `feature_extractor.to_canonical`; a signal
    without one usable lead is flat. Per-lead warnings are silenced here: a bad lead is counted in the mask."""
    import warnings

    from modeling_cmelt.feature_extraction_cmelt import CMELTNoUsableLeadError

    if not np.isfinite(signal).all():
        return None, SKIP_NON_FINITE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            canonical = feature_extractor.to_canonical(signal, sampling_rate, lead_names=lead_names,
                                                       orientation="leads_first")
    except CMELTNoUsableLeadError:
        return None, SKIP_FLAT
    except ValueError:
        return None, SKIP_UNUSABLE
    except Exception as error:  # noqa: BLE001
        return None, f"feature extractor error ({type(error).__name__})"
    if not canonical.lead_mask.any():
        return None, SKIP_FLAT
    return {"ecg": encode_ecg(canonical.values), "lead_mask": np.asarray(canonical.lead_mask, dtype=bool)}, None


def worker_pool(num_proc: int):
    """The process pool of every converter and loader: "spawn" workers (a fresh interpreter each, the same on every
    platform, and safe after torch has started threads, which "fork" is not)."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(num_proc)
