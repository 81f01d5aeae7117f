"""Reading ECG recordings from disk into one in-memory form (`CMELTRecording`: channels x samples, float32 mV).

Supported on-disk formats, chosen by what is on disk:
- WFDB records (`.hea` + signal files), given as the record stem, the `.hea` or the `.dat` path. Single-segment
  records in formats 16, 61, 80 and 32 (this covers PhysioNet challenge `.hea` + `.mat` "16+24" files, PTB-XL,
  MIMIC-IV-ECG, CSN) are read by a small numpy reader, because `wfdb.rdheader` costs ~0.2 ms per channel (it
  parses each signal line through pandas); every other WFDB record (format 212, 310, multi-segment, skewed, several
  samples per frame ...) is read by the `wfdb` package.
- CPSC2018 original `.mat` (struct `ECG` with fields sex, age, data; no `.hea` beside it): 500 Hz, canonical leads.
- CODE-style HDF5 (`tracings` of shape (N, samples, 12), 400 Hz, leads DI DII DIII AVR AVL AVF V1..V6).
- `.npy` arrays (channels x samples; the caller gives the sampling rate).

wfdb, scipy and h5py are imported inside the functions that need them, so this module loads without them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# Keys are lead names lower-cased with spaces, "_", "-" and a leading "lead" removed.
_LEAD_ALIASES = {
    **{name.lower(): index for index, name in enumerate(CANONICAL_LEADS)},
    # CODE / Brazilian naming
    "di": 0, "dii": 1, "diii": 2, "d1": 0, "d2": 1, "d3": 2,
    # modified limb leads of Holter / MIT-BIH records
    "mli": 0, "mlii": 1, "mliii": 2, "ml1": 0, "ml2": 1, "ml3": 2,
    # modified chest leads (MIT-BIH "MV1" ...)
    **{f"mv{number}": 5 + number for number in range(1, 7)},
}

CODE_HDF5_LEADS = ("DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
CODE_HDF5_SAMPLING_RATE = 400.0
CPSC_MAT_SAMPLING_RATE = 500.0

# Physical unit (lower case) -> factor to millivolts.
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}

# Fast-path WFDB formats: numpy dtype and the digital value WFDB reserves for "no sample".
_FAST_WFDB_FORMATS = {
    "16": (np.dtype("<i2"), -(2**15)),
    "61": (np.dtype(">i2"), -(2**15)),
    "80": (np.dtype("u1"), -128),  # stored with an offset of 128
    "32": (np.dtype("<i4"), -(2**31)),
}
_WFDB_DEFAULT_GAIN = 200.0
_WFDB_DEFAULT_RATE = 250.0


class CMELTReadError(ValueError):
    """A recording could not be read: missing, truncated or corrupt file. The message names the file."""


@dataclass
class CMELTRecording:
    """One recording as read from disk.

    Attributes:
        signal: (channels, samples) float32 in millivolts; NaN where the file marks a sample as missing.
        sampling_rate: samples per second.
        lead_names: one name per channel, as written in the file (map with `canonical_lead_index`).
        comments: free-text header comments (WFDB `#` lines), empty when the format has none.
        source: the path the recording was read from (plus `[index]` for HDF5).
        num_samples_on_disk: length of the whole recording, which is more than `signal.shape[1]` when only a
            sample range was read.
    """

    signal: np.ndarray
    sampling_rate: float
    lead_names: list[str]
    comments: list[str] = field(default_factory=list)
    source: str = ""
    num_samples_on_disk: int | None = None


@dataclass
class CMELTRecordingInfo:
    """What a header tells without reading the signal: rate, length and lead names."""

    sampling_rate: float | None
    num_samples: int
    lead_names: list[str]


def canonical_lead_index(name: str) -> int | None:
    """Index of `name` in `CANONICAL_LEADS` (case-insensitive, with common aliases), or None for other leads.

    `"avr"`, `"AVR"`, `"lead I"`, `"MLII"` (-> II), `"DIII"` (-> III), `"ML2"`, `"MV1"` (-> V1) are recognised;
    Frank leads (vx, vy, vz), "ECG", numbers and unknown names give None.
    """
    key = re.sub(r"[\s_\-]", "", str(name)).lower()
    if key.startswith("lead") and len(key) > 4:
        key = key[4:]
    return _LEAD_ALIASES.get(key)


# ---------------------------------------------------------------------------------------------------------------
# WFDB


@dataclass
class _WfdbSignalSpec:
    file_name: str
    fmt: str
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    description: str


@dataclass
class _WfdbHeader:
    record_name: str
    num_segments: int
    sampling_rate: float
    num_samples: int | None
    signals: list[_WfdbSignalSpec]
    comments: list[str]


_FORMAT_SPEC = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_SPEC = re.compile(r"^([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?(?:/(.+))?$")


def _wfdb_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(record stem, .hea path) for a record given as stem, `.hea`, `.dat` or `.mat` path."""
    path = Path(path)
    if path.suffix.lower() in (".hea", ".dat", ".mat", ".xyz"):
        stem = path.with_suffix("")
    else:
        stem = path
    return stem, stem.with_name(stem.name + ".hea")


