"""Turns any ECG (arrays, tensors, WFDB / MATLAB / HDF5 / .npy files) into the model's input: 12 leads in the
order I, II, III, aVR, aVL, aVF, V1-V6, 500 Hz, 10 s = 5000 samples, millivolts, plus a lead mask.

Pipeline of one record (`CMELTFeatureExtractor.to_canonical`): leads to canonical order (missing leads zero and
masked, extra leads dropped) -> units to mV -> short NaN/inf gaps interpolated, mostly-missing leads masked ->
polyphase resampling to 500 Hz -> crop or right-pad to 5000 samples -> flat leads masked -> optional normalisation.
Only the part of a recording that survives the crop is resampled (and, for WFDB files, read): resampling is
shift-invariant away from the edges, so a margin of one filter half-length keeps the result identical to
resampling the whole recording and cropping afterwards.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor

from .reading_cmelt import CANONICAL_LEADS, canonical_lead_index, read_ecg, read_ecg_info

MIN_SAMPLING_RATE = 50.0
MAX_SAMPLING_RATE = 10_000.0
# Largest lead count for which an axis is taken to be the lead axis when the orientation is not given.
MAX_INFERRED_LEADS = 15
# scipy.signal.resample_poly's default Kaiser filter spans 10 * max(up, down) upsampled samples each side.
_RESAMPLE_HALF_LENGTH_FACTOR = 10
# Rates whose exact ratio to the target rate has both terms up to this are resampled exactly (360 Hz -> 25/18,
# 257 Hz -> 500/257). Other rates (999.999 Hz, 9999.999 Hz, 314.159 Hz) use the fraction with the smallest
# denominator whose ratio is within RESAMPLE_RATIO_TOLERANCE of the exact one: the time axis is then stretched by at
# most 1e-4, i.e. at most 0.5 sample (1 ms) of drift over the 5000-sample window, and the filter costs about what
# the nearest round rate costs (999.999 Hz -> 1/2, like 1000 Hz) instead of growing with the decimals.
MAX_EXACT_RESAMPLE_FACTOR = 1000
RESAMPLE_RATIO_TOLERANCE = 1e-4
# Dirichlet: some denominator up to 1 / tolerance always meets the tolerance.
_MAX_APPROXIMATE_DENOMINATOR = int(round(1 / RESAMPLE_RATIO_TOLERANCE))
# Peak |amplitude| above which a lead is not an ECG in mV (µV or ADC counts passed as mV, overflowed exports).
DEFAULT_MAX_AMPLITUDE_MV = 100.0
_UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}


@dataclass
class CMELTCanonicalECG:
    """One record in canonical form.

    Attributes:
        values: (12, num_samples) float32, canonical lead order; zeros for missing leads and padding.
        lead_mask: (12,) bool, True where the lead was really recorded (and not flat / mostly missing).
        sample_mask: (num_samples,) bool, True where the sample comes from the recording (False = padding).
        warnings: what was repaired or dropped (unknown leads, interpolated gaps, masked leads).
    """

    values: np.ndarray
    lead_mask: np.ndarray
    sample_mask: np.ndarray
    warnings: list[str] = field(default_factory=list)


class CMELTNoUsableLeadError(ValueError):
    """A record has no usable lead (all missing, flat, mostly NaN/inf or implausibly large): any output computed
    from it would be meaningless. The message names the record and why each lead was dropped."""


@dataclass
class _ResamplingPlan:
    up: int
    down: int
    input_start: int  # first input sample to resample
    input_stop: int
    output_start: int  # where the kept output window starts, counted in the segment's resampled output
    output_length: int  # samples of real signal kept (<= num_samples)


class CMELTFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Feature extractor for C-MELT: maps ECGs of any lead set, rate, length and unit to `input_values` of shape
    (batch, 12, 5000) float32 and a `lead_mask` (batch, 12) bool.

    Args:
        feature_size (`int`): number of canonical leads (12).
        sampling_rate (`int`): target rate in Hz (500).
        num_samples (`int`): samples per record after crop / pad (5000 = 10 s at 500 Hz).
        padding_value (`float`): value of padded samples (mV) when a record is shorter than 10 s.
        normalization (`str`): "none" = raw mV, as the reference model was trained; "zscore" = per lead, over the
            real (unpadded) samples; "minmax" = per lead to [-1, 1]. Missing leads stay zero.
        length_policy (`str`): which 10 s of a longer record to keep: "start" (the first 10 s, reference
            behaviour) or "center". Shorter records are padded on the right with `padding_value`.
        max_gap_seconds (`float`): NaN / inf runs up to this long are linearly interpolated; longer runs are set to
            zero with a warning.
        max_missing_fraction (`float`): a lead with more than this fraction of NaN / inf samples counts as missing.
        flat_lead_threshold_mv (`float`): a lead whose peak-to-peak amplitude in the kept window is below this
            (mV) counts as missing (disconnected electrode, zero-filled export).
        min_seconds (`float`): records shorter than this are rejected with a ValueError.
        max_amplitude_mv (`float`): a lead whose peak |value| in the kept window exceeds this (mV) is not a
            plausible ECG (µV or ADC counts passed as mV, overflowed values) and counts as missing, with a warning.
    """

    model_input_names = ["input_values", "lead_mask"]

    def __init__(
        self,
        feature_size: int = 12,
        sampling_rate: int = 500,
        num_samples: int = 5000,
        padding_value: float = 0.0,
        normalization: str = "none",
        length_policy: str = "start",
        max_gap_seconds: float = 0.1,
        max_missing_fraction: float = 0.5,
        flat_lead_threshold_mv: float = 0.01,
        min_seconds: float = 1.0,
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        **kwargs,
    ):
        kwargs.setdefault("return_attention_mask", False)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if feature_size != len(CANONICAL_LEADS):
            raise ValueError(f"feature_size must be {len(CANONICAL_LEADS)} (the canonical leads), got {feature_size}")
        if normalization not in ("none", "zscore", "minmax"):
            raise ValueError(f"normalization must be 'none', 'zscore' or 'minmax', got {normalization!r}")
        if length_policy not in ("start", "center"):
            raise ValueError(f"length_policy must be 'start' or 'center', got {length_policy!r}")
        self.num_samples = int(num_samples)
        self.normalization = normalization
        self.length_policy = length_policy
        self.max_gap_seconds = float(max_gap_seconds)
        self.max_missing_fraction = float(max_missing_fraction)
        self.flat_lead_threshold_mv = float(flat_lead_threshold_mv)
        self.min_seconds = float(min_seconds)
        self.max_amplitude_mv = float(max_amplitude_mv)
        _check_settings(self)

    # ------------------------------------------------------------------------------------------------------------
    # public API

    def __call__(
        self,
        ecg: Any,
        sampling_rate: float | None = None,
        lead_names: list[str] | None = None,
        orientation: str | None = None,
        units: str = "mV",
        return_tensors: str | None = None,
        return_sample_mask: bool = False,
        adc_gain: float | None = None,
        hdf5_index: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Canonicalise one ECG or a batch.

        Args:
            ecg: an array / tensor / nested list (channels x samples, or samples x channels, or a batch of them in
                one 3-D array), a list of arrays of possibly different lengths, or a path / list of paths (WFDB
                stem or `.hea`/`.dat`/`.mat`, CPSC `.mat`, `.npy`, HDF5 with `hdf5_index`).
            sampling_rate: rate of the arrays in Hz (required for arrays; overrides the file's rate for paths).
            lead_names: names of the input channels (any case and common aliases; see `canonical_lead_index`).
                Without names, 12 channels are taken to be in canonical order.
            orientation: "leads_first" or "samples_first"; inferred only when unambiguous.
            units: "mV", "uV", "V" or "adc" (then `adc_gain` = ADC units per mV). Files are always read in mV.
            return_tensors: "pt", "np" or None (lists of numpy arrays -> stacked numpy arrays).
            return_sample_mask: also return `sample_mask` (batch, num_samples), False on padding.
        """
        records = self._as_records(ecg)
        canonical = []
        for record in records:
            if isinstance(record, (str, os.PathLike)):
                canonical.append(self._canonical_from_file(record, sampling_rate, lead_names, hdf5_index))
            else:
                canonical.extend(
                    self._canonical_from_array(record, sampling_rate, lead_names, orientation, units, adc_gain)
                )
        data = {
            "input_values": np.stack([item.values for item in canonical]),
            "lead_mask": np.stack([item.lead_mask for item in canonical]),
        }
        if return_sample_mask:
            data["sample_mask"] = np.stack([item.sample_mask for item in canonical])
        return BatchFeature(data, tensor_type=return_tensors)

    def to_canonical(
        self,
        signal: Any,
        sampling_rate: float,
        lead_names: list[str] | None = None,
        orientation: str | None = None,
        units: str = "mV",
        adc_gain: float | None = None,
    ) -> CMELTCanonicalECG:
        """Canonicalise one in-memory record (2-D channels x samples / samples x channels, or 1-D single lead)."""
        array = _as_numeric_array(signal)
        if array.ndim not in (1, 2):
            raise ValueError(f"expected one record as a 1-D or 2-D array, got shape {array.shape}")
        return self._canonical_from_array(array, sampling_rate, lead_names, orientation, units, adc_gain)[0]

    # ------------------------------------------------------------------------------------------------------------
    # input handling

    @staticmethod
    def _as_records(ecg: Any) -> list:
        """A list of records: paths, or arrays of 1-3 dims (3-D = a batch handled in one vectorised call)."""
        if isinstance(ecg, (str, os.PathLike)):
            return [ecg]
        if isinstance(ecg, (list, tuple)):
            if len(ecg) == 0:
                raise ValueError("expected an ECG (array, tensor, path) or a non-empty batch of them, got an empty list")
            first = ecg[0]
            if isinstance(first, (str, os.PathLike)) or _is_array_like(first) and not _is_number_list(first):
                return list(ecg)
        return [ecg]

    def _canonical_from_array(
        self,
        signal: Any,
        sampling_rate: float | None,
        lead_names: list[str] | None,
        orientation: str | None,
        units: str,
        adc_gain: float | None,
    ) -> list[CMELTCanonicalECG]:
        array = _as_numeric_array(signal)
        rate = _check_rate(sampling_rate)
        if array.size == 0:
            raise ValueError(f"expected a non-empty ECG array, got shape {array.shape}")
        if array.ndim == 1:
            array = array[None, None, :]
        elif array.ndim == 2:
            array = _leads_first(array, lead_names, orientation)[None]
        elif array.ndim == 3:
            array = np.stack([_leads_first(item, lead_names, orientation) for item in array]) if len(array) else array
        else:
            raise ValueError(f"expected an ECG of 1-3 dims ((batch,) leads, samples), got shape {array.shape}")
        scale = _units_scale(units, adc_gain)
        return self._canonicalize(array, rate, _lead_names_or_default(lead_names, array.shape[1]), scale)

    def _canonical_from_file(
        self,
        path: str | os.PathLike,
        sampling_rate: float | None,
        lead_names: list[str] | None,
        hdf5_index: int | None,
    ) -> CMELTCanonicalECG:
        info = read_ecg_info(path, sampling_rate=sampling_rate, lead_names=lead_names)
        if info is None or not info.sampling_rate:
            recording = read_ecg(path, sampling_rate=sampling_rate, lead_names=lead_names, hdf5_index=hdf5_index)
            rate = _check_rate(recording.sampling_rate, source=str(path))
            return self._canonicalize(recording.signal[None], rate, recording.lead_names, 1.0, source=str(path))[0]
        # WFDB: read only the channels and samples that survive mapping and cropping.
        names = list(lead_names) if lead_names is not None else info.lead_names
        if len(names) != len(info.lead_names):
            raise ValueError(f"{path}: {len(names)} lead names given, the record has {len(info.lead_names)} channels")
        rate = _check_rate(info.sampling_rate, source=str(path))
        channels = [index for index, _ in _lead_mapping(_lead_names_or_default(names, len(names)), str(path))[0]]
        self._check_duration(info.num_samples, rate, str(path))
        plan = self._plan(info.num_samples, rate)
        recording = read_ecg(path, sampling_rate=sampling_rate, channels=channels, sample_range=(plan.input_start, plan.input_stop))
        picked_names = [names[index] for index in channels]
        return self._canonicalize(
            recording.signal[None], rate, picked_names, 1.0, source=str(path),
            total_samples=info.num_samples, segment_start=plan.input_start,
        )[0]

    # ------------------------------------------------------------------------------------------------------------
    # the core: (batch, channels, samples) leads-first float32 -> canonical

    def _check_duration(self, total_samples: int, rate: float, source: str) -> None:
        if total_samples / rate < self.min_seconds:
            raise ValueError(
                f"{source}: expected at least {self.min_seconds:g} s of signal, got {total_samples} samples at "
                f"{rate:g} Hz ({total_samples / rate:.3f} s)"
            )

    def _plan(self, total_samples: int, rate: float) -> _ResamplingPlan:
        up, down = resampling_factors(rate, self.sampling_rate)
        total_output = -(-total_samples * up // down)
        if self.length_policy == "center" and total_output > self.num_samples:
            output_start = (total_output - self.num_samples) // 2
        else:
            output_start = 0
        output_stop = min(output_start + self.num_samples, total_output)
        if up == down == 1:
            return _ResamplingPlan(1, 1, output_start, output_stop, 0, output_stop - output_start)
        margin = math.ceil(_RESAMPLE_HALF_LENGTH_FACTOR * max(up, down) / up) + 2
        input_start = max(0, output_start * down // up - margin)
        input_start -= input_start % down  # keeps the segment's output grid on the full output grid
        input_stop = min(total_samples, -(-output_stop * down // up) + margin)
        return _ResamplingPlan(
            up, down, input_start, input_stop, output_start - input_start * up // down, output_stop - output_start
        )

    def _canonicalize(
        self,
        signal: np.ndarray,
        rate: float,
        lead_names: list[str],
        scale: float,
        source: str = "input",
        total_samples: int | None = None,
        segment_start: int = 0,
    ) -> list[CMELTCanonicalECG]:
        batch = signal.shape[0]
        total_samples = signal.shape[-1] if total_samples is None else total_samples
        self._check_duration(total_samples, rate, source)
        mapping, notes = _lead_mapping(lead_names, source)
        channels = [channel for channel, _ in mapping]
        targets = [target for _, target in mapping]
        plan = self._plan(total_samples, rate)
        segment = signal[:, channels, plan.input_start - segment_start : plan.input_stop - segment_start]
        segment = np.array(segment, dtype=np.float32, copy=True)
        if scale != 1.0:
            segment *= np.float32(scale)
        record_notes = [list(notes) for _ in range(batch)]
        present = np.ones((batch, len(channels)), dtype=bool)
        if not np.isfinite(segment).all():
            self._repair_non_finite(segment, present, rate, [lead_names[c] for c in channels], record_notes, source)
        if plan.up != plan.down:
            from scipy.signal import resample_poly

            segment = resample_poly(segment, plan.up, plan.down, axis=-1).astype(np.float32, copy=False)
        kept = segment[..., plan.output_start : plan.output_start + plan.output_length]
        self._mask_unusable_leads(kept, present, targets, record_notes, source)
        kept = self._normalize(kept)
        values = np.full((batch, len(CANONICAL_LEADS), self.num_samples), 0.0, dtype=np.float32)
        values[:, :, plan.output_length :] = self.padding_value
        values[:, targets, : plan.output_length] = kept
        lead_mask = np.zeros((batch, len(CANONICAL_LEADS)), dtype=bool)
        lead_mask[:, targets] = present
        _check_usable(lead_mask, record_notes, source)
        values[~lead_mask] = 0.0
        sample_mask = np.zeros(self.num_samples, dtype=bool)
        sample_mask[: plan.output_length] = True
        return [
            CMELTCanonicalECG(values[index], lead_mask[index], sample_mask.copy(), record_notes[index])
            for index in range(batch)
        ]

    def _mask_unusable_leads(
        self, kept: np.ndarray, present: np.ndarray, targets: list[int], record_notes: list[list[str]], source: str
    ) -> None:
        """In place: mark flat leads and leads with implausible amplitude (or values that overflowed) absent."""
        if not kept.shape[-1]:
            present[:] = False
            return
        with np.errstate(over="ignore", invalid="ignore"):
            peak = np.abs(kept).max(axis=-1)
            flat = np.ptp(kept, axis=-1) < self.flat_lead_threshold_mv
        implausible = ~(peak <= self.max_amplitude_mv)  # also catches inf / NaN from overflow
        for record, position in zip(*np.nonzero(present & (flat | implausible))):
            lead = CANONICAL_LEADS[targets[position]]
            if implausible[record, position]:
                message = (
                    f"{source}: lead {lead} peaks at {peak[record, position]:.3g} mV, above max_amplitude_mv="
                    f"{self.max_amplitude_mv:g}: not an ECG in mV (µV or ADC counts given as mV? set units=); masked"
                )
            else:
                message = f"{source}: lead {lead} is flat (peak-to-peak < {self.flat_lead_threshold_mv:g} mV); masked"
            record_notes[record].append(message)
            warnings.warn(message, stacklevel=5)
        present &= ~(flat | implausible)
        kept[~present] = 0.0  # keeps normalisation finite; masked leads are zero in the output anyway

    def _repair_non_finite(
        self,
        segment: np.ndarray,
        present: np.ndarray,
        rate: float,
        names: list[str],
        record_notes: list[list[str]],
        source: str,
    ) -> None:
        """In place: interpolate short NaN/inf gaps, zero long ones, mark mostly-missing leads absent."""
        max_gap = max(1, int(round(self.max_gap_seconds * rate)))
        positions = np.arange(segment.shape[-1])
        bad_rows = np.nonzero(~np.isfinite(segment).all(axis=-1))
        for record, channel in zip(*bad_rows):
            row = segment[record, channel]
            missing = ~np.isfinite(row)
            if missing.mean() > self.max_missing_fraction or missing.all():
                message = f"{source}: lead {names[channel]!r} is {missing.mean():.0%} NaN/inf; masked as missing"
                present[record, channel] = False
                row[:] = 0.0
            else:
                row[missing] = np.interp(positions[missing], positions[~missing], row[~missing])
                starts, lengths = _runs(missing)
                long_runs = lengths > max_gap
                for start, length in zip(starts[long_runs], lengths[long_runs]):
                    row[start : start + length] = 0.0
                message = (
                    f"{source}: lead {names[channel]!r} had {missing.sum()} NaN/inf samples; gaps up to "
                    f"{self.max_gap_seconds:g} s interpolated, {int(long_runs.sum())} longer gap(s) set to zero"
                )
            record_notes[record].append(message)
            warnings.warn(message, stacklevel=5)

    def _normalize(self, kept: np.ndarray) -> np.ndarray:
        if self.normalization == "none" or kept.shape[-1] == 0:
            return kept
        if self.normalization == "zscore":
            mean = kept.mean(axis=-1, keepdims=True)
            std = kept.std(axis=-1, keepdims=True)
            return (kept - mean) / np.maximum(std, 1e-6)
        low = kept.min(axis=-1, keepdims=True)
        high = kept.max(axis=-1, keepdims=True)
        return 2.0 * (kept - low) / np.maximum(high - low, 1e-6) - 1.0


# ----------------------------------------------------------------------------------------------------------------
# helpers


def resampling_factors(rate: float, target_rate: float) -> tuple[int, int]:
    """(up, down) of the polyphase resampling from `rate` to `target_rate` (see RESAMPLE_RATIO_TOLERANCE).

    Exact when the ratio, with `rate` read as its shortest decimal (`Fraction(repr(rate))`), has both terms up to
    MAX_EXACT_RESAMPLE_FACTOR; otherwise the fraction with the smallest denominator within a relative error of
    RESAMPLE_RATIO_TOLERANCE, which bounds the filter (its length grows with max(up, down)).
    """
    exact = Fraction(repr(float(target_rate))) / Fraction(repr(float(rate)))
    if max(exact.numerator, exact.denominator) <= MAX_EXACT_RESAMPLE_FACTOR:
        return exact.numerator, exact.denominator
    # approximate the ratio >= 1 (its reciprocal otherwise), so the other term is the smaller one
    value = float(exact) if exact >= 1 else float(1 / exact)
    denominators = np.arange(1, _MAX_APPROXIMATE_DENOMINATOR + 1)
    numerators = np.rint(value * denominators)
    errors = np.abs(numerators / denominators - value) / value
    within = np.nonzero(errors <= RESAMPLE_RATIO_TOLERANCE)[0]
    best = int(within[0]) if len(within) else int(np.argmin(errors))
    larger, smaller = int(numerators[best]), int(denominators[best])
    divisor = math.gcd(larger, smaller)
    larger, smaller = larger // divisor, smaller // divisor
    return (larger, smaller) if exact >= 1 else (smaller, larger)


def _check_usable(lead_mask: np.ndarray, record_notes: list[list[str]], source: str) -> None:
    """CMELTNoUsableLeadError for the first record of the batch with no usable lead."""
    for record in np.nonzero(~lead_mask.any(axis=1))[0]:
        which = source if len(lead_mask) == 1 else f"{source}, record {record}"
        reasons = "; ".join(record_notes[record][-12:]) or "every lead is missing"
        raise CMELTNoUsableLeadError(
            f"{which}: no usable lead (expected at least one standard lead that is recorded, not flat, mostly "
            f"finite and within max_amplitude_mv); an output from it would be meaningless: {reasons}"
        )


def _check_settings(extractor: "CMELTFeatureExtractor") -> None:
    """ValueError naming the first setting outside its range."""
    checks = (
        ("num_samples", extractor.num_samples >= 1, "an integer >= 1"),
        ("sampling_rate", MIN_SAMPLING_RATE <= float(extractor.sampling_rate) <= MAX_SAMPLING_RATE,
         f"between {MIN_SAMPLING_RATE:g} and {MAX_SAMPLING_RATE:g} Hz"),
        ("max_missing_fraction", 0.0 <= extractor.max_missing_fraction < 1.0,
         "in [0, 1) (a lead with no finite sample is always missing)"),
        ("max_gap_seconds", extractor.max_gap_seconds >= 0.0, ">= 0"),
        ("flat_lead_threshold_mv", extractor.flat_lead_threshold_mv >= 0.0, ">= 0"),
        ("min_seconds", extractor.min_seconds > 0.0, "> 0"),
        ("max_amplitude_mv", extractor.max_amplitude_mv > 0.0, "> 0"),
    )
    for name, valid, expected in checks:
        if not valid:
            raise ValueError(f"{name} must be {expected}, got {getattr(extractor, name)!r}")


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "detach")


def _is_number_list(value: Any) -> bool:
    """A plain list of numbers (one single-lead record), as opposed to a list holding arrays."""
    return isinstance(value, (list, tuple)) and (len(value) == 0 or isinstance(value[0], (int, float, np.number)))


def _as_numeric_array(signal: Any) -> np.ndarray:
    if hasattr(signal, "detach"):  # torch tensor, without importing torch
        signal = signal.detach().cpu()
        if signal.is_floating_point():
            signal = signal.float()
        signal = signal.numpy()
    try:
        array = np.asarray(signal)
    except (ValueError, TypeError) as error:
        raise ValueError(f"expected a numeric ECG array (ragged nested lists are not one array): {error}") from error
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"expected a numeric (integer or float) ECG array, got dtype {array.dtype}")
    return array


def _check_rate(sampling_rate: float | None, source: str = "input") -> float:
    if sampling_rate is None:
        raise ValueError(
            f"{source}: sampling_rate is required for ECG arrays (Hz, e.g. sampling_rate=500); "
            "it is needed to resample to 500 Hz"
        )
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: sampling_rate must be a number in Hz, got {sampling_rate!r}") from error
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        raise ValueError(
            f"{source}: sampling_rate must be between {MIN_SAMPLING_RATE:g} and {MAX_SAMPLING_RATE:g} Hz, got {rate:g}"
        )
    return rate


def _units_scale(units: str, adc_gain: float | None) -> float:
    key = str(units).strip().lower()
    if key == "adc":
        if adc_gain is None or not adc_gain > 0:
            raise ValueError("units='adc' needs adc_gain (ADC units per mV, > 0)")
        return 1.0 / float(adc_gain)
    if key not in _UNITS_TO_MV:
        raise ValueError(f"units must be 'mV', 'uV', 'V' or 'adc', got {units!r}")
    return _UNITS_TO_MV[key]


def _leads_first(array: np.ndarray, lead_names: list[str] | None, orientation: str | None) -> np.ndarray:
    """(leads, samples) view of a 2-D record, inferring the orientation only when it is unambiguous."""
    if orientation is not None:
        if orientation not in ("leads_first", "samples_first"):
            raise ValueError(f"orientation must be 'leads_first' or 'samples_first', got {orientation!r}")
        return array if orientation == "leads_first" else array.T
    rows, columns = array.shape
    if lead_names is not None:
        count = len(lead_names)
        if rows == count and columns != count:
            return array
        if columns == count and rows != count:
            return array.T
        if rows != count and columns != count:
            raise ValueError(f"{count} lead names given but the ECG has shape {array.shape}: no axis has {count} entries")
    elif (rows <= MAX_INFERRED_LEADS) != (columns <= MAX_INFERRED_LEADS):
        return array if rows <= MAX_INFERRED_LEADS else array.T
    raise ValueError(
        f"cannot tell the lead axis of an ECG of shape {array.shape}; pass orientation='leads_first' "
        "(leads, samples) or 'samples_first' (samples, leads)"
    )


def _lead_names_or_default(lead_names: list[str] | None, channels: int) -> list[str]:
    if lead_names is not None:
        if len(lead_names) != channels:
            raise ValueError(f"{len(lead_names)} lead names given for {channels} channels")
        return [str(name) for name in lead_names]
    if channels == len(CANONICAL_LEADS):
        return list(CANONICAL_LEADS)
    raise ValueError(
        f"an ECG with {channels} channel(s) needs lead_names (e.g. ['I', 'II']); only 12-channel input is assumed "
        f"to be in the canonical order {', '.join(CANONICAL_LEADS)}"
    )


def _lead_mapping(lead_names: list[str], source: str) -> tuple[list[tuple[int, int]], list[str]]:
    """[(input channel, canonical index)] in canonical order, plus notes about dropped channels."""
    chosen: dict[int, int] = {}
    notes = []
    for channel, name in enumerate(lead_names):
        target = canonical_lead_index(name)
        if target is None:
            notes.append(f"{source}: channel {channel} ({name!r}) is not one of the 12 standard leads; dropped")
        elif target in chosen:
            notes.append(f"{source}: channel {channel} ({name!r}) repeats lead {CANONICAL_LEADS[target]}; dropped")
        else:
            chosen[target] = channel
    if not chosen:
        raise ValueError(
            f"{source}: none of the lead names {lead_names} is one of the 12 standard leads "
            f"({', '.join(CANONICAL_LEADS)}, aliases such as MLII, DII, avr)"
        )
    return [(chosen[target], target) for target in sorted(chosen)], notes


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.nonzero(edges == 1)[0]
    return starts, np.nonzero(edges == -1)[0] - starts


CMELTFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["CMELTFeatureExtractor", "CMELTCanonicalECG", "CMELTNoUsableLeadError", "resampling_factors"]
