"""CMELTFeatureExtractor: canonical 12 x 5000 output against independent computations, and bad input."""

from pathlib import Path
import shutil
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from modeling_cmelt.feature_extraction_cmelt import CMELTCanonicalECG, CMELTFeatureExtractor
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS, CMELTReadError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WFDB_DIR = SHARED_DATA / "wfdb"
needs_data = pytest.mark.skipif(not WFDB_DIR.is_dir(), reason=f"shared test data not found at {WFDB_DIR}")
wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def extractor():
    return CMELTFeatureExtractor()


def _synthetic(channels=12, seconds=10.0, rate=500, seed=0):
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * rate)) / rate
    phases = rng.uniform(0, 2 * np.pi, size=(channels, 1))
    return (np.sin(2 * np.pi * 1.2 * time + phases) + 0.05 * rng.normal(size=(channels, time.size))).astype(np.float32)


@needs_data
def test_ptb_record_matches_independent_computation(extractor):
    output = extractor(str(WFDB_DIR / "s0010_re"), return_sample_mask=True)
    assert output["input_values"].shape == (1, 12, 5000) and output["input_values"].dtype == np.float32
    assert output["lead_mask"].dtype == bool and output["lead_mask"].all()
    assert output["sample_mask"].all()
    signal, fields = wfdb.rdsamp(str(WFDB_DIR / "s0010_re"))
    names = [name.lower() for name in fields["sig_name"]]
    for position, lead in enumerate(CANONICAL_LEADS):
        expected = resample_poly(signal[:, names.index(lead.lower())], 1, 2)[:5000]
        np.testing.assert_allclose(output["input_values"][0, position], expected, atol=1e-4)


@needs_data
def test_center_crop_matches_independent_computation():
    output = CMELTFeatureExtractor(length_policy="center")(WFDB_DIR / "s0010_re")
    signal, _ = wfdb.rdsamp(str(WFDB_DIR / "s0010_re"), channels=list(range(12)))
    full = resample_poly(signal, 1, 2, axis=0)
    start = (full.shape[0] - 5000) // 2
    np.testing.assert_allclose(output["input_values"][0], full[start : start + 5000].T, atol=1e-4)


@needs_data
def test_mit_bih_two_leads(extractor):
    output = extractor(WFDB_DIR / "100.hea")
    mask = output["lead_mask"][0]
    assert mask.tolist() == [lead in ("II", "V5") for lead in CANONICAL_LEADS]
    signal, _ = wfdb.rdsamp(str(WFDB_DIR / "100"), sampto=5000)
    expected = resample_poly(signal, 25, 18, axis=0)[:5000].T  # 360 -> 500 Hz
    np.testing.assert_allclose(output["input_values"][0, [1, 10]], expected, atol=1e-4)
    assert not output["input_values"][0, ~mask].any()


@needs_data
def test_paths_and_arrays_agree(extractor):
    recording = wfdb.rdrecord(str(WFDB_DIR / "s0010_re"))
    from_array = extractor(recording.p_signal, sampling_rate=1000, lead_names=recording.sig_name)
    from_path = extractor([WFDB_DIR / "s0010_re", str(WFDB_DIR / "s0010_re")])
    assert from_path["input_values"].shape == (2, 12, 5000)
    np.testing.assert_allclose(from_path["input_values"][0], from_array["input_values"][0], atol=1e-4)


@needs_data
def test_truncated_file_raises_read_error(tmp_path, extractor):
    for source in WFDB_DIR.glob("100.*"):
        shutil.copyfile(source, tmp_path / source.name)
    (tmp_path / "100.dat").write_bytes((WFDB_DIR / "100.dat").read_bytes()[:30_000])
    with pytest.raises(CMELTReadError, match="100.dat"):
        extractor(tmp_path / "100")