def _parse_wfdb_header(hea_path: Path) -> _WfdbHeader:
    try:
        text = hea_path.read_text(encoding="latin-1")
    except OSError as error:
        raise CMELTReadError(f"{hea_path}: cannot read the WFDB header ({error})") from error
    comments: list[str] = []
    lines: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
        else:
            lines.append(line.split("#", 1)[0].strip())
    if not lines:
        raise CMELTReadError(f"{hea_path}: the WFDB header has no record line")
    record_fields = lines[0].split()
    if len(record_fields) < 2:
        raise CMELTReadError(f"{hea_path}: record line {lines[0]!r} needs at least a name and a number of signals")
    name, _, segments = record_fields[0].partition("/")
    try:
        num_signals = int(record_fields[1])
        num_segments = int(segments) if segments else 1
        sampling_rate = (
            float(record_fields[2].split("/")[0].split("(")[0]) if len(record_fields) > 2 else _WFDB_DEFAULT_RATE
        )
        num_samples = int(record_fields[3]) if len(record_fields) > 3 else None
    except ValueError as error:
        raise CMELTReadError(f"{hea_path}: unparsable record line {lines[0]!r} ({error})") from error
    if num_signals < 0 or (num_samples is not None and num_samples < 0) or not 0 < sampling_rate < math.inf:
        raise CMELTReadError(
            f"{hea_path}: record line {lines[0]!r}: expected non-negative counts and a sampling rate > 0"
        )
    if num_segments > 1:
        return _WfdbHeader(name, num_segments, sampling_rate, num_samples, [], comments)
    signal_lines = lines[1:]
    if len(signal_lines) != num_signals:
        raise CMELTReadError(
            f"{hea_path}: the record line announces {num_signals} signals but {len(signal_lines)} signal lines follow"
        )
    signals = [_parse_wfdb_signal_line(hea_path, line) for line in signal_lines]
    return _WfdbHeader(name, 1, sampling_rate, num_samples, signals, comments)


def _parse_wfdb_signal_line(hea_path: Path, line: str) -> _WfdbSignalSpec:
    fields = line.split()
    if len(fields) < 2:
        raise CMELTReadError(f"{hea_path}: signal line {line!r} needs at least a file name and a format")
    format_match = _FORMAT_SPEC.match(fields[1])
    gain, baseline, units = _WFDB_DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        gain_match = _GAIN_SPEC.match(fields[2])
        if format_match is None or gain_match is None:
            raise CMELTReadError(f"{hea_path}: unparsable signal line {line!r}")
        try:
            gain = float(gain_match.group(1)) or _WFDB_DEFAULT_GAIN
        except ValueError as error:
            raise CMELTReadError(f"{hea_path}: unparsable ADC gain {gain_match.group(1)!r} in signal line {line!r}") from error
        if not math.isfinite(gain) or not np.isfinite(np.float32(1.0 / gain)):
            raise CMELTReadError(
                f"{hea_path}: ADC gain must be a finite number whose inverse fits float32, got {gain_match.group(1)!r} "
                f"in {line!r}"
            )
        baseline = int(gain_match.group(2)) if gain_match.group(2) is not None else None
        units = gain_match.group(3) or "mV"
    elif format_match is None:
        raise CMELTReadError(f"{hea_path}: unparsable signal format in line {line!r}")
    try:
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
    except ValueError as error:
        raise CMELTReadError(f"{hea_path}: unparsable ADC zero in signal line {line!r}") from error
    return _WfdbSignalSpec(
        file_name=fields[0],
        fmt=format_match.group(1),
        samples_per_frame=int(format_match.group(2) or 1),
        skew=int(format_match.group(3) or 0),
        byte_offset=int(format_match.group(4) or 0),
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        description=" ".join(fields[8:]) if len(fields) > 8 else "",
    )


