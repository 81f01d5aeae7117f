"""Readers of modeling_cmelt.reading_cmelt against the wfdb package and real PhysioNet records."""

from pathlib import Path
import shutil

import numpy as np
import pytest

from modeling_cmelt.reading_cmelt import (
    CANONICAL_LEADS,
    CMELTReadError,
    canonical_lead_index,
    read_ecg,
    read_hdf5,
    read_npy,
    read_wfdb,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WFDB_DIR = SHARED_DATA / "wfdb"
needs_data = pytest.mark.skipif(not WFDB_DIR.is_dir(), reason=f"shared test data not found at {WFDB_DIR}")
wfdb = pytest.importorskip("wfdb")


def _copy_record(name: str, destination: Path) -> Path:
    for source in WFDB_DIR.glob(f"{name}.*"):
        target = destination / source.name
        shutil.copyfile(source, target)
    return destination / name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("I", 0), ("ii", 1), ("III", 2), ("avr", 3), ("AVR", 3), ("aVL", 4), ("AVF", 5), ("v1", 6), ("V6", 11),
        ("MLII", 1), ("ML2", 1), ("DI", 0), ("DII", 1), ("DIII", 2), ("lead I", 0), ("Lead_V2", 7), ("MV1", 6),
        ("vx", None), ("vy", None), ("vz", None), ("ECG", None), ("", None), ("V7", None), ("foo", None),
    ],
)
def test_canonical_lead_index(name, expected):
    assert canonical_lead_index(name) == expected


def test_canonical_leads_order():
    assert CANONICAL_LEADS == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@needs_data
@pytest.mark.parametrize("suffix", ["", ".hea", ".dat"])
def test_read_wfdb_matches_wfdb_package(suffix):
    recording = read_ecg(str(WFDB_DIR / "s0010_re") + suffix)
    reference = wfdb.rdrecord(str(WFDB_DIR / "s0010_re"))
    assert recording.signal.dtype == np.float32
    assert recording.signal.shape == (15, 38400)
    assert recording.sampling_rate == 1000
    assert recording.lead_names == reference.sig_name
    assert "age: 81" in recording.comments
    np.testing.assert_allclose(recording.signal, reference.p_signal.T, atol=1e-5)


@needs_data
def test_read_format_212_through_wfdb():
    recording = read_wfdb(WFDB_DIR / "100", sample_range=(1000, 4600))
    reference = wfdb.rdrecord(str(WFDB_DIR / "100"), sampfrom=1000, sampto=4600)
    assert recording.lead_names == ["MLII", "V5"]
    assert recording.sampling_rate == 360
    assert recording.num_samples_on_disk == 650000
    np.testing.assert_allclose(recording.signal, reference.p_signal.T, atol=1e-5)


@needs_data
def test_partial_read_equals_slice_of_full_read():
    full = read_ecg(WFDB_DIR / "s0010_re")
    part = read_ecg(WFDB_DIR / "s0010_re", channels=[1, 13, 3], sample_range=(250, 10250))
    assert part.lead_names == ["ii", "vy", "avr"]
    np.testing.assert_array_equal(part.signal, full.signal[[1, 13, 3], 250:10250])


def test_microvolt_units_are_converted(tmp_path):
    signal_uv = np.round(np.random.default_rng(0).normal(0, 500, size=(3000, 2)))
    wfdb.wrsamp("rec", fs=500, units=["uV", "uV"], sig_name=["I", "II"], p_signal=signal_uv, fmt=["16", "16"],
                adc_gain=[1.0, 1.0], baseline=[0, 0], write_dir=str(tmp_path))
    recording = read_ecg(tmp_path / "rec")
    np.testing.assert_allclose(recording.signal, signal_uv.T / 1000.0, atol=1e-6)


