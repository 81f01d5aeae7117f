"""Bad and unusual input (issue 13): each fault found by fault injection has a test here that failed before the fix.

Covered: poisoned WFDB headers (baseline outside int16, 10^12 samples, gain "."), headers without a sample count,
multi-segment records, non-round sampling rates (bounded filter), ECGs with no usable lead (all-zero, all-NaN,
flat, µV given as mV, +-3e38), bad reports / labels / descriptions / templates, `.npy` lead names that do not
match, `max_missing_fraction=1.0`, and memory-mapped `.npy` reads of long files.
"""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTModel
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.pipeline_cmelt import ZeroShotECGClassificationPipeline, label_texts_for
from modeling_cmelt.processing_cmelt import CMELTProcessor
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS, CMELTReadError, read_ecg

RATE = 500
LABELS = ["sinus rhythm", "atrial fibrillation", "myocardial infarction"]


def demo_signal(seconds=10, rate=RATE, leads=12, seed=0):
    """Smooth, ECG-sized (about 1 mV) multi-lead signal."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, size=(leads, 1))
    return (0.8 * np.sin(2 * np.pi * 1.2 * t + phases) + 0.2 * np.sin(2 * np.pi * 7 * t + phases)).astype(np.float32)


def write_wfdb(directory, name="rec", signal=None, rate=RATE):
    import wfdb

    signal = demo_signal() if signal is None else signal
    digital = np.rint(signal.T * 200).astype(np.int16)
    wfdb.wrsamp(name, fs=rate, units=["mV"] * signal.shape[0], sig_name=list(CANONICAL_LEADS[: signal.shape[0]]),
                d_signal=digital, fmt=["16"] * signal.shape[0], adc_gain=[200.0] * signal.shape[0],
                baseline=[0] * signal.shape[0], write_dir=str(directory))
    return directory / name


def edit_header(stem, edit):
    hea = stem.with_name(stem.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(edit(lines)) + "\n")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = build_tiny_t5(LABELS * 20 + ["normal ecg", "an ecg showing"], tmp_path_factory.mktemp("t5"),
                           vocab_size=120, d_model=32, d_ff=64)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def classifier(tokenizer):
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    model = CMELTModel(config).eval()
    return ZeroShotECGClassificationPipeline(model=model, tokenizer=tokenizer, feature_extractor=CMELTFeatureExtractor())


# ---------------------------------------------------------------------------------------------------------------
# item 1: poisoned headers


def test_baseline_outside_int16_is_read_not_overflowerror(tmp_path):
    stem = write_wfdb(tmp_path)
    edit_header(stem, lambda lines: [lines[0]] + [line.replace("200.0(0)/mV", "200(70000)/mV")
                                                  for line in lines[1:]])
    assert "(70000)" in stem.with_suffix(".hea").read_text()
    recording = read_ecg(stem)
    expected = (np.rint(demo_signal() * 200) - 70000) / 200
    np.testing.assert_allclose(recording.signal, expected, atol=1e-3)


def test_header_claiming_1e12_samples_is_a_read_error_without_allocating(tmp_path):
    stem = write_wfdb(tmp_path)
    edit_header(stem, lambda lines: [" ".join(lines[0].split()[:3] + ["1000000000000"])] + lines[1:])
    with pytest.raises(CMELTReadError, match="truncated"):
        read_ecg(stem)
    with pytest.raises(ValueError, match="rec"):
        CMELTFeatureExtractor()(str(stem))


# ---------------------------------------------------------------------------------------------------------------
# item 7: valid records that were rejected


def test_header_without_sample_count_is_read(tmp_path):
    stem = write_wfdb(tmp_path)
    reference = CMELTFeatureExtractor()(str(stem))["input_values"]
    edit_header(stem, lambda lines: [" ".join(lines[0].split()[:3])] + lines[1:])
    assert len(stem.with_suffix(".hea").read_text().splitlines()[0].split()) == 3
    assert read_ecg(stem).signal.shape == (12, 5000)
    np.testing.assert_array_equal(CMELTFeatureExtractor()(str(stem))["input_values"], reference)


def test_multi_segment_record_goes_through_the_feature_extractor(tmp_path):
    signal = demo_signal(seconds=12)
    write_wfdb(tmp_path, "seg1", signal[:, :3000])
    write_wfdb(tmp_path, "seg2", signal[:, 3000:])
    (tmp_path / "multi.hea").write_text(f"multi/2 12 {RATE} 6000\nseg1 3000\nseg2 3000\n")
    assert read_ecg(tmp_path / "multi").signal.shape == (12, 6000)
    features = CMELTFeatureExtractor()(str(tmp_path / "multi"))
    expected = np.rint(signal[:, :5000] * 200) / 200
    np.testing.assert_allclose(features["input_values"][0], expected, atol=1e-5)
    assert features["lead_mask"].all()


# ---------------------------------------------------------------------------------------------------------------
# item 6: non-round sampling rates


@pytest.mark.parametrize("rate, round_rate", [(999.999, 1000), (9999.999, 10000), (250.0001, 250), (359.99999, 360)])
def test_non_round_rate_costs_what_its_round_rate_costs(rate, round_rate):
    extractor = CMELTFeatureExtractor()
    plan, round_plan = extractor._plan(int(10 * rate), rate), extractor._plan(int(10 * round_rate), round_rate)
    assert (plan.up, plan.down) == (round_plan.up, round_plan.down)
    assert max(plan.up, plan.down) <= 25


def test_resampling_factors_are_bounded_and_accurate():
    from modeling_cmelt.feature_extraction_cmelt import RESAMPLE_RATIO_TOLERANCE, resampling_factors

    assert resampling_factors(360, 500) == (25, 18) and resampling_factors(257, 500) == (500, 257)
    assert resampling_factors(500, 500) == (1, 1) and resampling_factors(128.5, 500) == (1000, 257)
    rng = np.random.default_rng(0)
    for rate in np.concatenate([rng.uniform(50, 10_000, 300), [math.pi * 100, 500.05, 50.0001, 9999.9999]]):
        up, down = resampling_factors(float(rate), 500)
        assert abs((up / down) / (500 / rate) - 1) <= RESAMPLE_RATIO_TOLERANCE, rate
        # filter length grows with max(up, down): bounded by the approximation's denominator limit
        assert max(up, down) <= 20 / RESAMPLE_RATIO_TOLERANCE, rate


def test_non_round_rate_output_matches_the_round_rate():
    signal = demo_signal(seconds=10, rate=1000)
    extractor = CMELTFeatureExtractor()
    exact = extractor(signal, sampling_rate=1000)["input_values"]
    approximated = extractor(signal, sampling_rate=999.999)["input_values"]
    np.testing.assert_allclose(approximated, exact, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# item 8: no usable lead -> ValueError, never a score


@pytest.mark.parametrize(
    "name, make",
    [
        ("all-zero", lambda: np.zeros((12, 5000), np.float32)),
        ("all-NaN", lambda: np.full((12, 5000), np.nan, np.float32)),
        ("flat", lambda: np.full((12, 5000), 0.3, np.float32)),
        ("µV as mV", lambda: demo_signal() * 1000),
        ("+-3e38", lambda: np.where(demo_signal() > 0, 3e38, -3e38).astype(np.float32)),
        ("mV as µV", lambda: demo_signal() * 1e-3),
    ],
)
def test_ecg_without_usable_lead_raises_instead_of_scoring(classifier, name, make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no usable lead"):
            classifier(make(), sampling_rate=RATE, candidate_labels=LABELS)


def test_one_implausible_lead_is_masked_and_the_rest_scored(classifier):
    signal = demo_signal()
    signal[3] = 3e38
    with pytest.warns(UserWarning, match="max_amplitude_mv"):
        result = classifier(signal, sampling_rate=RATE, candidate_labels=LABELS)
    assert all(math.isfinite(entry["score"]) for entry in result)
    features = CMELTFeatureExtractor()(signal, sampling_rate=RATE)
    assert not features["lead_mask"][0, 3] and features["lead_mask"][0].sum() == 11
    assert np.isfinite(features["input_values"]).all()


def test_batch_with_one_unusable_record_names_it(classifier):
    batch = np.stack([demo_signal(), np.zeros((12, 5000), np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="record 1: no usable lead"):
            classifier(batch, sampling_rate=RATE, candidate_labels=LABELS)


# ---------------------------------------------------------------------------------------------------------------
# item 9: unclear exceptions become ValueErrors naming the argument


@pytest.mark.parametrize("text", [float("nan"), 3, [], b"sinus rhythm", [None], ["ok", 2]])
def test_bad_report_text_is_a_valueerror_naming_text(tokenizer, text):
    processor = CMELTProcessor(CMELTFeatureExtractor(), tokenizer)
    with pytest.raises(ValueError, match="text"):
        processor(text=text)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"candidate_labels": [None]}, "candidate_labels"),
        ({"candidate_labels": ["a", ""]}, "candidate_labels"),
        ({"candidate_labels": ["a"], "descriptions": {"a": None}}, "descriptions"),
        ({"candidate_labels": ["a"], "descriptions": {"a": [None]}}, "descriptions"),
        ({"candidate_labels": ["a"], "hypothesis_template": "{}{}"}, "hypothesis_template"),
        ({"candidate_labels": ["a"], "hypothesis_template": "{x}"}, "hypothesis_template"),
        ({"candidate_labels": ["a"], "hypothesis_template": "no field"}, "hypothesis_template"),
        ({"candidate_labels": ["a"], "hypothesis_template": "{0}{"}, "hypothesis_template"),
    ],
)
def test_bad_label_arguments_are_valueerrors(classifier, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classifier(demo_signal(), sampling_rate=RATE, **kwargs)


def test_label_texts_for_rejects_a_none_description():
    with pytest.raises(ValueError, match="description"):
        label_texts_for(["a"], descriptions={"a": None})


@pytest.mark.parametrize("names", [["I", "II"], list(CANONICAL_LEADS) + ["V7"]])
def test_npy_lead_names_must_match_the_channels(tmp_path, names):
    path = tmp_path / "ecg.npy"
    np.save(path, demo_signal())
    with pytest.raises(ValueError, match="lead names"):
        read_ecg(path, sampling_rate=RATE, lead_names=names)
    with pytest.raises(ValueError, match="lead names"):
        CMELTFeatureExtractor()(str(path), sampling_rate=RATE, lead_names=names)


def test_unparsable_gain_names_the_file(tmp_path):
    stem = write_wfdb(tmp_path)
    edit_header(stem, lambda lines: [lines[0]] + [line.replace("200.0(0)/mV", "./mV")
                                                  for line in lines[1:]])
    with pytest.raises(CMELTReadError, match=r"rec\.hea.*gain"):
        read_ecg(stem)


def test_max_missing_fraction_one_is_a_clear_valueerror():
    with pytest.raises(ValueError, match="max_missing_fraction"):
        CMELTFeatureExtractor(max_missing_fraction=1.0)


def test_lead_with_no_finite_sample_is_masked():
    signal = demo_signal()
    signal[2] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        features = CMELTFeatureExtractor(max_missing_fraction=0.99)(signal, sampling_rate=RATE)
    assert not features["lead_mask"][0, 2] and features["lead_mask"][0].sum() == 11


# ---------------------------------------------------------------------------------------------------------------
# item 10: long .npy files are memory-mapped, only the kept window is read


def test_long_npy_reads_only_the_kept_window(tmp_path):
    path = tmp_path / "holter.npy"
    samples = 500 * 60 * 30  # 30 min at 500 Hz: 43 MB as float32
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(12, samples))
    array[:, :6000] = demo_signal(seconds=12)
    array.flush()
    del array
    extractor = CMELTFeatureExtractor()
    tracemalloc.start()
    try:
        window = read_ecg(path, sampling_rate=RATE, sample_range=(100, 5100))
        features = extractor(str(path), sampling_rate=RATE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.signal.shape == (12, 5000) and window.num_samples_on_disk == samples
    np.testing.assert_array_equal(window.signal, demo_signal(seconds=12)[:, 100:5100])
    np.testing.assert_array_equal(features["input_values"][0], demo_signal(seconds=12)[:, :5000])
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 43 MB file"
