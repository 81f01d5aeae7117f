"""The demo corpus: exact lead identities, determinism, and every finding measurable in the signal it labels."""

import re

import numpy as np
import pytest
from scipy.signal import butter, find_peaks, sosfiltfilt

from cmelt.data.synthetic import DEMO_LABEL_PROMPTS, DEMO_LABELS, DEMO_LEAD_NAMES, NORMAL_REPORT, generate_demo_ecgs

FS = 500
LEAD = {name: index for index, name in enumerate(DEMO_LEAD_NAMES)}


@pytest.fixture(scope="module")
def corpus():
    return generate_demo_ecgs(1200, seed=11)


def has(batch, label):
    return batch.labels[:, DEMO_LABELS.index(label)]


QRS_BAND = butter(2, [5, 30], btype="bandpass", fs=FS, output="sos")


def beats(signal):
    """QRS positions from the spatial velocity (sum over leads of the squared first difference, 8-30 Hz band)."""
    energy = (np.diff(sosfiltfilt(QRS_BAND, signal, axis=1), axis=1) ** 2).sum(axis=0)
    energy = np.convolve(energy, np.ones(10) / 10, mode="same")
    peaks, _ = find_peaks(energy, height=0.15 * np.percentile(energy, 99.5), distance=int(0.25 * FS))
    return peaks


def mean_beat(signal, peaks, before=0.45, after=0.45):
    kept = [p for p in peaks if p - before * FS >= 0 and p + after * FS < signal.shape[1]]
    return np.mean([signal[:, p - int(before * FS) : p + int(after * FS)] for p in kept], axis=0), int(before * FS)


def heart_rate(signal):
    return 60.0 * FS / np.median(np.diff(beats(signal)))


def rr_variation(signal):
    intervals = np.diff(beats(signal))
    return intervals.std() / intervals.mean()


def qrs_width(signal):
    beat, zero = mean_beat(signal, beats(signal))
    energy = (np.diff(beat, axis=1) ** 2).sum(axis=0)
    window = energy[zero - int(0.15 * FS) : zero + int(0.2 * FS)]
    return (window > 0.05 * window.max()).sum() / FS


def st_deviation(signal):
    """Per lead: ST level 80-90 ms after the QRS peak (J + 20-60 ms) minus the PR-segment level (mean beat)."""
    beat, zero = mean_beat(signal, beats(signal))
    baseline = beat[:, zero - int(0.07 * FS) : zero - int(0.05 * FS)].mean(axis=1)
    return beat[:, zero + int(0.08 * FS) : zero + int(0.09 * FS)].mean(axis=1) - baseline


def pick(batch, include, exclude=(), limit=60):
    mask = has(batch, include)
    for label in exclude:
        mask &= ~has(batch, label)
    return np.flatnonzero(mask)[:limit]


def test_shapes_dtypes_and_exact_lead_identities(corpus):
    assert corpus.signals.shape == (1200, 12, 5000) and corpus.signals.dtype == np.float32
    assert corpus.labels.shape == (1200, len(DEMO_LABELS)) and corpus.labels.dtype == bool
    assert len(corpus.reports) == len(corpus.subject_ids) == len(corpus.study_ids) == 1200
    lead_i, lead_ii = corpus.signals[:, LEAD["I"]], corpus.signals[:, LEAD["II"]]
    np.testing.assert_array_equal(corpus.signals[:, LEAD["III"]], lead_ii - lead_i)
    np.testing.assert_array_equal(corpus.signals[:, LEAD["aVR"]], -(lead_i + lead_ii) / 2)
    np.testing.assert_array_equal(corpus.signals[:, LEAD["aVL"]], lead_i - lead_ii / 2)
    np.testing.assert_array_equal(corpus.signals[:, LEAD["aVF"]], lead_ii - lead_i / 2)
    assert np.isfinite(corpus.signals).all()
    assert 0.15 < np.abs(corpus.signals).max(axis=(1, 2)).min() and np.abs(corpus.signals).max() < 10.0  # mV range


def test_deterministic_by_seed_and_prefix_stable():
    first, again = generate_demo_ecgs(20, seed=3), generate_demo_ecgs(20, seed=3)
    np.testing.assert_array_equal(first.signals, again.signals)
    assert first.reports == again.reports
    prefix = generate_demo_ecgs(7, seed=3)
    np.testing.assert_array_equal(prefix.signals, first.signals[:7])
    np.testing.assert_array_equal(prefix.study_ids, first.study_ids[:7])
    other = generate_demo_ecgs(20, seed=4)
    assert not np.allclose(other.signals, first.signals)


