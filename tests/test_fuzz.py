"""Property-based fuzzing (hypothesis) of everything that takes user input: the feature extractor on arrays, the
readers on generated WFDB headers + signal files, the processor's text, and the zero-shot pipeline with a tiny model.

Each case may only end in a `ValueError` (subclasses included: `CMELTReadError`, `CMELTNoUsableLeadError`) or in a
valid result: finite values and at least one unmasked lead (finite scores in [0, 1] for every candidate label for
the pipeline). Any other exception is a crash, any invalid result a silent output; both fail the test, which runs
every case first and then reports the counts (`pytest -s tests/test_fuzz.py` prints them). Budget: well under a
minute on one CPU core (`max_examples` below, `deadline=None`).
"""

import math
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTModel
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.pipeline_cmelt import ZeroShotECGClassificationPipeline
from modeling_cmelt.processing_cmelt import CMELTProcessor
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS, read_ecg

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LEAD_NAMES = list(CANONICAL_LEADS) + ["MLII", "avr", "DIII", "vx", "ECG", "", "lead I", "V7", "II"]
RATES = [0, -5.0, math.nan, math.inf, 49.9, 50, 100, 257, 360, 400, 499.99, 500, 999.999, 1000, 9999.999, 10_000, 10_001]
LABELS = ["sinus rhythm", "atrial fibrillation", "myocardial infarction", "normal ecg"]


class Tally:
    """Outcome counts of one fuzz target: ValueError, valid result, crash (other exception), silent bad output."""

    def __init__(self, name):
        self.name = name
        self.counts = defaultdict(int)
        self.crashes, self.silent = [], []

    def run(self, call, check, case):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = call()
            except ValueError:
                self.counts["ValueError"] += 1
                return
            except Exception as error:  # noqa: BLE001 - a crash is what is being counted
                self.crashes.append(f"{type(error).__name__}: {str(error)[:150]} <- {case}")
                return
        problem = check(result)
        if problem:
            self.silent.append(f"{problem} <- {case}")
        else:
            self.counts["valid"] += 1

    def assert_clean(self):
        cases = sum(self.counts.values()) + len(self.crashes) + len(self.silent)
        print(f"\nfuzz {self.name}: {cases} cases, {self.counts['ValueError']} ValueError, {self.counts['valid']} valid, "
              f"{len(self.crashes)} crashes, {len(self.silent)} silent outputs")
        for line in (self.crashes + self.silent)[:10]:
            print("   ", line[:300])
        assert not self.crashes and not self.silent, (self.crashes + self.silent)[:5]


def check_features(output):
    values, mask = np.asarray(output["input_values"]), np.asarray(output["lead_mask"])
    if not np.isfinite(values).all():
        return "non-finite input_values"
    if not mask.any(axis=-1).all():
        return "a record with no unmasked lead"
    if values.shape[-2:] != (12, 5000):
        return f"shape {values.shape}"
    return None


