"""ECGs that the demo's generator (`data.synthetic`) did not make, labelled bradycardia / normal rate / tachycardia:

- "real windows": 10-s windows of real recordings (MIT-BIH record 100, 2 leads, sinus rhythm; PTB s0010_re,
  12 leads), labelled by their measured heart rate;
- "real beats re-timed": real beats cut from those records (each beat kept whole from 250 ms before its R peak,
  its ST-T part stretched or compressed with the RR interval as Bazett's QT ~ sqrt(RR) says) and laid end to end
  at a drawn rate: bradycardia 40-56, normal 64-96, tachycardia 106-140 bpm, with a little RR variability;
- "ECGSYN": the independent dynamical simulator in `data.ecgsyn`, at rates drawn from the same three ranges.

Each case is canonicalised by `CMELTFeatureExtractor` (resampled to 500 Hz, 12 canonical leads, missing leads
masked) exactly as a user's record would be. Labels follow the measured (re-timed: constructed) mean rate:
< 60 bradycardia, 60-100 normal, > 100 tachycardia.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, find_peaks, resample, sosfiltfilt

from . import ecgsyn

RATE_CLASSES: tuple[str, ...] = ("bradycardia", "normal", "tachycardia")
RATE_RANGES = {"bradycardia": (40.0, 56.0), "normal": (64.0, 96.0), "tachycardia": (106.0, 140.0)}
REAL_RECORDS = {"100": ("wfdb/100", ["II", "V5"]), "s0010_re": ("wfdb/s0010_re", None)}  # MLII read as lead II
_PRE_R = 0.25  # s kept before each R peak (P wave and PR segment)
_QRS_END = 0.06  # s after the R peak where the ST-T part (stretched with RR) begins
_POST_R = 0.45  # s kept after the R peak at the source rate


@dataclass
class RateCases:
    """Out-of-generator ECGs: `signals` (n, leads, samples) mV at `sampling_rate` with `lead_names`, one-hot
    `labels` (n, 3) in RATE_CLASSES order, `sources` (n,) names, `rates` (n,) bpm."""

    signals: list[np.ndarray]
    sampling_rates: list[float]
    lead_names: list[list[str] | None]
    labels: np.ndarray
    sources: list[str]
    rates: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)


def rate_class(rate_bpm: float) -> int:
    """Index in RATE_CLASSES: < 60 bradycardia, 60-100 normal, > 100 tachycardia."""
    return 0 if rate_bpm < 60 else (2 if rate_bpm > 100 else 1)


def r_peaks(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    """Sample indices of R peaks: QRS-band energy summed over leads, peaks at least 250 ms apart."""
    band = butter(2, [8.0, 25.0], btype="bandpass", fs=sampling_rate, output="sos")
    energy = (sosfiltfilt(band, signal, axis=-1) ** 2).sum(axis=0)
    window = max(1, int(0.05 * sampling_rate))
    energy = np.convolve(energy, np.ones(window) / window, mode="same")
    peaks, _ = find_peaks(energy, height=0.2 * np.percentile(energy, 99.5), distance=int(0.25 * sampling_rate))
    return peaks


def heart_rate(signal: np.ndarray, sampling_rate: float) -> float:
    peaks = r_peaks(signal, sampling_rate)
    if len(peaks) < 2:
        raise ValueError("fewer than two R peaks found; cannot measure a heart rate")
    return 60.0 * sampling_rate / float(np.median(np.diff(peaks)))


def _read(data_dir: Path, name: str) -> tuple[np.ndarray, float, list[str]]:
    import wfdb

    relative, lead_names = REAL_RECORDS[name]
    record = wfdb.rdrecord(str(data_dir / relative))
    signal = np.nan_to_num(record.p_signal.T.astype(np.float64))
    names = lead_names or [str(n) for n in record.sig_name]
    keep = [i for i, n in enumerate(names) if n.lower() not in ("vx", "vy", "vz")]
    return signal[keep], float(record.fs), [names[i] for i in keep]


def _remove_baseline(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    high_pass = butter(2, 0.5, btype="highpass", fs=sampling_rate, output="sos")
    return sosfiltfilt(high_pass, signal, axis=-1)


def real_beats(signal: np.ndarray, sampling_rate: float) -> tuple[list[np.ndarray], float]:
    """Whole beats (leads, samples) from R - 250 ms to R + 450 ms, linearly detrended so each starts and ends at
    zero, and the source's median RR (s)."""
    clean = _remove_baseline(signal, sampling_rate)
    peaks = r_peaks(clean, sampling_rate)
    before, after = int(_PRE_R * sampling_rate), int(_POST_R * sampling_rate)
    rr = float(np.median(np.diff(peaks))) / sampling_rate
    beats = []
    edge = max(1, int(0.02 * sampling_rate))
    for peak in peaks:
        if peak - before < 0 or peak + after > clean.shape[1]:
            continue
        beat = clean[:, peak - before : peak + after].copy()
        start, end = beat[:, :edge].mean(axis=1), beat[:, -edge:].mean(axis=1)
        beat -= start[:, None] + (end - start)[:, None] * np.linspace(0.0, 1.0, beat.shape[1])[None, :]
        beats.append(beat)
    return beats, rr