def test_subjects_have_several_records_and_unique_studies(corpus):
    assert len(np.unique(corpus.study_ids)) == len(corpus)
    counts = np.unique(corpus.subject_ids, return_counts=True)[1]
    assert counts.max() > 1 and counts.min() == 1 and len(counts) < len(corpus)
    assert all(len(str(value)) == 8 for value in corpus.subject_ids[:50])


def test_every_label_is_frequent_and_normal_reports_are_identical(corpus):
    prevalence = corpus.labels.mean(axis=0)
    assert (prevalence > 0.03).all(), dict(zip(DEMO_LABELS, prevalence))
    normal = has(corpus, "NORM")
    assert 0.18 <= normal.mean() <= 0.28
    assert all(corpus.reports[i] == list(NORMAL_REPORT) for i in np.flatnonzero(normal))
    assert not any(corpus.reports[i] == list(NORMAL_REPORT) for i in np.flatnonzero(~normal))
    assert (corpus.labels[normal].sum(axis=1) == 1).all()
    assert (corpus.labels[~normal].sum(axis=1) >= 1).all()
    assert (corpus.labels.sum(axis=1) > 2).mean() > 0.05  # multi-label records exist
    rhythms = corpus.labels[:, [DEMO_LABELS.index(code) for code in ("SBRAD", "STACH", "AFIB", "AFLT")]]
    assert (rhythms.sum(axis=1) <= 1).all()
    assert not (has(corpus, "LBBB") & has(corpus, "RBBB")).any()


REPORT_PATTERNS = {
    "SBRAD": r"bradycardia", "STACH": r"tachycardia", "AFIB": r"atrial fibrillation", "AFLT": r"atrial flutter",
    "1AVB": r"1st degree|first degree|prolonged pr", "LBBB": r"left bundle|lbbb", "RBBB": r"right bundle|rbbb",
    "LAD": r"left axis|leftward axis|left anterior fascicular", "STE": r"st elevation|stemi|acute \w+ infarct",
    "STD": r"st depression|st segment depression", "INVT": r"t wave inversion|inverted t",
    "LVOLT": r"low qrs volt|low voltage", "PVC": r"pvc|ventricular premature|premature ventricular|bigeminy",
    "NORM": r"^normal ecg$",
}


def test_reports_state_exactly_the_labels(corpus):
    for index in range(len(corpus)):
        statements = [statement.lower() for statement in corpus.reports[index]]
        found = {label for label, pattern in REPORT_PATTERNS.items() if any(re.search(pattern, s) for s in statements)}
        expected = {label for label, present in zip(DEMO_LABELS, corpus.labels[index]) if present}
        assert found == expected, (corpus.reports[index], expected)
        summary = statements[-1]
        assert summary in ("normal ecg", "abnormal ecg", "borderline ecg", "normal ecg except for rate")


def test_prompts_cover_every_label_with_report_phrasings(corpus):
    assert set(DEMO_LABEL_PROMPTS) == set(DEMO_LABELS)
    all_statements = {statement for report in corpus.reports for statement in report}
    all_reports = {". ".join(report) for report in corpus.reports}
    for label, prompts in DEMO_LABEL_PROMPTS.items():
        assert len(prompts) >= 2 and all(isinstance(p, str) and p for p in prompts)
        assert label in prompts[0]  # the clinical description names the code
        assert any(p in all_statements or p in all_reports for p in prompts[1:]), label


def test_heart_rates_of_brady_and_tachycardia(corpus):
    brady = [heart_rate(corpus.signals[i]) for i in pick(corpus, "SBRAD", exclude=("PVC",))]
    tachy = [heart_rate(corpus.signals[i]) for i in pick(corpus, "STACH", exclude=("PVC",))]
    normal = [heart_rate(corpus.signals[i]) for i in pick(corpus, "NORM")]
    assert np.mean(np.array(brady) < 60) > 0.95
    assert np.mean(np.array(tachy) > 100) > 0.95
    assert np.mean((np.array(normal) >= 57) & (np.array(normal) <= 100)) > 0.95