def _fast_path_applies(header: _WfdbHeader) -> bool:
    return (
        header.num_segments == 1
        and bool(header.signals)
        and all(
            spec.fmt in _FAST_WFDB_FORMATS and spec.samples_per_frame == 1 and spec.skew == 0 and spec.file_name != "-"
            for spec in header.signals
        )
    )


def _units_to_mv_factor(units: str) -> float | None:
    return _UNIT_TO_MV.get(units.strip().lower())


def read_wfdb_info(path: str | os.PathLike) -> CMELTRecordingInfo:
    """Rate, length and lead names of a WFDB record without reading its signal."""
    stem, hea_path = _wfdb_paths(path)
    if not hea_path.is_file():
        raise CMELTReadError(f"{hea_path}: WFDB header not found")
    header = _parse_wfdb_header(hea_path)
    if header.num_segments == 1 and header.num_samples is None and _fast_path_applies(header):
        header.num_samples = _samples_from_file_sizes(stem, hea_path, header)
    if header.num_segments == 1 and header.num_samples is not None:
        return CMELTRecordingInfo(header.sampling_rate, header.num_samples, [s.description for s in header.signals])
    wfdb_header = _wfdb_call(hea_path, lambda wfdb: wfdb.rdheader(str(stem)))
    return CMELTRecordingInfo(float(wfdb_header.fs), int(wfdb_header.sig_len or 0), list(wfdb_header.sig_name or []))