def retime(beats: list[np.ndarray], source_rr: float, sampling_rate: float, rate: float,
           rng: np.random.Generator, duration: float = 10.0) -> tuple[np.ndarray, float]:
    """Lay real beats end to end at `rate` (bpm, 2 % RR jitter), ST-T scaled by sqrt(RR / source RR) (Bazett);
    returns the signal and its constructed mean rate."""
    samples = int(duration * sampling_rate)
    out = np.zeros((beats[0].shape[0], samples + 3 * int(sampling_rate)))
    before, qrs_end = int(_PRE_R * sampling_rate), int((_PRE_R + _QRS_END) * sampling_rate)
    time = -rng.uniform(0.0, 60.0 / rate)  # the record starts anywhere in a beat
    intervals = []
    index = int(rng.integers(len(beats)))
    taper = np.hanning(2 * max(2, int(0.03 * sampling_rate)))
    while time < duration + 1.0:
        rr = 60.0 / rate * (1.0 + rng.normal(0.0, 0.02))
        beat = beats[index % len(beats)]
        index += 1
        factor = float(np.clip(np.sqrt(rr / source_rr), 0.7, 1.3))
        stretched = resample(beat[:, qrs_end:], max(8, int(round((beat.shape[1] - qrs_end) * factor))), axis=1)
        shaped = np.concatenate([beat[:, :qrs_end], stretched], axis=1)
        half = len(taper) // 2
        shaped[:, :half] *= taper[:half]
        shaped[:, -half:] *= taper[half:]
        start = int(round((time + 1.0) * sampling_rate)) - before  # 1 s of margin before t = 0
        if start >= 0 and start + shaped.shape[1] <= out.shape[1]:
            out[:, start : start + shaped.shape[1]] += shaped
        intervals.append(rr)
        time += rr
    signal = out[:, int(sampling_rate) : int(sampling_rate) + samples]
    signal += rng.normal(0.0, 0.01, signal.shape)
    return signal, 60.0 / float(np.mean(intervals))


def build_rate_cases(real_data_dir: str | Path | None, per_class: int = 20, seed: int = 0) -> RateCases:
    """Every out-of-generator case: real windows and re-timed real beats (when `real_data_dir` holds the
    records) and ECGSYN, `per_class` per rate class and source."""
    rng = np.random.default_rng(seed)
    signals, names, fs_list, sources, rates = [], [], [], [], []

    def add(signal, sampling_rate, lead_names, source, rate):
        signals.append(signal.astype(np.float32))
        fs_list.append(float(sampling_rate))
        names.append(lead_names)
        sources.append(source)
        rates.append(rate)

    if real_data_dir is not None:
        for name in REAL_RECORDS:
            signal, sampling_rate, lead_names = _read(Path(real_data_dir), name)
            window = int(10 * sampling_rate)
            starts = range(0, signal.shape[1] - window + 1, max(window, (signal.shape[1] - window) // per_class))
            for start in list(starts)[:per_class]:
                piece = signal[:, start : start + window]
                add(piece, sampling_rate, lead_names, f"real {name}", heart_rate(_remove_baseline(piece, sampling_rate),
                                                                                  sampling_rate))
            beats, source_rr = real_beats(signal, sampling_rate)
            for label in RATE_CLASSES:
                for _ in range(per_class):
                    retimed, rate = retime(beats, source_rr, sampling_rate, rng.uniform(*RATE_RANGES[label]), rng)
                    add(retimed, sampling_rate, lead_names, f"re-timed {name}", rate)
    for label in RATE_CLASSES:
        for _ in range(per_class):
            rate = rng.uniform(*RATE_RANGES[label])
            add(ecgsyn.simulate(rng, rate), 500, None, "ECGSYN", rate)
    labels = np.zeros((len(rates), len(RATE_CLASSES)), dtype=np.float32)
    labels[np.arange(len(rates)), [rate_class(rate) for rate in rates]] = 1.0
    return RateCases(signals, fs_list, names, labels, sources, np.asarray(rates))


def canonical_dataset(cases: RateCases, feature_extractor):
    """The cases as a `datasets.Dataset` (`ecg` int16 uV 12 x 5000, `lead_mask`, `labels`, `source`), canonicalised
    by `feature_extractor` like any user record."""
    from datasets import Dataset, Features, Sequence, Value

    from .ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE, encode_ecg

    ecgs, masks = [], []
    for signal, sampling_rate, lead_names in zip(cases.signals, cases.sampling_rates, cases.lead_names):
        features = feature_extractor(signal, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors="np")
        ecgs.append(encode_ecg(features["input_values"][0]))
        masks.append(np.asarray(features["lead_mask"][0], dtype=bool))
    features = Features({"ecg": ECG_FEATURE, "lead_mask": LEAD_MASK_FEATURE,
                         "labels": Sequence(Value("float32"), length=len(RATE_CLASSES)), "source": Value("string")})
    return Dataset.from_dict({"ecg": ecgs, "lead_mask": masks, "labels": list(cases.labels), "source": cases.sources},
                             features=features)