def mostly(valid, *others):
    """`valid` three times out of four, else one of `others` (keeps a good share of cases valid)."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), st.sampled_from(others))


def plausible_signal(draw, rng):
    """A legal recording: any rate in range, 1.5-12 s, some NaN gaps or one bad lead, any lead subset or order."""
    rate = draw(st.one_of(st.floats(50, 10_000), st.sampled_from([250, 257, 360, 500, 999.999, 1000])))
    samples = int(draw(st.sampled_from([1.5, 4, 10, 12])) * rate)
    names = draw(st.one_of(st.none(), st.permutations(CANONICAL_LEADS).map(lambda p: list(p)[: 1 + len(p) // 2]),
                           st.just(["MLII", "V1"]), st.just(["DI", "DII", "DIII", "vx"])))
    channels = 12 if names is None else len(names)
    t = np.arange(samples) / rate
    array = (np.sin(2 * np.pi * 1.1 * t) + rng.normal(0, 0.1, (channels, samples))).astype(np.float32)
    detail = draw(st.sampled_from(["none", "gaps", "bad_lead", "int16_adc", "uv"]))
    units, adc_gain = "mV", None
    if detail == "gaps":
        array[:, rng.integers(0, samples, 20)] = np.nan
    elif detail == "bad_lead" and channels > 1:
        array[0] = 3e38
    elif detail == "int16_adc":
        array, units, adc_gain = (array * 200).astype(np.int16), "adc", 200.0
    elif detail == "uv":
        array, units = array * 1000, "uV"
    return array, dict(sampling_rate=rate, lead_names=names, units=units, adc_gain=adc_gain, orientation=None)


@st.composite
def signals(draw):
    """Arrays of 1-3 dims with NaN / inf / huge / flat / integer content, and the arguments that go with them."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # half the cases are plausible recordings with odd but legal details
        return plausible_signal(draw, rng)
    ndim = draw(mostly(2, 1, 3))
    leads = draw(mostly(12, 1, 2, 3, 8, 13, 14))
    rate = draw(st.one_of(st.sampled_from(RATES), st.floats(50, 10_000), st.just(500.0)))
    seconds = draw(st.sampled_from([0, 0.5, 1.5, 4, 10, 12]))
    samples = int(seconds * rate) if 0 < rate < 20_000 else draw(st.sampled_from([0, 100, 2000]))
    shape = {1: (samples,), 2: (leads, samples), 3: (draw(st.integers(1, 3)), leads, samples)}[ndim]
    content = draw(mostly("ecg", "zeros", "constant", "nan", "inf", "huge", "uv", "sparse_nan", "int16", "one_bad_lead"))
    t = np.arange(samples) / (rate if 0 < rate < math.inf else 500)
    array = (np.sin(2 * np.pi * 1.1 * t) + rng.normal(0, 0.1, shape)).astype(np.float32)
    if content == "zeros":
        array[:] = 0
    elif content == "constant":
        array[:] = 0.7
    elif content == "nan":
        array[:] = np.nan
    elif content == "inf":
        array[rng.random(shape) < 0.3] = np.inf
    elif content == "huge":
        array[rng.random(shape) < 0.5] = 3e38
    elif content == "uv":
        array *= 1000
    elif content == "sparse_nan":
        array[rng.random(shape) < 0.05] = np.nan
    elif content == "int16":
        array = (array * 200).astype(np.int16)
    elif content == "one_bad_lead" and array.ndim >= 2:
        array[..., 0, :] = np.nan
    if array.ndim >= 2 and draw(mostly(False, True)):
        array = np.swapaxes(array, -1, -2)
    channels = 1 if ndim == 1 else leads
    names = draw(st.one_of(
        st.just(None if channels == 12 else list(CANONICAL_LEADS[:channels]) if channels < 12 else
                list(CANONICAL_LEADS) + ["vx", "vy", "vz"][: channels - 12]),
        st.none(), st.lists(st.sampled_from(LEAD_NAMES), min_size=channels, max_size=channels),
        st.lists(st.sampled_from(LEAD_NAMES), min_size=0, max_size=15),
    ))
    units = draw(mostly("mV", "uV", "V", "adc", "furlongs"))
    adc_gain = draw(mostly(200.0, None, 0.0, -1.0))
    orientation = draw(mostly(None, "leads_first", "samples_first", "sideways"))
    return array, dict(sampling_rate=rate, lead_names=names, units=units, adc_gain=adc_gain, orientation=orientation)


def test_fuzz_feature_extractor_arrays():
    extractor = CMELTFeatureExtractor()
    tally = Tally("feature extractor (arrays)")

    @settings(FUZZ, max_examples=200)
    @given(signals())
    def fuzz(case):
        array, kwargs = case
        tally.run(lambda: extractor(array, **kwargs), check_features, f"{array.shape} {array.dtype} {kwargs}")

    fuzz()
    tally.assert_clean()


@st.composite
def wfdb_records(draw):
    """A WFDB header (valid, odd or broken fields) and a signal file of ECG-like or random bytes."""
    num_signals = draw(mostly(12, 0, 1, 2, 3))
    announced = draw(mostly(num_signals, num_signals + 1, max(num_signals - 1, 0)))
    rate = draw(mostly("500", "360", "999.999", "0", "-1", "abc", "500/1", "1e400", "nan", "250(0)"))
    samples = draw(mostly("5000", "6000", "", "0", "-3", "1000000000000", "x", "100"))
    record_line = " ".join(part for part in ("rec", str(announced), rate, samples) if part)
    fmt = draw(mostly("16", "61", "80", "32", "212", "8", "999", "abc", "16+4", "16x2", "16:3"))
    lines = [record_line]
    for index in range(num_signals):
        gain = draw(mostly("200(0)/mV", "200", ".", "0", "-5", "1e-40", "1e40", "nan", "200(70000)/mV", "200/uV",
                           "200/µV", "200/V", "1000(-32768)/mV", "inf", "200/mmHg"))
        name = CANONICAL_LEADS[index % 12] if draw(mostly(True, False)) else draw(st.sampled_from(LEAD_NAMES))
        lines.append(f"rec.dat {fmt} {gain} 16 0 0 0 0 {name}".rstrip())
    if draw(st.booleans()):
        lines.append("# Age: 54")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    content = draw(mostly("ecg", "random", "zeros", "short", "empty"))
    frames = 6000 * max(num_signals, 1)
    if content == "ecg":
        t = np.arange(6000) / 500
        wave = np.sin(2 * np.pi * 1.1 * t)[:, None] * 200 + rng.normal(0, 10, (6000, max(num_signals, 1)))
        payload = np.rint(wave).astype("<i2").tobytes()
    elif content == "random":
        payload = rng.integers(0, 256, 2 * frames, dtype=np.uint8).tobytes()
    elif content == "zeros":
        payload = bytes(2 * frames)
    elif content == "short":
        payload = rng.integers(0, 256, 777, dtype=np.uint8).tobytes()
    else:
        payload = b""
    return "\n".join(lines) + "\n", payload