def test_physionet_challenge_mat_with_header(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    digital = np.random.default_rng(1).integers(-3000, 3000, size=(12, 5000)).astype(np.int16)
    scipy_io.savemat(tmp_path / "A0001.mat", {"val": digital}, format="4")
    lines = ["A0001 12 500 5000 05-Feb-2020 11:39:16"]
    lines += [f"A0001.mat 16+24 1000/mV 16 0 {digital[i, 0]} 0 0 {lead}" for i, lead in enumerate(CANONICAL_LEADS)]
    lines += ["#Age: 74", "#Sex: Male", "#Dx: 59118001"]
    (tmp_path / "A0001.hea").write_text("\n".join(lines) + "\n")
    recording = read_ecg(tmp_path / "A0001.mat")
    assert recording.lead_names == list(CANONICAL_LEADS)
    assert recording.sampling_rate == 500
    assert "Dx: 59118001" in recording.comments
    np.testing.assert_allclose(recording.signal, digital / 1000.0, atol=1e-6)
    reference = wfdb.rdrecord(str(tmp_path / "A0001"))
    np.testing.assert_allclose(recording.signal, reference.p_signal.T, atol=1e-6)


def test_cpsc_original_mat_without_header(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    data = np.random.default_rng(2).normal(size=(12, 4000))
    scipy_io.savemat(tmp_path / "A0002.mat", {"ECG": {"sex": "Female", "age": 63.0, "data": data}})
    recording = read_ecg(tmp_path / "A0002.mat")
    assert recording.sampling_rate == 500
    assert recording.lead_names == list(CANONICAL_LEADS)
    np.testing.assert_allclose(recording.signal, data, atol=1e-6)


def test_mat_without_ecg_struct_or_header_is_a_read_error(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(tmp_path / "x.mat", {"val": np.zeros((12, 100))})
    with pytest.raises(CMELTReadError, match="x.mat"):
        read_ecg(tmp_path / "x.mat")


def test_code_style_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    tracings = np.random.default_rng(3).normal(size=(3, 4096, 12)).astype(np.float32)
    with h5py.File(tmp_path / "ecg_tracings.hdf5", "w") as handle:
        handle["tracings"] = tracings
    recording = read_ecg(tmp_path / "ecg_tracings.hdf5", hdf5_index=1)
    assert recording.sampling_rate == 400
    assert recording.lead_names[:4] == ["DI", "DII", "DIII", "AVR"]
    assert [canonical_lead_index(name) for name in recording.lead_names] == list(range(12))
    np.testing.assert_array_equal(recording.signal, tracings[1].T)
    with pytest.raises(ValueError, match="hdf5_index"):
        read_ecg(tmp_path / "ecg_tracings.hdf5")
    with pytest.raises(CMELTReadError, match="out of range"):
        read_hdf5(tmp_path / "ecg_tracings.hdf5", 7)


def test_npy_needs_a_rate(tmp_path):
    array = np.random.default_rng(4).normal(size=(12, 2500)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(ValueError, match="sampling_rate"):
        read_ecg(tmp_path / "x.npy")
    recording = read_npy(tmp_path / "x.npy", sampling_rate=250)
    assert recording.sampling_rate == 250 and recording.lead_names == list(CANONICAL_LEADS)
    np.testing.assert_array_equal(recording.signal, array)


@needs_data
@pytest.mark.parametrize("name", ["s0010_re", "100"])
def test_truncated_dat_is_a_read_error(tmp_path, name):
    stem = _copy_record(name, tmp_path)
    data_file = stem.with_suffix(".dat")
    data_file.write_bytes(data_file.read_bytes()[:50_000])
    with pytest.raises(CMELTReadError, match=r"truncated.*" if name == "100" else r"\.dat: truncated"):
        read_ecg(stem)


@needs_data
@pytest.mark.parametrize(
    "header_text, message",
    [
        ("s0010_re 15 abc 38400\n", "unparsable record line"),
        ("s0010_re 15 1000 38400\ns0010_re.dat 16 2000 16 0 -489 -8337 0 i\n", "announces 15 signals"),
        ("\x00\x01garbage", "record line"),
        ("", "no record line"),
        ("s0010_re 1 1000 38400\ns0010_re.dat sixteen 2000 16 0 0 0 0 i\n", "unparsable signal line"),
    ],
)
def test_corrupt_header_is_a_read_error(tmp_path, header_text, message):
    stem = _copy_record("s0010_re", tmp_path)
    stem.with_suffix(".hea").write_text(header_text, encoding="latin-1")
    with pytest.raises(CMELTReadError, match=message) as error:
        read_ecg(stem)
    assert "s0010_re.hea" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_files_are_read_errors(tmp_path):
    with pytest.raises(CMELTReadError, match="not found"):
        read_ecg(tmp_path / "nothing")
    (tmp_path / "r.hea").write_text("r 1 500 1000\nr.dat 16 200 16 0 0 0 0 I\n")
    with pytest.raises(CMELTReadError, match="r.dat"):
        read_ecg(tmp_path / "r")