def test_to_canonical_dataclass_and_identity_at_500_hz(extractor):
    signal = _synthetic()
    canonical = extractor.to_canonical(signal, 500)
    assert isinstance(canonical, CMELTCanonicalECG)
    assert canonical.values.shape == (12, 5000) and canonical.lead_mask.shape == (12,)
    assert canonical.sample_mask.shape == (5000,)
    np.testing.assert_array_equal(canonical.values, signal)


def test_orientation_inference_and_errors(extractor):
    signal = _synthetic(seconds=4)
    leads_first = extractor(signal, sampling_rate=500)["input_values"]
    np.testing.assert_array_equal(extractor(signal.T, sampling_rate=500)["input_values"], leads_first)
    square = np.zeros((12, 12), dtype=np.float32)
    with pytest.raises(ValueError, match="orientation"):
        extractor.to_canonical(np.zeros((20, 30), dtype=np.float32), 500)
    with pytest.raises(ValueError):
        extractor.to_canonical(square, 500)
    two_leads = _synthetic(channels=2, seconds=2)
    output = extractor(two_leads.T, sampling_rate=500, lead_names=["I", "V2"])
    assert output["lead_mask"][0].tolist() == [lead in ("I", "V2") for lead in CANONICAL_LEADS]
    forced = extractor(signal.T, sampling_rate=500, orientation="samples_first")["input_values"]
    np.testing.assert_array_equal(forced, leads_first)
    with pytest.raises(ValueError, match="orientation must be"):
        extractor(signal, sampling_rate=500, orientation="rows")


def test_batches_torch_and_ragged_lists(extractor):
    batch = np.stack([_synthetic(seed=seed) for seed in range(3)])
    from_numpy = extractor(batch, sampling_rate=500, return_tensors="pt")
    assert isinstance(from_numpy["input_values"], torch.Tensor) and from_numpy["input_values"].shape == (3, 12, 5000)
    from_torch = extractor(torch.from_numpy(batch).double(), sampling_rate=500)
    np.testing.assert_allclose(from_torch["input_values"], batch, atol=1e-6)
    ragged = [_synthetic(seconds=12, seed=0), _synthetic(seconds=3, seed=1)]
    output = extractor(ragged, sampling_rate=500, return_sample_mask=True)
    assert output["input_values"].shape == (2, 12, 5000)
    assert output["sample_mask"][1].sum() == 1500 and output["sample_mask"][0].all()
    one_by_one = np.stack([extractor.to_canonical(item, 500).values for item in ragged])
    np.testing.assert_array_equal(output["input_values"], one_by_one)
    nested = extractor(ragged[1].tolist(), sampling_rate=500)
    np.testing.assert_allclose(nested["input_values"][0], one_by_one[1], atol=1e-6)


def test_short_record_is_padded_on_the_right():
    extractor = CMELTFeatureExtractor(padding_value=0.0)
    canonical = extractor.to_canonical(_synthetic(seconds=4, rate=250), 250)
    assert canonical.sample_mask[:2000].all() and not canonical.sample_mask[2000:].any()
    assert not canonical.values[:, 2000:].any()


@pytest.mark.parametrize("rate, up, down", [(250, 2, 1), (360, 25, 18), (1000, 1, 2), (257, 500, 257)])
def test_resampling_matches_resample_poly(extractor, rate, up, down):
    signal = _synthetic(seconds=12, rate=rate)
    expected = resample_poly(signal, up, down, axis=1)[:, :5000]
    np.testing.assert_allclose(extractor.to_canonical(signal, rate).values, expected, atol=1e-4)


@pytest.mark.parametrize("rate", [None, 0, -500, 10, 20_000, float("nan"), "fast"])
def test_bad_sampling_rate(extractor, rate):
    with pytest.raises(ValueError, match="sampling_rate"):
        extractor(_synthetic(seconds=2), sampling_rate=rate)