def test_atrial_fibrillation_is_irregular(corpus):
    fibrillation = np.array([rr_variation(corpus.signals[i]) for i in pick(corpus, "AFIB", exclude=("PVC",))])
    normal = np.array([rr_variation(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.median(fibrillation) > 3 * np.median(normal)
    assert np.mean(fibrillation > 0.08) > 0.85 and np.mean(normal < 0.06) > 0.9


def test_premature_ventricular_complexes_come_early(corpus):
    def shortest_ratio(signal):
        intervals = np.diff(beats(signal))
        return intervals.min() / np.median(intervals)

    pvc = np.array([shortest_ratio(corpus.signals[i]) for i in pick(corpus, "PVC", exclude=("AFIB", "AFLT"))])
    normal = np.array([shortest_ratio(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.mean(pvc < 0.75) > 0.85 and np.mean(normal > 0.85) > 0.9


def test_first_degree_av_block_has_a_long_pr_interval():
    batch = generate_demo_ecgs(1500, seed=5, noise_level=0.3)
    slow = np.array([m["rr_interval"] > 850 for m in batch.measurements])

    def p_wave_lead_time(signal):
        beat, zero = mean_beat(signal, beats(signal))
        window = np.abs(beat[LEAD["II"], zero - int(0.4 * FS) : zero - int(0.06 * FS)])
        return 0.4 - np.argmax(window) / FS

    block = [p_wave_lead_time(batch.signals[i]) for i in np.flatnonzero(has(batch, "1AVB") & slow & ~has(batch, "PVC"))]
    normal = [p_wave_lead_time(batch.signals[i]) for i in np.flatnonzero(has(batch, "NORM") & slow)[:60]]
    assert len(block) >= 10
    assert np.median(block) > np.median(normal) + 0.06
    assert np.mean(np.array(block) > 0.19) > 0.8 and np.mean(np.array(normal) < 0.19) > 0.8


def test_bundle_branch_blocks_widen_qrs_with_their_v1_morphology(corpus):
    normal = np.array([qrs_width(corpus.signals[i]) for i in pick(corpus, "NORM")])
    left = pick(corpus, "LBBB", exclude=("PVC",))
    right = pick(corpus, "RBBB", exclude=("PVC",))
    assert np.median([qrs_width(corpus.signals[i]) for i in left]) > np.median(normal) + 0.03
    assert np.median([qrs_width(corpus.signals[i]) for i in right]) > np.median(normal) + 0.025

    def v1_qrs(signal):  # V1 around the QRS: R' (late positive wave) in RBBB, a negative QS / rS complex in LBBB
        beat, zero = mean_beat(signal, beats(signal))
        baseline = beat[LEAD["V1"], zero - int(0.12 * FS) : zero - int(0.1 * FS)].mean()
        return beat[LEAD["V1"], zero - int(0.06 * FS) : zero + int(0.08 * FS)] - baseline

    assert np.mean([v1_qrs(corpus.signals[i])[int(0.06 * FS) :].max() > 0.15 for i in right]) > 0.8
    assert np.mean([v1_qrs(corpus.signals[i]).mean() < -0.1 for i in left]) > 0.8  # net negative QRS


def test_st_elevation_and_depression(corpus):
    plain = ("LBBB", "RBBB", "PVC")
    elevated = np.array([st_deviation(corpus.signals[i]).max() for i in pick(corpus, "STE", exclude=plain)])
    depressed = np.array([st_deviation(corpus.signals[i])[[0, 1, 9, 10, 11]].min() for i in pick(corpus, "STD", exclude=plain)])
    normal = np.array([st_deviation(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.mean(elevated > 0.2) > 0.85 and np.mean(normal.max(axis=1) < 0.2) > 0.9
    assert np.mean(depressed < -0.07) > 0.8 and np.mean(normal[:, [0, 1, 9, 10, 11]].min(axis=1) > -0.07) > 0.9


def test_t_wave_inversion(corpus):
    def most_negative_t(signal):
        beat, zero = mean_beat(signal, beats(signal), after=0.5)
        leads = [LEAD[name] for name in ("I", "II", "aVF", "V2", "V3", "V4", "V5", "V6")]
        return beat[leads, zero + int(0.15 * FS) : zero + int(0.35 * FS)].min(axis=1).min()

    inverted = np.array([most_negative_t(corpus.signals[i]) for i in pick(corpus, "INVT", exclude=("LBBB", "RBBB", "PVC"))])
    normal = np.array([most_negative_t(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.mean(inverted < -0.12) > 0.8 and np.mean(normal > -0.12) > 0.9


def test_left_axis_deviation_and_low_voltage(corpus):
    def axis_and_limb_amplitude(signal):
        beat, zero = mean_beat(signal, beats(signal))
        qrs = beat[:6, zero - int(0.06 * FS) : zero + int(0.08 * FS)]
        qrs = qrs - beat[:6, zero - int(0.07 * FS) : zero - int(0.05 * FS)].mean(axis=1, keepdims=True)
        axis = np.degrees(np.arctan2(qrs[LEAD["aVF"]].sum(), qrs[LEAD["I"]].sum()))
        return axis, np.ptp(qrs, axis=1).max()

    conduction = ("LBBB", "RBBB", "PVC")
    left = np.array([axis_and_limb_amplitude(corpus.signals[i])[0] for i in pick(corpus, "LAD", exclude=conduction)])
    normal = np.array([axis_and_limb_amplitude(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.mean(left < -30) > 0.85 and np.mean((normal[:, 0] > -30) & (normal[:, 0] < 100)) > 0.9
    low = np.array([axis_and_limb_amplitude(corpus.signals[i])[1] for i in pick(corpus, "LVOLT", exclude=conduction)])
    assert np.mean(low < 0.5) > 0.85 and np.mean(normal[:, 1] > 0.5) > 0.9


def test_flutter_waves_replace_p_waves(corpus):
    """F waves are locked to the conducted beats, so they survive beat averaging: the mean beat's TP segment in II
    swings far more than a P wave does; AF's unlocked f waves average out (and there are no P waves either)."""

    def tp_swing(signal):
        beat, zero = mean_beat(signal, beats(signal))
        return np.ptp(beat[LEAD["II"], zero - int(0.2 * FS) : zero - int(0.04 * FS)])

    flutter = np.array([tp_swing(corpus.signals[i]) for i in pick(corpus, "AFLT", exclude=("PVC",))])
    fibrillation = np.array([tp_swing(corpus.signals[i]) for i in pick(corpus, "AFIB", exclude=("PVC",))])
    normal = np.array([tp_swing(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.mean(flutter > 0.3) > 0.8 and np.mean(normal < 0.3) > 0.9
    assert np.median(fibrillation) < np.median(normal)


# ---------------------------------------------------------------------------------------------------------------
# variation that carries no finding (issue 16): the findings are the only consistent signal


def test_sinus_rhythm_varies_beat_to_beat_but_stays_regular(corpus):
    normal = np.array([rr_variation(corpus.signals[i]) for i in pick(corpus, "NORM")])
    assert np.median(normal) > 0.008  # respiratory sinus arrhythmia, Mayer waves, jitter: never a metronome
    assert np.mean(normal < 0.06) > 0.9


def test_qt_follows_the_rate():
    """The T peak comes later after the R peak in slow rhythms than in fast ones (Bazett / Fridericia)."""
    batch = generate_demo_ecgs(600, seed=3, noise_level=0.3)
    plain = ~(has(batch, "LBBB") | has(batch, "RBBB") | has(batch, "PVC") | has(batch, "INVT") | has(batch, "STE")
              | has(batch, "STD") | has(batch, "AFIB") | has(batch, "AFLT"))

    def rr_and_t_peak(signal):
        peaks = beats(signal)
        beat, zero = mean_beat(signal, peaks, before=0.1, after=0.55)
        rr = np.median(np.diff(peaks)) / FS
        lead = beat[LEAD["V5"]] - beat[LEAD["V5"], : int(0.05 * FS)].mean()
        window = lead[zero + int(0.15 * FS) : zero + int(min(0.5, 0.7 * rr) * FS)]  # before the next P wave
        return rr, 0.15 + np.argmax(window) / FS

    slow = [rr_and_t_peak(batch.signals[i])[1] for i in np.flatnonzero(plain & has(batch, "SBRAD"))[:40]]
    fast = [rr_and_t_peak(batch.signals[i])[1] for i in np.flatnonzero(plain & has(batch, "STACH"))[:40]]
    assert len(slow) >= 10 and len(fast) >= 10
    assert np.median(slow) > np.median(fast) + 0.04


def test_amplitudes_and_mains_frequency_vary_between_recordings(corpus):
    normal = pick(corpus, "NORM", limit=200)
    amplitude = np.array([np.ptp(corpus.signals[i, LEAD["II"]]) for i in normal])
    assert amplitude.std() / amplitude.mean() > 0.15
    spectrum = np.abs(np.fft.rfft(corpus.signals[:300, LEAD["V2"]], axis=-1))
    frequency = np.fft.rfftfreq(corpus.signals.shape[-1], 1 / FS)
    hum = {hz: spectrum[:, np.argmin(np.abs(frequency - hz))] / np.median(spectrum[:, (frequency > 40) & (frequency < 70)], axis=1)
           for hz in (50, 60)}
    assert (hum[50] > 5).sum() >= 5 and (hum[60] > 5).sum() >= 5  # both mains frequencies occur, in the leads


def test_occasional_recording_faults_only_on_lead_independent_findings(corpus):
    chest = corpus.signals[:, LEAD["V2"] : LEAD["V5"] + 1]
    flat = np.ptp(chest, axis=-1).min(axis=1) < 0.05
    assert 1 <= flat.sum() <= 0.05 * len(flat)
    lead_dependent = [DEMO_LABELS.index(label) for label in ("LBBB", "RBBB", "LAD", "STE", "STD", "INVT", "LVOLT")]
    assert not corpus.labels[flat][:, lead_dependent].any()