def _samples_from_file_sizes(stem: Path, hea_path: Path, header: _WfdbHeader) -> int:
    """Samples per channel of a fast-path record whose header gives no count (WFDB allows omitting it): the
    shortest signal file decides."""
    counts = []
    for file_name, members in _signals_by_file(header).items():
        spec = header.signals[members[0]]
        data_path = stem.with_name(file_name)
        try:
            size = data_path.stat().st_size
        except OSError as error:
            raise CMELTReadError(f"{data_path}: signal file of {hea_path.name} not found ({error})") from error
        frame_bytes = _FAST_WFDB_FORMATS[spec.fmt][0].itemsize * len(members)
        counts.append(max(size - spec.byte_offset, 0) // frame_bytes)
    return int(min(counts))


def _signals_by_file(header: _WfdbHeader) -> dict[str, list[int]]:
    """Signal indices per signal file, in header order (signals of one file are interleaved frame by frame)."""
    files: dict[str, list[int]] = {}
    for index, spec in enumerate(header.signals):
        files.setdefault(spec.file_name, []).append(index)
    return files


def read_wfdb(
    path: str | os.PathLike,
    *,
    channels: list[int] | None = None,
    sample_range: tuple[int, int] | None = None,
) -> CMELTRecording:
    """Read a WFDB record (stem, `.hea`, `.dat` or challenge `.mat` path) in millivolts.

    Args:
        channels: indices of the channels to read (all when None); files holding none of them are not opened.
        sample_range: `(start, stop)` sample indices to read (the whole record when None); clipped to the record.
    """
    stem, hea_path = _wfdb_paths(path)
    if not hea_path.is_file():
        raise CMELTReadError(f"{hea_path}: WFDB header not found")
    header = _parse_wfdb_header(hea_path)
    if _fast_path_applies(header):
        return _read_wfdb_fast(stem, hea_path, header, channels, sample_range)
    return _read_wfdb_with_package(stem, hea_path, channels, sample_range)


def _read_wfdb_fast(
    stem: Path,
    hea_path: Path,
    header: _WfdbHeader,
    channels: list[int] | None,
    sample_range: tuple[int, int] | None,
) -> CMELTRecording:
    total = header.num_samples if header.num_samples is not None else _samples_from_file_sizes(stem, hea_path, header)
    start, stop = _clip_range(sample_range, total)
    wanted = list(range(len(header.signals))) if channels is None else list(channels)
    for channel in wanted:
        if not 0 <= channel < len(header.signals):
            raise ValueError(f"{hea_path}: channel {channel} requested, the record has {len(header.signals)}")
    files = _signals_by_file(header)
    # every file is checked against the header before anything is allocated (a corrupt header can claim 10^12 samples)
    for file_name, members in files.items():
        specs = [header.signals[channel] for channel in members]
        if any(spec.fmt != specs[0].fmt or spec.byte_offset != specs[0].byte_offset for spec in specs):
            return _read_wfdb_with_package(stem, hea_path, channels, sample_range)
        _check_fast_file_size(stem.with_name(file_name), hea_path, specs[0], len(members), total)
    signal = np.empty((len(wanted), stop - start), dtype=np.float32)
    for file_name, members in files.items():
        picked = [channel for channel in wanted if channel in members]
        if not picked:
            continue
        specs = [header.signals[channel] for channel in members]
        fmt = specs[0].fmt
        dtype, invalid = _FAST_WFDB_FORMATS[fmt]
        data_path = stem.with_name(file_name)
        frame_bytes = dtype.itemsize * len(members)
        with open(data_path, "rb") as handle:
            handle.seek(specs[0].byte_offset + start * frame_bytes)
            digital = np.fromfile(handle, dtype=dtype, count=(stop - start) * len(members))
        digital = digital.reshape(stop - start, len(members))
        if fmt == "80":
            digital = digital.astype(np.int16) - 128
        for channel in picked:
            spec = header.signals[channel]
            column = digital[:, members.index(channel)]
            row = signal[wanted.index(channel)]
            # in float: a baseline outside the storage type (e.g. 70000 for int16) is legal WFDB
            np.subtract(column, np.float64(spec.baseline), out=row, casting="unsafe")
            row *= np.float32(_physical_scale(spec.gain, spec.units))
            row[column == invalid] = np.nan
    return CMELTRecording(
        signal=signal,
        sampling_rate=float(header.sampling_rate),
        lead_names=[header.signals[channel].description for channel in wanted],
        comments=header.comments,
        source=str(stem),
        num_samples_on_disk=total,
    )


def _check_fast_file_size(data_path: Path, hea_path: Path, spec: _WfdbSignalSpec, members: int, total: int) -> None:
    frame_bytes = _FAST_WFDB_FORMATS[spec.fmt][0].itemsize * members
    try:
        size = data_path.stat().st_size
    except OSError as error:
        raise CMELTReadError(f"{data_path}: signal file of {hea_path.name} not found ({error})") from error
    available = (size - spec.byte_offset) // frame_bytes
    if available < total:
        raise CMELTReadError(
            f"{data_path}: truncated signal file: it holds {max(available, 0)} samples per channel but "
            f"{hea_path.name} announces {total}"
        )


def _physical_scale(gain: float, units: str) -> float:
    """Digital units -> mV; unknown (non-voltage) units are left as they are."""
    factor = _units_to_mv_factor(units)
    return (1.0 if factor is None else factor) / gain


def _wfdb_call(hea_path: Path, call):
    try:
        import wfdb
    except ImportError as error:  # pragma: no cover - wfdb is a dependency of the repository
        raise ImportError("reading this WFDB record needs the `wfdb` package: pip install wfdb") from error
    try:
        return call(wfdb)
    except CMELTReadError:
        raise
    except Exception as error:  # wfdb raises many unrelated types for bad files
        raise CMELTReadError(f"{hea_path}: wfdb could not read the record ({type(error).__name__}: {error})") from error


def _read_wfdb_with_package(
    stem: Path, hea_path: Path, channels: list[int] | None, sample_range: tuple[int, int] | None
) -> CMELTRecording:
    wfdb_header = _wfdb_call(hea_path, lambda wfdb: wfdb.rdheader(str(stem)))
    total = int(wfdb_header.sig_len or 0)
    _check_wfdb_file_sizes(stem, hea_path, wfdb_header)
    start, stop = _clip_range(sample_range, total)
    record = _wfdb_call(
        hea_path,
        lambda wfdb: wfdb.rdrecord(str(stem), sampfrom=start, sampto=stop, channels=channels, return_res=32),
    )
    if record.p_signal is None or record.p_signal.shape[0] != stop - start:
        got = 0 if record.p_signal is None else record.p_signal.shape[0]
        raise CMELTReadError(f"{stem}: truncated record: read {got} samples, the header announces {stop - start}")
    signal = np.ascontiguousarray(record.p_signal.T, dtype=np.float32)
    for row, units in enumerate(record.units or []):
        factor = _units_to_mv_factor(units or "mV")
        if factor is not None and factor != 1.0:
            signal[row] *= np.float32(factor)
    return CMELTRecording(
        signal=signal,
        sampling_rate=float(record.fs),
        lead_names=list(record.sig_name),
        comments=list(record.comments or []),
        source=str(stem),
        num_samples_on_disk=total,
    )


# Bytes per sample of the fixed-size WFDB formats (compressed FLAC formats 508/516/524 have no fixed size).
_WFDB_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3, "311": 4 / 3}