@pytest.mark.parametrize(
    "signal, message",
    [
        (np.zeros((12, 0), dtype=np.float32), "non-empty"),
        (np.zeros((12, 400), dtype=np.float32), "at least 1 s"),
        (np.array([["a"] * 600] * 12), "numeric"),
        (np.ones((12, 600), dtype=bool), "numeric"),
        (np.zeros((2, 12, 600, 1), dtype=np.float32), "dims"),
    ],
)
def test_bad_arrays(extractor, signal, message):
    with pytest.raises(ValueError, match=message):
        extractor(signal, sampling_rate=500)


def test_empty_batch_and_ragged_nested_list(extractor):
    with pytest.raises(ValueError, match="empty"):
        extractor([], sampling_rate=500)
    with pytest.raises(ValueError):
        extractor([[1.0, 2.0], [1.0]], sampling_rate=500)


@pytest.mark.parametrize("channels", list(range(1, 16)))
def test_one_to_fifteen_channels(extractor, channels):
    names = (list(CANONICAL_LEADS) + ["vx", "vy", "vz"])[:channels]
    signal = _synthetic(channels=channels, seconds=2)
    output = extractor(signal, sampling_rate=500, lead_names=names)
    assert output["lead_mask"][0].sum() == min(channels, 12)
    kept = min(channels, 12)
    np.testing.assert_array_equal(output["input_values"][0, :kept, :1000], signal[:kept])
    if channels != 12:
        with pytest.raises(ValueError, match="lead_names"):
            extractor(signal, sampling_rate=500)


def test_unknown_and_duplicate_lead_names(extractor):
    signal = _synthetic(channels=3, seconds=2)
    canonical = extractor.to_canonical(signal, 500, lead_names=["foo", "avr", "AVR"])
    assert canonical.lead_mask.tolist() == [lead == "aVR" for lead in CANONICAL_LEADS]
    np.testing.assert_array_equal(canonical.values[3, :1000], signal[1])
    assert any("'foo'" in note for note in canonical.warnings)
    assert any("repeats" in note for note in canonical.warnings)
    with pytest.raises(ValueError, match="none of the lead names"):
        extractor.to_canonical(signal, 500, lead_names=["vx", "vy", "vz"])
    with pytest.raises(ValueError, match="3 lead names"):
        extractor.to_canonical(_synthetic(channels=4, seconds=2), 500, lead_names=["I", "II", "III"])


def test_short_nan_gap_is_interpolated_and_long_gap_zeroed():
    extractor = CMELTFeatureExtractor(max_gap_seconds=0.1)
    signal = _synthetic(seconds=10)
    damaged = signal.copy()
    damaged[0, 100:110] = np.nan  # 20 ms: interpolated
    damaged[1, 1000:1500] = np.inf  # 1 s: zeroed
    with pytest.warns(UserWarning, match="NaN/inf"):
        canonical = extractor.to_canonical(damaged, 500)
    expected = np.interp(np.arange(100, 110), [99, 110], signal[0, [99, 110]])
    np.testing.assert_allclose(canonical.values[0, 100:110], expected, atol=1e-6)
    assert not canonical.values[1, 1000:1500].any()
    assert canonical.lead_mask.all()
    assert np.isfinite(canonical.values).all()


@pytest.mark.parametrize("fill", ["all", "mostly"])
def test_nan_lead_is_masked_as_missing(extractor, fill):
    signal = _synthetic(seconds=10)
    if fill == "all":
        signal[4] = np.nan
    else:
        signal[4, :4000] = np.nan
    with pytest.warns(UserWarning, match="masked as missing"):
        canonical = extractor.to_canonical(signal, 1000 if fill == "all" else 500)
    assert canonical.lead_mask.tolist() == [index != 4 for index in range(12)]
    assert not canonical.values[4].any() and np.isfinite(canonical.values).all()


def test_flat_lead_is_masked(extractor):
    signal = _synthetic(seconds=10)
    signal[7] = 0.3
    with pytest.warns(UserWarning, match="flat"):
        canonical = extractor.to_canonical(signal, 500)
    assert canonical.lead_mask.tolist() == [index != 7 for index in range(12)]
    assert not canonical.values[7].any()