def test_fuzz_readers_on_generated_wfdb_files(tmp_path_factory):
    extractor = CMELTFeatureExtractor()
    readers, features = Tally("read_ecg (WFDB)"), Tally("feature extractor (WFDB files)")

    def check_recording(recording):
        signal = recording.signal
        if signal.ndim != 2 or signal.dtype != np.float32 or len(recording.lead_names) != signal.shape[0]:
            return f"bad recording {signal.shape} {signal.dtype} {len(recording.lead_names)} names"
        if np.isinf(signal).any():
            return "infinite samples"  # NaN marks a missing sample (documented); inf is never a reading
        if not 0 < recording.sampling_rate < math.inf:
            return f"sampling rate {recording.sampling_rate}"
        return None

    @settings(FUZZ, max_examples=150)
    @given(wfdb_records())
    def fuzz(case):
        header, payload = case
        folder = tmp_path_factory.mktemp("wfdb")
        (folder / "rec.hea").write_text(header, encoding="latin-1")
        (folder / "rec.dat").write_bytes(payload)
        readers.run(lambda: read_ecg(folder / "rec"), check_recording, repr(header))
        features.run(lambda: extractor(str(folder / "rec")), check_features, repr(header))

    fuzz()
    readers.assert_clean()
    features.assert_clean()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = build_tiny_t5(LABELS * 20, tmp_path_factory.mktemp("t5"), vocab_size=80, d_model=32, d_ff=64)
    return AutoTokenizer.from_pretrained(folder)


TEXTS = st.one_of(
    st.text(max_size=40), st.lists(st.text(max_size=20), max_size=4), st.integers(), st.floats(allow_nan=True),
    st.none(), st.binary(max_size=10), st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3),
    st.just([]), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def test_fuzz_processor_text(tokenizer):
    processor = CMELTProcessor(CMELTFeatureExtractor(), tokenizer)
    tally = Tally("processor (text)")

    def check(output):
        ids = output["input_ids"]
        return None if ids.ndim == 2 and ids.shape[0] >= 1 else f"input_ids of shape {tuple(ids.shape)}"

    @settings(FUZZ, max_examples=120)
    @given(TEXTS)
    def fuzz(text):
        tally.run(lambda: processor(text=text), check, repr(text)[:100])

    fuzz()
    tally.assert_clean()


def test_fuzz_pipeline_with_a_tiny_model(tokenizer):
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    classifier = ZeroShotECGClassificationPipeline(
        model=CMELTModel(config).eval(), tokenizer=tokenizer, feature_extractor=CMELTFeatureExtractor()
    )
    tally = Tally("pipeline")
    valid_labels = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4, unique=True)
    label_strategy = st.one_of(
        valid_labels, valid_labels, valid_labels, valid_labels,
        st.sampled_from([[None], [], "sinus rhythm, normal ecg", 7, ["a", "a"]]), st.lists(st.text(max_size=8), max_size=3),
    )
    templates = mostly(None, "{}", "an ecg showing {}", "{}{}", "{x}", "{0}", "{", "no field", "{!r}", "{:d}")
    descriptions = mostly(None, {"sinus rhythm": None}, {"sinus rhythm": ["regular", None]},
                          {"sinus rhythm": "regular rhythm"}, {None: "x"}, ["x"], {"normal ecg": []})

    def check(result, labels):
        if not isinstance(result, list) or not result:
            return f"result {result!r:.80}"
        rows = result if isinstance(result[0], list) else [result]
        for row in rows:
            scores = [entry["score"] for entry in row]
            if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
                return f"scores {scores}"
            if labels is not None and isinstance(labels, list) and {e["label"] for e in row} != set(labels):
                return "labels do not match the candidates"
        return None

    @settings(FUZZ, max_examples=60)
    @given(signals(), label_strategy, templates, descriptions)
    def fuzz(case, labels, template, texts):
        array, kwargs = case
        kwargs = {key: kwargs[key] for key in ("sampling_rate", "lead_names")}
        extra = {k: v for k, v in (("hypothesis_template", template), ("descriptions", texts)) if v is not None}
        tally.run(lambda: classifier(array, candidate_labels=labels, **kwargs, **extra),
                  lambda result: check(result, labels), f"{array.shape} {kwargs} {labels!r} {extra}")

    fuzz()
    tally.assert_clean()