def _check_wfdb_file_sizes(stem: Path, hea_path: Path, wfdb_header) -> None:
    """Raise if a signal file is shorter than the header announces (wfdb itself fails obscurely or not at all)."""
    if getattr(wfdb_header, "n_seg", None) or not wfdb_header.sig_len or not wfdb_header.file_name:
        return
    needed: dict[str, float] = {}
    for file_name, fmt, samples_per_frame, offset in zip(
        wfdb_header.file_name, wfdb_header.fmt, wfdb_header.samps_per_frame or [], wfdb_header.byte_offset or []
    ):
        if fmt not in _WFDB_BYTES_PER_SAMPLE or file_name == "-":
            return
        base = needed.get(file_name, float(offset or 0))
        needed[file_name] = base + wfdb_header.sig_len * (samples_per_frame or 1) * _WFDB_BYTES_PER_SAMPLE[fmt]
    for file_name, size in needed.items():
        data_path = stem.with_name(file_name)
        if not data_path.is_file():
            raise CMELTReadError(f"{data_path}: signal file of {hea_path.name} not found")
        if data_path.stat().st_size < math.floor(size):
            raise CMELTReadError(
                f"{data_path}: truncated signal file: {data_path.stat().st_size} bytes, {hea_path.name} announces "
                f"{wfdb_header.sig_len} samples ({math.floor(size)} bytes)"
            )


def _clip_range(sample_range: tuple[int, int] | None, total: int) -> tuple[int, int]:
    if sample_range is None:
        return 0, total
    start, stop = int(sample_range[0]), int(sample_range[1])
    start = min(max(start, 0), total)
    return start, min(max(stop, start), total)


# ---------------------------------------------------------------------------------------------------------------
# other formats


def read_cpsc_mat(path: str | os.PathLike) -> CMELTRecording:
    """CPSC2018 original `.mat`: struct `ECG` with fields sex, age, data (12 x N, mV), 500 Hz, canonical leads."""
    path = Path(path)
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover
        raise ImportError("reading `.mat` files needs scipy: pip install scipy") from error
    try:
        content = loadmat(str(path))
    except Exception as error:
        raise CMELTReadError(f"{path}: not a readable MATLAB file ({type(error).__name__}: {error})") from error
    if "ECG" not in content:
        raise CMELTReadError(
            f"{path}: expected a CPSC2018 struct variable 'ECG' (or a WFDB .hea beside the .mat); found "
            f"{sorted(key for key in content if not key.startswith('__'))}"
        )
    try:
        data = content["ECG"]["data"][0, 0]
    except (ValueError, IndexError, KeyError) as error:
        raise CMELTReadError(f"{path}: the 'ECG' struct has no 'data' field") from error
    signal = np.asarray(data, dtype=np.float32)
    if signal.ndim != 2 or len(CANONICAL_LEADS) not in signal.shape:
        raise CMELTReadError(f"{path}: expected ECG.data of shape (12, samples), got {signal.shape}")
    if signal.shape[0] != len(CANONICAL_LEADS):
        signal = signal.T
    return CMELTRecording(
        signal=np.ascontiguousarray(signal),
        sampling_rate=CPSC_MAT_SAMPLING_RATE,
        lead_names=list(CANONICAL_LEADS),
        source=str(path),
        num_samples_on_disk=signal.shape[1],
    )