@pytest.mark.parametrize("units, scale, gain", [("uV", 1000.0, None), ("V", 1e-3, None), ("adc", 200.0, 200.0)])
def test_units(extractor, units, scale, gain):
    signal = _synthetic(seconds=2)
    converted = extractor.to_canonical(signal * scale, 500, units=units, adc_gain=gain).values
    np.testing.assert_allclose(converted[:, :1000], signal, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="adc_gain"):
        extractor.to_canonical(signal, 500, units="adc")
    with pytest.raises(ValueError, match="units must be"):
        extractor.to_canonical(signal, 500, units="furlong")


@pytest.mark.parametrize("normalization", ["zscore", "minmax"])
def test_normalization(normalization):
    extractor = CMELTFeatureExtractor(normalization=normalization)
    signal = _synthetic(seconds=10) * 3 + 1
    values = extractor.to_canonical(signal, 500).values
    if normalization == "zscore":
        np.testing.assert_allclose(values.mean(axis=1), 0, atol=1e-4)
        np.testing.assert_allclose(values.std(axis=1), 1, atol=1e-3)
    else:
        np.testing.assert_allclose(values.min(axis=1), -1, atol=1e-5)
        np.testing.assert_allclose(values.max(axis=1), 1, atol=1e-5)


def test_invalid_config():
    with pytest.raises(ValueError, match="normalization"):
        CMELTFeatureExtractor(normalization="l2")
    with pytest.raises(ValueError, match="length_policy"):
        CMELTFeatureExtractor(length_policy="end")


def test_save_and_auto_load_with_remote_code(tmp_path):
    from transformers import AutoFeatureExtractor

    extractor = CMELTFeatureExtractor(normalization="zscore", length_policy="center", max_gap_seconds=0.2)
    extractor.save_pretrained(tmp_path)
    assert (tmp_path / "feature_extraction_cmelt.py").is_file() and (tmp_path / "reading_cmelt.py").is_file()
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "CMELTFeatureExtractor"
    assert (loaded.normalization, loaded.length_policy, loaded.max_gap_seconds) == ("zscore", "center", 0.2)
    signal = _synthetic(seconds=12, rate=250)
    np.testing.assert_array_equal(
        loaded(signal, sampling_rate=250)["input_values"], extractor(signal, sampling_rate=250)["input_values"]
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.integers(1, 16),
    samples=st.integers(0, 3000),
    rate=st.one_of(st.none(), st.just(float("nan")), st.floats(-10, 12_000), st.sampled_from([250, 360, 500, 1000])),
    fill=st.sampled_from(["normal", "nan", "inf", "zeros", "huge", "int"]),
    transpose=st.booleans(),
    with_names=st.booleans(),
)
def test_fuzz_only_value_errors(channels, samples, rate, fill, transpose, with_names):
    rng = np.random.default_rng(channels * 7919 + samples)
    signal = rng.normal(size=(channels, samples))
    if fill == "nan":
        signal[rng.random(signal.shape) < 0.3] = np.nan
    elif fill == "inf":
        signal[:, : samples // 2] = np.inf
    elif fill == "zeros":
        signal[:] = 0
    elif fill == "huge":
        signal *= 1e30
    elif fill == "int":
        signal = (signal * 100).astype(np.int16)
    names = [CANONICAL_LEADS[index % 12] if index < 12 else "vx" for index in range(channels)] if with_names else None
    extractor = CMELTFeatureExtractor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            output = extractor(signal.T if transpose else signal, sampling_rate=rate, lead_names=names)
        except ValueError:
            return
    assert output["input_values"].shape == (1, 12, 5000)
    assert output["lead_mask"].shape == (1, 12)
    if fill != "huge":
        assert np.isfinite(output["input_values"]).all()