def read_hdf5(
    path: str | os.PathLike,
    index: int,
    *,
    dataset: str = "tracings",
    sampling_rate: float | None = None,
    lead_names: list[str] | None = None,
    scale_to_mv: float = 1.0,
) -> CMELTRecording:
    """One record of a CODE-style HDF5 file: `dataset` of shape (N, samples, leads).

    Defaults are CODE's: 400 Hz, leads DI DII DIII AVR AVL AVF V1..V6. CODE's README states a "1e-4 V scale" in
    two mutually inconsistent sentences; the tracings' amplitudes (QRS ~1) match millivolts, which is also how
    fairseq-signals and most loaders use them, so `scale_to_mv` defaults to 1.
    """
    path = Path(path)
    if not path.is_file():
        raise CMELTReadError(f"{path}: HDF5 file not found")
    try:
        import h5py
    except ImportError as error:  # pragma: no cover
        raise ImportError("reading HDF5 files needs h5py: pip install h5py") from error
    try:
        with h5py.File(path, "r") as handle:
            if dataset not in handle:
                raise CMELTReadError(f"{path}: no dataset {dataset!r} (found {sorted(handle.keys())})")
            tracings = handle[dataset]
            if tracings.ndim != 3:
                raise CMELTReadError(f"{path}: expected {dataset!r} of shape (records, samples, leads), got {tracings.shape}")
            if not -tracings.shape[0] <= index < tracings.shape[0]:
                raise CMELTReadError(f"{path}: record index {index} out of range (0..{tracings.shape[0] - 1})")
            record = np.asarray(tracings[index], dtype=np.float32)
    except CMELTReadError:
        raise
    except Exception as error:
        raise CMELTReadError(f"{path}: not a readable HDF5 file ({type(error).__name__}: {error})") from error
    names = list(lead_names) if lead_names is not None else list(CODE_HDF5_LEADS)
    if len(names) != record.shape[1]:
        raise CMELTReadError(f"{path}: {record.shape[1]} leads in {dataset!r} but {len(names)} lead names given")
    signal = np.ascontiguousarray(record.T) * np.float32(scale_to_mv)
    return CMELTRecording(
        signal=signal,
        sampling_rate=float(sampling_rate or CODE_HDF5_SAMPLING_RATE),
        lead_names=names,
        source=f"{path}[{index}]",
        num_samples_on_disk=signal.shape[1],
    )


def read_npy(
    path: str | os.PathLike,
    *,
    sampling_rate: float | None,
    lead_names: list[str] | None = None,
    channels: list[int] | None = None,
    sample_range: tuple[int, int] | None = None,
) -> CMELTRecording:
    """A `.npy` array of shape (channels, samples) in mV; the sampling rate must be given.

    The file is memory-mapped and only `channels` x `sample_range` is read, so a 24-h Holter array costs the
    memory of the window kept, not of the file.
    """
    path = Path(path)
    if sampling_rate is None or not sampling_rate > 0:
        raise ValueError(f"{path}: a .npy file carries no sampling rate; pass sampling_rate (Hz, > 0)")
    array = _open_npy(path)
    names = _npy_lead_names(path, array.shape[0], lead_names)
    start, stop = _clip_range(sample_range, array.shape[1])
    picked = list(range(array.shape[0])) if channels is None else list(channels)
    for channel in picked:
        if not 0 <= channel < array.shape[0]:
            raise ValueError(f"{path}: channel {channel} requested, the array has {array.shape[0]}")
    try:
        window = np.asarray(array[picked, start:stop], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise CMELTReadError(f"{path}: expected a numeric array, got dtype {array.dtype}") from error
    return CMELTRecording(
        signal=np.ascontiguousarray(window),
        sampling_rate=float(sampling_rate),
        lead_names=[names[index] for index in picked],
        source=str(path),
        num_samples_on_disk=array.shape[1],
    )


def _open_npy(path: Path) -> np.ndarray:
    """The array of a `.npy` file, memory-mapped (nothing is read until indexed)."""
    if not path.is_file():
        raise CMELTReadError(f"{path}: .npy file not found")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise CMELTReadError(f"{path}: not a readable .npy file ({type(error).__name__}: {error})") from error
    if array.ndim != 2:
        raise CMELTReadError(f"{path}: expected a 2-D array (channels, samples), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise CMELTReadError(f"{path}: expected a numeric (integer or float) array, got dtype {array.dtype}")
    return array


def _npy_lead_names(path: Path, channels: int, lead_names: list[str] | None) -> list[str]:
    if lead_names is None:
        return list(CANONICAL_LEADS) if channels == len(CANONICAL_LEADS) else [""] * channels
    if len(lead_names) != channels:
        raise ValueError(f"{path}: {len(lead_names)} lead names given for an array of {channels} channels")
    return [str(name) for name in lead_names]


def read_npy_info(
    path: str | os.PathLike, *, sampling_rate: float | None, lead_names: list[str] | None = None
) -> CMELTRecordingInfo:
    """Shape of a `.npy` file from its header (memory-mapped, nothing read) as rate, length and lead names."""
    path = Path(path)
    array = _open_npy(path)
    return CMELTRecordingInfo(sampling_rate, int(array.shape[1]), _npy_lead_names(path, array.shape[0], lead_names))


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in (".h5", ".hdf5", ".hdf"):
        return "hdf5"
    if suffix == ".mat" and not path.with_suffix(".hea").is_file():
        return "cpsc_mat"
    return "wfdb"


def read_ecg_info(
    path: str | os.PathLike, *, sampling_rate: float | None = None, lead_names: list[str] | None = None
) -> CMELTRecordingInfo | None:
    """Header information of a WFDB record or `.npy` file (cheap), or None where only a full read tells (other
    formats, multi-segment WFDB records)."""
    kind = _file_kind(Path(path))
    if kind == "npy":
        return read_npy_info(path, sampling_rate=sampling_rate, lead_names=lead_names) if sampling_rate else None
    if kind != "wfdb":
        return None
    info = read_wfdb_info(path)
    if not info.lead_names:  # multi-segment records name their signals per segment
        return None
    if sampling_rate is not None:
        info.sampling_rate = float(sampling_rate)
    return info


def read_ecg(
    path: str | os.PathLike,
    *,
    sampling_rate: float | None = None,
    lead_names: list[str] | None = None,
    hdf5_dataset: str = "tracings",
    hdf5_index: int | None = None,
    channels: list[int] | None = None,
    sample_range: tuple[int, int] | None = None,
) -> CMELTRecording:
    """Read one recording, choosing the reader by what is on disk (see the module docstring).

    Args:
        sampling_rate: overrides the file's rate (required for `.npy`).
        lead_names: overrides the file's lead names (one per channel of the file).
        hdf5_dataset, hdf5_index: dataset name and record index for HDF5 files (index required).
        channels, sample_range: read only these channel indices / this `(start, stop)` sample range.
    """
    path = Path(path)
    kind = _file_kind(path)
    if kind == "npy":
        recording = read_npy(path, sampling_rate=sampling_rate, lead_names=lead_names, channels=channels,
                             sample_range=sample_range)
        lead_names = channels = sample_range = None  # already applied while reading
    elif kind == "hdf5":
        if hdf5_index is None:
            raise ValueError(f"{path}: an HDF5 file holds many records; pass hdf5_index")
        recording = read_hdf5(path, hdf5_index, dataset=hdf5_dataset, sampling_rate=sampling_rate, lead_names=lead_names)
    elif kind == "cpsc_mat":
        recording = read_cpsc_mat(path)
    else:
        recording = read_wfdb(path, channels=channels, sample_range=sample_range)
        if lead_names is not None and channels is not None:
            lead_names = [lead_names[index] for index in channels]
        channels = sample_range = None  # already applied while reading
    if channels is not None or sample_range is not None:
        start, stop = _clip_range(sample_range, recording.signal.shape[1])
        picked = list(range(recording.signal.shape[0])) if channels is None else list(channels)
        recording.signal = np.ascontiguousarray(recording.signal[picked, start:stop])
        recording.lead_names = [recording.lead_names[index] for index in picked]
    if lead_names is not None and kind in ("wfdb", "cpsc_mat"):
        if len(lead_names) != recording.signal.shape[0]:
            raise ValueError(
                f"{path}: {len(lead_names)} lead names given for {recording.signal.shape[0]} channels read"
            )
        recording.lead_names = list(lead_names)
    if sampling_rate is not None:
        recording.sampling_rate = float(sampling_rate)
    return recording
