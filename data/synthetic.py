"""A synthetic, physiologically consistent 12-lead ECG corpus with MIMIC-style machine reports, for demos and tests.

Signal model. Each heartbeat is a 3-D cardiac dipole time course: a sum of Gaussian-shaped waves (P, septal Q,
main R, terminal S, bundle-branch-block components, T), each along its own direction vector, plus a smooth ST
"plateau" for ST-segment shifts. One beat template is built per record (vectorised across records) and placed at the
beat times by FFT convolution with an impulse train, so rate, rhythm (irregular AF, flutter conduction, premature
beats) and morphology are independent knobs. Atrial fibrillation and flutter add a continuous atrial dipole
(fibrillatory waves, sawtooth F waves). The dipole is projected on the lead vectors of I, II and V1-V6; noise
(baseline wander, EMG, mains hum) is added at the nine electrodes (RA, LA, LL, V1-V6) and mapped to the same leads,
and III, aVR, aVL, aVF are derived from I and II, so Einthoven's and Goldberger's identities hold exactly:
III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2.

Coordinates: x = patient's left, y = inferior, z = anterior. Frontal angles follow the hexaxial convention
(I = 0 deg, II = +60 deg, aVF = +90 deg, aVL = -30 deg).

Corpus model. Subjects carry persistent traits (electrical axis, amplitudes, chest geometry, chronic conduction
findings: LBBB, RBBB, left axis deviation, low voltage); each record adds its own rhythm, rate and acute findings.
About 22 % of records are normal and carry the identical report "Sinus rhythm" / "Normal ECG", as MIMIC-IV-ECG's
most frequent report. Every other record has at least one of the 13 findings, reported with varied MIMIC-style
phrasing. Record `i` of subject `s` depends only on (seed, s, i), so any prefix of a corpus is the same corpus.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy.special import expit

from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

# Bump when the generator's output changes: the demo then rebuilds its corpus instead of reusing an older one.
GENERATOR_VERSION = 2
SAMPLING_RATE = 500
NUM_SAMPLES = 5000
DURATION_S = NUM_SAMPLES / SAMPLING_RATE

DEMO_LABELS: tuple[str, ...] = (
    "SBRAD", "STACH", "AFIB", "AFLT", "1AVB", "LBBB", "RBBB", "LAD", "STE", "STD", "INVT", "LVOLT", "PVC", "NORM",
)
_LABEL_INDEX = {label: index for index, label in enumerate(DEMO_LABELS)}

DEMO_LABEL_PROMPTS: dict[str, list[str]] = {
    "SBRAD": [
        "Sinus bradycardia (SBRAD). Sinus rhythm with a slow heart rate below 60 beats per minute.",
        "Sinus bradycardia", "Marked sinus bradycardia",
    ],
    "STACH": [
        "Sinus tachycardia (STACH). Sinus rhythm with a fast heart rate above 100 beats per minute.",
        "Sinus tachycardia",
    ],
    "AFIB": [
        "Atrial fibrillation (AFIB). Irregularly irregular ventricular rhythm without P waves, with a fibrillatory baseline.",
        "Atrial fibrillation", "Atrial fibrillation with rapid ventricular response",
        "Atrial fibrillation with slow ventricular response",
    ],
    "AFLT": [
        "Atrial flutter (AFLT). Regular sawtooth flutter waves at about 300 per minute with 2:1 or 4:1 conduction.",
        "Atrial flutter", "Atrial flutter with 2:1 A-V conduction", "Atrial flutter with variable A-V block",
    ],
    "1AVB": [
        "First degree AV block (1AVB). Prolonged PR interval longer than 200 ms with every P wave conducted.",
        "1st degree A-V block", "Sinus rhythm with 1st degree A-V block", "Prolonged PR interval",
    ],
    "LBBB": [
        "Left bundle branch block (LBBB). Wide QRS over 120 ms, broad notched R in I and V6, deep QS in V1.",
        "Left bundle branch block", "Complete left bundle branch block",
    ],
    "RBBB": [
        "Right bundle branch block (RBBB). Wide QRS over 120 ms with rSR' in V1 and a broad S wave in I and V6.",
        "Right bundle branch block", "Complete right bundle branch block",
    ],
    "LAD": [
        "Left axis deviation (LAD). Frontal QRS axis more negative than -30 degrees, negative QRS in II and aVF.",
        "Left axis deviation", "Marked left axis deviation", "Left anterior fascicular block",
    ],
    "STE": [
        "ST elevation (STE). Elevated ST segments suggesting acute myocardial injury or infarction.",
        "Anterior ST elevation - possible acute infarct", "Inferior ST elevation - probably acute infarct",
        "Lateral ST elevation - possible acute injury",
    ],
    "STD": [
        "ST depression (STD). Horizontal or downsloping ST segment depression suggesting myocardial ischemia.",
        "Diffuse ST depression", "ST depression, consider subendocardial injury",
        "Inferior/lateral ST depression - possible ischemia",
    ],
    "INVT": [
        "T wave inversion (INVT). Negative T waves in leads where they are normally upright.",
        "T wave inversion in lateral leads", "Anterior T wave inversion", "Inferior T wave inversion",
    ],
    "LVOLT": [
        "Low QRS voltage (LVOLT). QRS amplitudes below 0.5 mV in the limb leads and below 1 mV in the chest leads.",
        "Low QRS voltages in limb leads", "Low QRS voltages in precordial leads", "Generalized low QRS voltages",
    ],
    "PVC": [
        "Premature ventricular complexes (PVC). Early wide bizarre QRS complexes without a P wave, followed by a pause.",
        "Sinus rhythm with PVC(s)", "Ventricular premature complex", "Frequent PVCs",
    ],
    "NORM": [
        "Normal ECG (NORM). Sinus rhythm with normal rate, conduction, axis, voltages and repolarisation.",
        "Sinus rhythm. Normal ECG",
    ],
}

NORMAL_REPORT: tuple[str, ...] = ("Sinus rhythm", "Normal ECG")

# Order of leads in DemoBatch.signals (the project's canonical order).
DEMO_LEAD_NAMES = CANONICAL_LEADS
# MIMIC-IV-ECG writes aVF before aVL (DATASET_LAYOUTS.md section 1.5).
MIMIC_LEAD_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
MIMIC_ADC_GAIN = 200.0
MIMIC_MISSING_MEASUREMENT = 29999
MIMIC_REPORT_SLOTS = 18
MIMIC_MEASUREMENT_COLUMNS = (
    "subject_id", "study_id", "cart_id", "ecg_time",
    *(f"report_{slot}" for slot in range(MIMIC_REPORT_SLOTS)),
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
    "p_axis", "qrs_axis", "t_axis",
)
MIMIC_RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")

# Beat template window around QRS onset: long PR intervals before, long QT intervals after.
_TEMPLATE_PRE = 200  # samples (0.4 s) before QRS onset
_TEMPLATE_LENGTH = 500  # samples (1.0 s)
_TIMELINE = NUM_SAMPLES + 2 * _TEMPLATE_LENGTH  # FFT length: beats may start before t = 0, no circular wrap
_WAVES = 6  # per template: P + up to 4 ventricular components + T
_CHUNK = 256  # records per vectorised chunk (bounds temporary memory)
_INTERPOLATION_WEIGHTS = (np.arange(10, dtype=np.float32) / 10)[None, None, :]

# Precordial lead directions: horizontal angle from +x towards +z (anterior), inferior component, magnitude.
_CHEST_ANGLES_DEG = np.array([120.0, 95.0, 75.0, 55.0, 30.0, 5.0])
_CHEST_INFERIOR = np.array([0.0, 0.0, 0.05, 0.1, 0.15, 0.2])
_CHEST_GAIN = np.array([1.1, 1.6, 1.7, 1.6, 1.3, 1.0])
# Noise: leads (I, II, V1..V6) from electrodes (RA, LA, LL, V1..V6); V leads are referred to Wilson's terminal.
_ELECTRODE_TO_LEAD = np.zeros((8, 9), dtype=np.float32)
_ELECTRODE_TO_LEAD[0, [0, 1]] = [-1.0, 1.0]
_ELECTRODE_TO_LEAD[1, [0, 2]] = [-1.0, 1.0]
for _chest in range(6):
    _ELECTRODE_TO_LEAD[2 + _chest, :3] = -1.0 / 3.0
    _ELECTRODE_TO_LEAD[2 + _chest, 3 + _chest] = 1.0


def _unit(*components: float) -> np.ndarray:
    vector = np.asarray(components, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _frontal(angle_deg: float, anterior: float = 0.0) -> np.ndarray:
    angle = math.radians(angle_deg)
    return _unit(math.cos(angle), math.sin(angle), anterior)


def _rotation(frontal_deg: float, horizontal_deg: float) -> np.ndarray:
    """Rotate about z (frontal plane; positive = clockwise on the hexaxial chart) then about y (horizontal plane)."""
    a, b = math.radians(frontal_deg), math.radians(horizontal_deg)
    about_z = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    about_y = np.array([[math.cos(b), 0.0, -math.sin(b)], [0.0, 1.0, 0.0], [math.sin(b), 0.0, math.cos(b)]])
    return about_y @ about_z


# Ventricular wave directions for a reference frontal axis of +60 deg; rotated per subject to its own axis.
_REFERENCE_AXIS_DEG = 60.0
_LBBB_REFERENCE_AXIS_DEG = 10.0
_SEPTAL = _unit(-0.7, 0.3, 0.65)
_TERMINAL_S = _unit(-0.4, -0.6, -0.7)
_RBBB_TERMINAL = _unit(-0.7, 0.05, 0.75)
_LBBB_EARLY = _unit(0.6, 0.35, -0.5)
_LBBB_LATE = _unit(0.8, 0.1, -0.65)
_ST_REGIONS = {  # injury vectors: the ST segment rises in the leads they point to
    "anterior": _unit(0.1, -0.15, 1.0),
    "inferior": _unit(0.0, 1.0, 0.1),
    "lateral": _unit(1.0, -0.35, 0.2),
}
_ST_DEPRESSION = _unit(-0.7, -0.6, -0.4)  # towards aVR: depression in I, II, V4-V6, elevation in aVR
_T_INVERSION = {  # T vectors pointing away from the region whose T waves invert
    "lateral": _unit(-0.8, 0.45, 0.1),
    "anterior": _unit(0.45, 0.5, -0.9),
    "inferior": _unit(0.6, -0.8, 0.25),
}
_AF_DIRECTION = _unit(0.1, 0.5, 0.85)
_FLUTTER_DIRECTION = _unit(0.1, -1.0, 0.35)


@dataclass
class DemoBatch:
    """Synthetic records.

    Attributes:
        signals: (n, 12, 5000) float32 millivolts, leads I, II, III, aVR, aVL, aVF, V1-V6, 500 Hz.
        labels: (n, len(DEMO_LABELS)) bool ground truth.
        reports: per record its machine statements in MIMIC order (rhythm, conduction, axis, voltage, ST-T, summary).
        subject_ids: (n,) int64 MIMIC-like 8-digit subject ids (several records per subject).
        study_ids: (n,) int64 MIMIC-like 8-digit study ids, unique.
        measurements: per record the interval / axis values a cart would print (ms, degrees; None = not measurable).
    """

    signals: np.ndarray
    labels: np.ndarray
    reports: list[list[str]]
    subject_ids: np.ndarray
    study_ids: np.ndarray
    measurements: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.reports)


# ----------------------------------------------------------------------------------------------------------------
# who is in the corpus


def _records_per_subject(seed: int, subject: int, low: int, high: int) -> int:
    """MIMIC-like skew: most subjects have one ECG, fewer have many (geometric, truncated to [low, high])."""
    rng = np.random.default_rng([seed, subject, 1])
    return int(min(high, max(low, low + rng.geometric(0.55) - 1)))


def _subject_id(seed: int, subject: int) -> int:
    return 10_000_000 + subject * 37 + int(np.random.default_rng([seed, subject, 2]).integers(37))


def _study_id(seed: int, record: int) -> int:
    return 40_000_000 + record * 53 + int(np.random.default_rng([seed, record, 3]).integers(53))


def _corpus_plan(seed: int, num_records: int | None, num_subjects: int | None, low: int, high: int):
    """(subject index, record index within subject) pairs: a fixed number of records or of subjects."""
    pairs = []
    subject = 0
    while (num_records is None or len(pairs) < num_records) and (num_subjects is None or subject < num_subjects):
        count = _records_per_subject(seed, subject, low, high)
        pairs.extend((subject, visit) for visit in range(count))
        subject += 1
    return pairs[:num_records] if num_records is not None else pairs


# ----------------------------------------------------------------------------------------------------------------
# per-subject traits and per-record findings


def _subject_traits(seed: int, subject: int) -> dict:
    rng = np.random.default_rng([seed, subject, 0])
    lbbb = rng.random() < 0.075
    rbbb = not lbbb and rng.random() < 0.085
    lad = rng.random() < (0.3 if (lbbb or rbbb) else 0.1)
    return {
        "axis": rng.uniform(-80.0, -42.0) if lad else rng.uniform(-12.0, 85.0),
        "horizontal": rng.normal(0.0, 8.0),
        "r_amplitude": rng.uniform(1.0, 2.1),
        "t_amplitude": rng.uniform(0.25, 0.5),
        "chest_gain": rng.uniform(0.75, 1.25),
        "chest_rotation": rng.normal(0.0, 6.0),
        "posterior": rng.uniform(0.15, 0.5),
        "qtc": rng.uniform(0.37, 0.44),
        "pr": rng.uniform(0.125, 0.185),
        "chronic": {"LBBB": lbbb, "RBBB": rbbb, "LAD": lad, "LVOLT": rng.random() < 0.07},
        # between-patient variation that carries no finding: QT-rate law, wave widths, P size, skin/gain
        "qt_exponent": 1 / 3 if rng.random() < 0.5 else 1 / 2,  # Fridericia or Bazett
        "width_scale": rng.uniform(0.92, 1.08),
        "p_scale": rng.uniform(0.7, 1.3),
        "gain": rng.uniform(0.85, 1.15),
    }


def _draw_findings(traits: dict, rng: np.random.Generator) -> dict:
    """Labels of one record and the parameters that make them visible."""
    chronic = {name for name, present in traits["chronic"].items() if present and rng.random() < 0.92}
    if not chronic and rng.random() < 0.31:
        return {"labels": {"NORM"}, "rhythm": "SR", "rate": rng.uniform(60.0, 95.0)}
    while True:
        labels = set(chronic)
        rhythm = rng.choice(["SR", "SBRAD", "STACH", "AFIB", "AFLT"], p=[0.44, 0.16, 0.16, 0.16, 0.08])
        if rhythm != "SR":
            labels.add(str(rhythm))
        if rhythm in ("SR", "SBRAD") and rng.random() < 0.16:
            labels.add("1AVB")
        if rng.random() < 0.09:
            labels.add("STE")
        elif rng.random() < 0.12:
            labels.add("STD")
        if rng.random() < 0.11:
            labels.add("INVT")
        if rng.random() < (0.2 if rhythm == "AFIB" else 0.1):
            labels.add("PVC")
        if labels:
            break
    findings = {"labels": labels, "rhythm": str(rhythm)}
    if rhythm == "SR":
        findings["rate"] = rng.uniform(60.0, 99.0)
    elif rhythm == "SBRAD":
        findings["rate"] = rng.uniform(38.0, 57.0)
    elif rhythm == "STACH":
        findings["rate"] = rng.uniform(103.0, 150.0)
    elif rhythm == "AFIB":
        findings["rate"] = float(rng.choice([rng.uniform(45.0, 59.0), rng.uniform(60.0, 99.0), rng.uniform(101.0, 160.0)],
                                            p=[0.1, 0.45, 0.45]))
        findings["rr_spread"] = rng.uniform(0.14, 0.3)
    else:
        findings["flutter_rate"] = rng.uniform(260.0, 330.0) / 60.0
        findings["conduction"] = str(rng.choice(["2:1", "4:1", "variable"], p=[0.5, 0.25, 0.25]))
    if "1AVB" in labels:
        findings["pr"] = rng.uniform(0.22, 0.34)
    if "STE" in labels:
        findings["st_region"] = str(rng.choice(list(_ST_REGIONS)))
    if "INVT" in labels:
        findings["t_region"] = str(rng.choice(list(_T_INVERSION)))
    if "PVC" in labels:
        findings["bigeminy"] = rng.random() < 0.15
    return findings


# ----------------------------------------------------------------------------------------------------------------
# reports


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _compose_report(findings: dict, traits: dict, rng: np.random.Generator) -> list[str]:
    labels = findings["labels"]
    if labels == {"NORM"}:
        return list(NORMAL_REPORT)
    rate = findings.get("rate", 0.0)
    rhythm = findings["rhythm"]
    if rhythm == "SR":
        rhythm_text = "Sinus rhythm"
    elif rhythm == "SBRAD":
        rhythm_text = "Marked sinus bradycardia" if rate < 45 and rng.random() < 0.7 else "Sinus bradycardia"
    elif rhythm == "STACH":
        rhythm_text = "Sinus tachycardia"
    elif rhythm == "AFIB":
        rhythm_text = "Atrial fibrillation"
        if rate > 100 and rng.random() < 0.8:
            rhythm_text += " with rapid ventricular response"
        elif rate < 60 and rng.random() < 0.8:
            rhythm_text += " with slow ventricular response"
    else:
        suffix = {"2:1": " with 2:1 A-V conduction", "4:1": " with 4:1 A-V conduction",
                  "variable": " with variable A-V block"}[findings["conduction"]]
        rhythm_text = "Atrial flutter" + (suffix if rng.random() < 0.7 else "")
    statements = []
    merged = False
    if "1AVB" in labels and rng.random() < 0.5:
        rhythm_text += " with 1st degree A-V block"
        merged = True
    if "PVC" in labels and not merged and rng.random() < 0.5:
        rhythm_text += " with PVC(s) or aberrant ventricular conduction" if rhythm == "AFIB" else " with PVC(s)"
        merged = "PVC"
    statements.append(rhythm_text)
    if "1AVB" in labels and merged is not True:
        statements.append(_pick(rng, ["1st degree A-V block", "Prolonged PR interval", "First degree AV block"]))
    if "PVC" in labels and merged != "PVC":
        options = ["Ventricular premature complex", "Premature ventricular contractions", "Frequent PVCs", "PVC(s)"]
        statements.append("Ventricular bigeminy" if findings.get("bigeminy") and rng.random() < 0.6 else _pick(rng, options))
    if "LBBB" in labels:
        statements.append(_pick(rng, ["Left bundle branch block", "Left bundle branch block",
                                      "Complete left bundle branch block", "LBBB"]))
    if "RBBB" in labels:
        statements.append(_pick(rng, ["Right bundle branch block", "Right bundle branch block",
                                      "Complete right bundle branch block", "RBBB"]))
    if "LAD" in labels:
        options = ["Left axis deviation", "Left axis deviation", "Leftward axis", "Left anterior fascicular block"]
        statements.append("Marked left axis deviation" if traits["axis"] < -60 and rng.random() < 0.5 else _pick(rng, options))
    if "LVOLT" in labels:
        statements.append(_pick(rng, ["Low QRS voltages in limb leads", "Low QRS voltages in precordial leads",
                                      "Low voltage QRS", "Generalized low QRS voltages"]))
    if "STE" in labels:
        region = findings["st_region"]
        options = {
            "anterior": ["Anterior ST elevation - possible acute infarct", "ST elevation in anterior leads, consider acute injury",
                         "Acute anterior infarct"],
            "inferior": ["Inferior ST elevation - probably acute infarct", "ST elevation in inferior leads",
                         "Acute inferior infarct"],
            "lateral": ["Lateral ST elevation - possible acute injury", "ST elevation in lateral leads"],
        }[region]
        statements.append(_pick(rng, options))
        if rng.random() < 0.25:
            statements.append("*** ACUTE MI / STEMI ***")
    if "STD" in labels:
        statements.append(_pick(rng, ["Diffuse ST depression", "ST depression, consider subendocardial injury",
                                      "Inferior/lateral ST depression - possible ischemia", "ST segment depression"]))
    if "INVT" in labels:
        options = {
            "lateral": ["T wave inversion in lateral leads", "Lateral T wave inversion", "Inverted T waves in lateral leads"],
            "anterior": ["Anterior T wave inversion", "T wave inversion in anterior leads, consider ischemia"],
            "inferior": ["Inferior T wave inversion", "T wave inversion in inferior leads"],
        }[findings["t_region"]]
        statements.append(_pick(rng, options))
    if labels <= {"SBRAD", "STACH"}:
        statements.append("Normal ECG except for rate" if rng.random() < 0.7 else "Borderline ECG")
    elif labels <= {"SBRAD", "STACH", "1AVB", "LAD", "LVOLT"}:
        statements.append("Borderline ECG")
    else:
        statements.append("Abnormal ECG")
    return statements


# ----------------------------------------------------------------------------------------------------------------
# beat templates and beat times


def _record_parameters(traits: dict, findings: dict, rng: np.random.Generator) -> dict:
    """Wave table (centers, widths, amplitudes, directions) of the sinus and ectopic templates, ST plateau, timing."""
    labels = findings["labels"]
    # LBBB activation points leftward (about +10 deg) whatever the axis; rotating it as far as a normal R vector
    # would turn V6's broad R wave negative, so its rotation is measured from its own reference.
    reference = _LBBB_REFERENCE_AXIS_DEG if "LBBB" in labels else _REFERENCE_AXIS_DEG
    rotation = _rotation(traits["axis"] - reference, traits["horizontal"])
    rate = findings.get("rate") or 60.0 * findings["flutter_rate"] / {"2:1": 2.0, "4:1": 4.0, "variable": 3.0}[findings["conduction"]]
    rr = 60.0 / rate
    qt = traits["qtc"] * rr ** traits.get("qt_exponent", 0.5) * rng.uniform(0.97, 1.03)
    # PR shortens a little as the rate rises (and stays below 200 ms unless the record has a 1st degree block)
    pr = findings.get("pr", traits["pr"]) * rng.uniform(0.97, 1.03) * min(1.08, max(0.9, (rr / 0.8) ** 0.12))
    pr = pr if "pr" in findings else min(pr, 0.192)
    r_amp = traits["r_amplitude"] * rng.uniform(0.9, 1.1)
    if "LVOLT" in labels:
        r_amp = rng.uniform(0.24, 0.36)
    main = _frontal(_REFERENCE_AXIS_DEG, -traits["posterior"])

    centers = np.zeros(_WAVES)
    left = np.full(_WAVES, 0.01)
    right = np.full(_WAVES, 0.01)
    amplitudes = np.zeros(_WAVES)
    directions = np.zeros((_WAVES, 3))
    has_p = findings["rhythm"] in ("SR", "SBRAD", "STACH")
    if has_p:
        centers[0], left[0], right[0] = -pr + 0.05, 0.02, 0.02
        amplitudes[0] = rng.uniform(0.1, 0.22) * traits.get("p_scale", 1.0)
        directions[0] = _frontal(rng.uniform(35.0, 70.0), 0.25)
    if "LBBB" in labels:
        waves = [(0.035, 0.016, _LBBB_EARLY, 0.95), (0.088, 0.021, _LBBB_LATE, 1.25)]
        qrs_duration = 0.088 + 2.6 * 0.021
    else:
        scale = traits.get("width_scale", 1.0) * rng.uniform(0.97, 1.03)  # QRS width varies between patients
        waves = [(0.014 * scale, 0.007 * scale, _SEPTAL, rng.uniform(0.08, 0.16)), (0.043 * scale, 0.011 * scale, main, 1.0),
                 (0.071 * scale, 0.009 * scale, _TERMINAL_S, rng.uniform(0.2, 0.35))]
        qrs_duration = 0.095
        if "RBBB" in labels:
            waves.append((0.098, 0.018, _RBBB_TERMINAL, rng.uniform(0.6, 0.9)))
            qrs_duration = 0.098 + 2.6 * 0.018
    for slot, (center, width, direction, relative) in enumerate(waves, start=1):
        centers[slot], left[slot], right[slot] = center, width, width
        amplitudes[slot] = relative * r_amp
        directions[slot] = rotation @ direction
    # T wave: ends at QT; asymmetric (slow rise, faster fall); concordant with QRS unless conduction says otherwise.
    t_fall = rng.uniform(0.035, 0.048)
    centers[5], left[5], right[5] = qt - 2.4 * t_fall, 1.3 * t_fall, t_fall
    t_amp = traits["t_amplitude"] * rng.uniform(0.9, 1.1) * (0.6 if "LVOLT" in labels else 1.0)
    t_direction = rotation @ _frontal(_REFERENCE_AXIS_DEG + rng.normal(0.0, 12.0), rng.uniform(0.25, 0.6))
    st_amp, st_direction = 0.0, np.zeros(3)
    if "LBBB" in labels:  # secondary (discordant) ST-T changes
        t_direction = -rotation @ _unit(0.75, 0.2, -0.6)
        st_amp, st_direction = rng.uniform(0.05, 0.12), t_direction
    elif "RBBB" in labels:
        t_direction = rotation @ _frontal(_REFERENCE_AXIS_DEG, -0.5)
    if "INVT" in labels:
        t_direction = _T_INVERSION[findings["t_region"]]
        t_amp = rng.uniform(0.25, 0.5)
    if "STE" in labels:
        st_amp, st_direction = rng.uniform(0.25, 0.5), _ST_REGIONS[findings["st_region"]]
        if "INVT" not in labels:
            t_amp *= rng.uniform(1.2, 1.5)  # hyperacute T
    elif "STD" in labels:
        st_amp, st_direction = rng.uniform(0.15, 0.3), _ST_DEPRESSION
        t_amp *= rng.uniform(0.5, 0.85)
    amplitudes[5] = t_amp
    directions[5] = t_direction

    # Ectopic ventricular template (PVC): wide, no P wave, discordant T; its focus is random per record.
    ectopic_direction = _unit(*rng.normal(size=3))
    ectopic_late = _unit(*(ectopic_direction + 0.6 * rng.normal(size=3)))
    ectopic = {
        "centers": np.array([0.0, 0.045, 0.11, 0.0, 0.0, 0.36]),
        "left": np.array([0.01, 0.022, 0.026, 0.01, 0.01, 0.07]),
        "right": np.array([0.01, 0.022, 0.026, 0.01, 0.01, 0.045]),
        "amplitudes": np.array([0.0, 1.0, 0.9, 0.0, 0.0, 0.45]) * max(r_amp, 0.3) * rng.uniform(1.1, 1.6),
        "directions": np.stack([np.zeros(3), ectopic_direction, ectopic_late, np.zeros(3), np.zeros(3),
                                -_unit(*(ectopic_direction + ectopic_late))]),
    }
    return {
        "centers": centers, "left": left, "right": right, "amplitudes": amplitudes, "directions": directions,
        "st_amplitude": st_amp, "st_direction": st_direction, "st_start": qrs_duration, "st_end": qt - 2.4 * t_fall,
        "ectopic": ectopic, "rr": rr, "pr": pr if has_p else None, "qt": qt, "qrs_duration": qrs_duration,
        "p_axis": None if not has_p else float(np.degrees(np.arctan2(directions[0][1], directions[0][0]))),
        "t_axis": float(np.degrees(np.arctan2(t_direction[1], t_direction[0]))),
    }


def _beat_times(findings: dict, params: dict, rng: np.random.Generator):
    """QRS onset times (s) of conducted beats and of premature ventricular beats, and beat amplitude weights."""
    rr = params["rr"]
    rhythm = findings["rhythm"]
    start = -rng.uniform(0.0, 1.5 * rr) - 0.3
    if rhythm == "AFIB":
        sigma = findings["rr_spread"]
        count = int((DURATION_S - start) / (rr * 0.5)) + 4
        intervals = np.maximum(rr * rng.lognormal(-0.5 * sigma**2, sigma, count), 0.28)
    elif rhythm == "AFLT":
        flutter_period = 1.0 / findings["flutter_rate"]
        ratio = {"2:1": [2], "4:1": [4], "variable": [2, 3, 4]}[findings["conduction"]]
        count = int((DURATION_S - start) / (2 * flutter_period)) + 4
        intervals = flutter_period * rng.choice(ratio, size=count)
    else:
        count = int((DURATION_S - start) / (rr * 0.85)) + 4
        breathing = rng.uniform(0.18, 0.33)  # respiratory sinus arrhythmia
        phase = rng.uniform(0, 2 * np.pi)
        depth = rng.uniform(0.01, 0.05)
        beat_time = rr * np.arange(count)
        intervals = rr * (1 + depth * np.sin(2 * np.pi * breathing * beat_time + phase)
                          + rng.uniform(0.0, 0.02) * np.sin(2 * np.pi * rng.uniform(0.08, 0.12) * beat_time
                                                             + rng.uniform(0, 2 * np.pi)))  # Mayer waves
        intervals *= 1 + rng.normal(0.0, rng.uniform(0.005, 0.014), count)
    onsets = start + np.concatenate([[0.0], np.cumsum(intervals)])
    onsets = onsets[onsets < DURATION_S + 0.05]
    ectopic = np.zeros(0)
    if "PVC" in findings["labels"]:
        visible = np.flatnonzero((onsets > 0.3) & (onsets < DURATION_S - 0.6))
        if findings.get("bigeminy"):
            chosen = visible[visible % 2 == int(rng.integers(2))]
        else:
            chosen = rng.choice(visible, size=min(len(visible), int(rng.integers(1, 4))), replace=False)
        chosen = np.sort(chosen[chosen > 0])
        coupling = np.clip(rng.uniform(0.45, 0.65) + rng.normal(0.0, 0.03, len(chosen)), 0.42, 0.7)  # per PVC
        ectopic = onsets[chosen - 1] + coupling * (onsets[chosen] - onsets[chosen - 1])
        onsets = np.delete(onsets, chosen)  # the replaced sinus beat is not conducted: compensatory pause
    weights = 1.0 + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(0.2, 0.3) * onsets + rng.uniform(0, 6.3))
    weights *= 1.0 + rng.normal(0.0, 0.03, len(onsets))  # beat-to-beat amplitude variation
    return onsets, weights, ectopic


def _atrial_activity(findings: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Continuous atrial dipole magnitude (5000 samples) and direction for AF (f waves) and flutter (F waves)."""
    t = np.arange(NUM_SAMPLES) / SAMPLING_RATE
    if findings["rhythm"] == "AFIB":
        wave = np.zeros(NUM_SAMPLES)
        for _ in range(3):
            frequency = rng.uniform(4.5, 9.0)
            drift = np.cumsum(rng.normal(0.0, 0.02, NUM_SAMPLES))  # phase wander: no two f waves alike
            envelope = 1.0 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3))
            wave += rng.uniform(0.3, 1.0) * envelope * np.sin(2 * np.pi * frequency * t + drift)
        wave *= rng.uniform(0.04, 0.1) / max(wave.std(), 1e-6)
        return wave, _AF_DIRECTION
    if findings["rhythm"] == "AFLT":
        phase = (findings["flutter_rate"] * t + rng.uniform(0, 1)) % 1.0
        sawtooth = np.where(phase < 0.75, phase / 0.75, (1.0 - phase) / 0.25)  # slow descent, fast return
        sawtooth = np.convolve(sawtooth - sawtooth.mean(), np.ones(9) / 9, mode="same")
        return -rng.uniform(0.2, 0.35) * sawtooth * 2.0, _FLUTTER_DIRECTION
    return None


def _lead_matrix(traits: dict, rng: np.random.Generator | None = None) -> np.ndarray:
    """(8, 3) lead vectors of I, II, V1..V6 for this subject's chest geometry; with `rng`, this recording's
    electrode placement (chest electrodes a little higher/lower/sideways, limb leads rotated a few degrees) and
    overall amplitude scaling."""
    rotation = traits["chest_rotation"] + (rng.normal(0.0, 4.0, 6) if rng is not None else 0.0)
    angles = np.radians(_CHEST_ANGLES_DEG + rotation)
    chest = np.stack([np.cos(angles), _CHEST_INFERIOR, np.sin(angles)], axis=1)
    chest *= (_CHEST_GAIN * traits["chest_gain"] * (rng.uniform(0.9, 1.1, 6) if rng is not None else 1.0))[:, None]
    limb_angles = np.radians([0.0, 60.0]) + (np.radians(rng.normal(0.0, 3.0)) if rng is not None else 0.0)
    limb = np.stack([np.cos(limb_angles), np.sin(limb_angles), np.zeros(2)], axis=1) * [[1.0], [1.0]]
    gain = traits.get("gain", 1.0) * (rng.uniform(0.95, 1.05) if rng is not None else 1.0)
    return (np.concatenate([limb, chest]) * gain).astype(np.float32)


def _templates(tables: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 3, L) dipole templates from wave tables with leading record axis: centers/left/right/amplitudes (n, W),
    directions (n, W, 3); time 0 of the template is _TEMPLATE_PRE samples before QRS onset."""
    time = (np.arange(_TEMPLATE_LENGTH, dtype=np.float32) - _TEMPLATE_PRE) / SAMPLING_RATE
    offset = time[None, None, :] - tables["centers"][:, :, None].astype(np.float32)
    width = np.where(offset < 0, tables["left"][:, :, None], tables["right"][:, :, None]).astype(np.float32)
    shapes = np.exp(-0.5 * (offset / width) ** 2)
    return np.einsum("nw,nwd,nwl->ndl", tables["amplitudes"].astype(np.float32),
                     tables["directions"].astype(np.float32), shapes, optimize=True)


def _st_plateau(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(n, L) smooth box from the J point to the T peak (onset slope 4 ms, fades into the T wave)."""
    time = (np.arange(_TEMPLATE_LENGTH, dtype=np.float32) - _TEMPLATE_PRE) / SAMPLING_RATE
    rise = expit((time[None] - starts[:, None]) / 0.004)
    fall = expit((ends[:, None] - time[None]) / 0.03)
    return (rise * fall).astype(np.float32)


def _impulses(times: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """Adds weighted unit impulses at template start positions (QRS onset - pre) on the padded timeline."""
    positions = np.rint(times * SAMPLING_RATE).astype(np.int64) - _TEMPLATE_PRE + _TEMPLATE_LENGTH
    keep = (positions >= 0) & (positions < _TIMELINE)
    np.add.at(out, positions[keep], weights[keep])


def _measurements(params: dict, findings: dict, traits: dict, onsets: np.ndarray) -> dict:
    """Cart-style measurements in ms / degrees (MIMIC machine_measurements semantics), None where not measurable."""
    intervals = np.diff(onsets)
    rr_ms = int(round(1000 * float(np.median(intervals)))) if len(intervals) else int(round(1000 * params["rr"]))
    p_onset = 40
    qrs_onset = p_onset + int(round(1000 * params["pr"])) if params["pr"] is not None else 200
    return {
        "rr_interval": rr_ms,
        "p_onset": p_onset if params["pr"] is not None else None,
        "p_end": p_onset + 100 if params["pr"] is not None else None,
        "qrs_onset": qrs_onset,
        "qrs_end": qrs_onset + int(round(1000 * params["qrs_duration"])),
        "t_end": qrs_onset + int(round(1000 * params["qt"])),
        "p_axis": None if params["p_axis"] is None else int(round(params["p_axis"])),
        "qrs_axis": int(round(traits["axis"])),
        "t_axis": int(round(params["t_axis"])),
    }


def _noise(rng: np.random.Generator, level: float, gaussian_bank: np.ndarray) -> np.ndarray:
    """(9, 5000) electrode noise (RA, LA, LL, V1..V6): baseline wander, EMG, sometimes 60 Hz mains hum.

    EMG noise is a random window of a per-seed bank of Gaussian samples: drawing 45k fresh normals per record
    would be the slowest step of the generator, and a window of a 2**21-sample bank is just as white."""
    start = int(rng.integers(len(gaussian_bank) - 9 * NUM_SAMPLES))
    noise = gaussian_bank[start : start + 9 * NUM_SAMPLES].reshape(9, NUM_SAMPLES) * np.float32(rng.uniform(0.004, 0.025))
    # Baseline wander (< 0.5 Hz) is evaluated every 10 samples and linearly interpolated: same curve, 10x fewer sines.
    coarse_t = np.arange(NUM_SAMPLES // 10 + 1, dtype=np.float32) * np.float32(10 / SAMPLING_RATE)
    frequencies = rng.uniform(0.05, 0.45, size=(9, 2, 1)).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=(9, 2, 1)).astype(np.float32)
    amplitudes = (rng.uniform(0.0, 0.12, size=(9, 2, 1)) * rng.uniform(0.3, 1.0)).astype(np.float32)
    coarse = (amplitudes * np.sin(2 * np.pi * frequencies * coarse_t + phases)).sum(axis=1)
    steps = coarse[:, 1:] - coarse[:, :-1]
    noise += (coarse[:, :-1, None] + steps[:, :, None] * _INTERPOLATION_WEIGHTS).reshape(9, NUM_SAMPLES)
    t = np.arange(NUM_SAMPLES, dtype=np.float32) / SAMPLING_RATE
    if rng.random() < 0.35:  # mains hum: 50 or 60 Hz, not always filtered
        mains = 50.0 if rng.random() < 0.5 else 60.0
        # unequal electrode impedances: a common-mode hum would cancel in every lead
        pickup = (rng.uniform(0.003, 0.03) * rng.uniform(0.2, 1.0, size=(9, 1))).astype(np.float32)
        noise += pickup * np.sin(2 * np.pi * mains * t + np.float32(rng.uniform(0, 6.3)))
    if rng.random() < 0.25:  # a burst of muscle noise (the patient moved or shivered) on a few electrodes
        start, length = int(rng.integers(NUM_SAMPLES)), int(rng.uniform(0.3, 2.0) * SAMPLING_RATE)
        electrodes = rng.random(9) < 0.4
        burst = gaussian_bank[: min(length, NUM_SAMPLES - start)] * np.float32(rng.uniform(0.02, 0.08))
        noise[electrodes, start : start + len(burst)] += burst
    return noise * np.float32(level)


_LEAD_INDEPENDENT_LABELS = {"NORM", "SBRAD", "STACH", "AFIB", "AFLT", "1AVB", "PVC"}


def _draw_fault(findings: dict, rng: np.random.Generator) -> str | None:
    """An occasional recording fault: left/right arm electrodes swapped (lead I inverted, II and III exchanged) or
    a disconnected chest electrode (V2-V5 flat). Only on records whose findings do not depend on which lead shows
    what (rate, rhythm, PR), so every label stays measurable from the signal."""
    if findings["labels"] <= _LEAD_INDEPENDENT_LABELS and rng.random() < 0.04:
        return "arm reversal" if rng.random() < 0.5 else f"flat V{int(rng.integers(2, 6))}"
    return None


def _recording_faults(independent: np.ndarray, faults: list[str | None]) -> None:
    """Apply the faults to the (m, 8, T) independent leads I, II, V1..V6 in place (the derived leads follow)."""
    for row, fault in enumerate(faults):
        if fault == "arm reversal":
            lead_i = independent[row, 0].copy()
            independent[row, 0] = -lead_i
            independent[row, 1] = independent[row, 1] - lead_i  # the old lead III
        elif fault is not None:
            chest = int(fault[-1]) - 1
            independent[row, 2 + chest] *= np.float32(0.01)  # only a trace of signal and noise is left


def _synthesize(plan: list[tuple[int, int]], seed: int, first_record: int, noise_level: float) -> DemoBatch:
    n = len(plan)
    signals = np.empty((n, len(DEMO_LEAD_NAMES), NUM_SAMPLES), dtype=np.float32)
    labels = np.zeros((n, len(DEMO_LABELS)), dtype=bool)
    reports, measurements = [], []
    subject_ids = np.empty(n, dtype=np.int64)
    study_ids = np.empty(n, dtype=np.int64)
    traits_cache: dict[int, dict] = {}
    gaussian_bank = np.random.default_rng([seed, 99]).standard_normal(2**21, dtype=np.float32)
    for chunk_start in range(0, n, _CHUNK):
        chunk = plan[chunk_start : chunk_start + _CHUNK]
        m = len(chunk)
        impulses = np.zeros((m, 2, _TIMELINE), dtype=np.float32)
        tables = {key: [] for key in ("centers", "left", "right", "amplitudes", "directions")}
        ectopic_tables = {key: [] for key in tables}
        st = np.zeros((m, 3), dtype=np.float32)
        st_start, st_end = np.zeros(m, dtype=np.float32), np.zeros(m, dtype=np.float32)
        leads = np.empty((m, 8, 3), dtype=np.float32)
        atrial = np.zeros((m, 3, NUM_SAMPLES), dtype=np.float32)
        noise = np.empty((m, 9, NUM_SAMPLES), dtype=np.float32)
        faults = []
        for row, (subject, visit) in enumerate(chunk):
            record = chunk_start + row
            if subject not in traits_cache:
                traits_cache = {subject: _subject_traits(seed, subject)}  # plans are subject-contiguous
            traits = traits_cache[subject]
            rng = np.random.default_rng([seed, subject, visit, 7])
            findings = _draw_findings(traits, rng)
            params = _record_parameters(traits, findings, rng)
            onsets, weights, ectopic = _beat_times(findings, params, rng)
            _impulses(onsets, weights, impulses[row, 0])
            _impulses(ectopic, np.ones_like(ectopic), impulses[row, 1])
            for key in tables:
                tables[key].append(params[key])
                ectopic_tables[key].append(params["ectopic"][key])
            st[row] = params["st_amplitude"] * params["st_direction"]
            st_start[row], st_end[row] = params["st_start"], params["st_end"]
            leads[row] = _lead_matrix(traits, rng)
            activity = _atrial_activity(findings, rng)
            if activity is not None:
                atrial[row] = activity[1][:, None] * activity[0][None, :]
            noise[row] = _noise(rng, noise_level, gaussian_bank)
            faults.append(_draw_fault(findings, rng))
            for label in findings["labels"]:
                labels[record, _LABEL_INDEX[label]] = True
            reports.append(_compose_report(findings, traits, rng))
            measurements.append(_measurements(params, findings, traits, onsets))
            subject_ids[record] = _subject_id(seed, subject)
            study_ids[record] = _study_id(seed, first_record + record)
        sinus = _templates({key: np.stack(value) for key, value in tables.items()})
        sinus += st[:, :, None] * _st_plateau(st_start, st_end)[:, None, :]
        ectopic_templates = _templates({key: np.stack(value) for key, value in ectopic_tables.items()})
        spectrum = scipy.fft.rfft(impulses, axis=-1, workers=2)
        dipole = scipy.fft.irfft(
            spectrum[:, :1] * scipy.fft.rfft(sinus, n=_TIMELINE, axis=-1, workers=2)
            + spectrum[:, 1:] * scipy.fft.rfft(ectopic_templates, n=_TIMELINE, axis=-1, workers=2),
            n=_TIMELINE, axis=-1, workers=2,
        )
        # contiguous before the batched matmul (10x faster than on the strided slice)
        dipole = np.ascontiguousarray(dipole[:, :, _TEMPLATE_LENGTH : _TEMPLATE_LENGTH + NUM_SAMPLES], dtype=np.float32)
        dipole += atrial
        independent = np.matmul(leads, dipole)
        independent += np.matmul(_ELECTRODE_TO_LEAD, noise)
        _recording_faults(independent, faults)
        lead_i, lead_ii = independent[:, 0], independent[:, 1]
        out = signals[chunk_start : chunk_start + m]
        out[:, 0], out[:, 1] = lead_i, lead_ii
        out[:, 2] = lead_ii - lead_i
        out[:, 3] = -(lead_i + lead_ii) / 2
        out[:, 4] = lead_i - lead_ii / 2
        out[:, 5] = lead_ii - lead_i / 2
        out[:, 6:] = independent[:, 2:]
    return DemoBatch(signals, labels, reports, subject_ids, study_ids, measurements)


def generate_demo_ecgs(num_records: int, seed: int, noise_level: float = 1.0) -> DemoBatch:
    """`num_records` synthetic 12-lead ECGs with labels and MIMIC-style reports (see the module docstring).

    Deterministic in (num_records, seed); the first k records of a larger corpus equal `generate_demo_ecgs(k, seed)`.
    `noise_level` scales baseline wander, EMG and mains noise (0 = clean signals, for tests of the morphology).
    """
    if num_records < 0:
        raise ValueError(f"num_records must be >= 0, got {num_records}")
    return _synthesize(_corpus_plan(seed, num_records, None, 1, 4), seed, 0, noise_level)


# ----------------------------------------------------------------------------------------------------------------
# MIMIC-IV-ECG v1.0 tree


def _ecg_time(seed: int, record: int) -> str:
    rng = np.random.default_rng([seed, record, 4])
    year, month, day = rng.integers(2110, 2200), rng.integers(1, 13), rng.integers(1, 29)
    hour, minute, second = rng.integers(0, 24), rng.integers(0, 60), 0
    return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"


def _report_slots(statements: list[str], rng: np.random.Generator) -> list[str]:
    """The 18 report columns: statements in order, with MIMIC's occasional empty slots between them."""
    slots = []
    for statement in statements:
        if slots and rng.random() < 0.25:
            slots.append("")
        slots.append(statement)
    slots = slots[:MIMIC_REPORT_SLOTS]
    return slots + [""] * (MIMIC_REPORT_SLOTS - len(slots))


def mimic_record_path(subject_id: int, study_id: int) -> str:
    """MIMIC-IV-ECG relative record path without extension: files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN."""
    subject = str(int(subject_id))
    return f"files/p{subject[:4]}/p{subject}/s{int(study_id)}/{int(study_id)}"


def write_mimic_tree(
    root: str | os.PathLike,
    num_subjects: int,
    records_per_subject: tuple[int, int] = (1, 4),
    seed: int = 0,
    noise_level: float = 1.0,
) -> Path:
    """Write a synthetic MIMIC-IV-ECG v1.0 tree (DATASET_LAYOUTS.md section 1) under `root` and return `root`.

    Files: `record_list.csv`, `machine_measurements.csv` (33 columns; statements in `report_0..report_17` with
    empty slots; 29999 for measurements a cart cannot make, e.g. P wave values in AF), `files/pNNNN/pNNNNNNNN/
    sNNNNNNNN/NNNNNNNN.{hea,dat}` (WFDB format 16, gain 200/mV, 500 Hz, 5000 samples, leads I, II, III, aVR, aVF,
    aVL, V1-V6), plus `demo_labels.csv` (study_id and one 0/1 column per DEMO_LABELS entry: the ground truth).
    Each subject has between `records_per_subject[0]` and `[1]` records (skewed towards few).
    """
    low, high = records_per_subject
    if not 1 <= low <= high:
        raise ValueError(f"records_per_subject must be (low, high) with 1 <= low <= high, got {records_per_subject}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    plan = _corpus_plan(seed, None, num_subjects, low, high)
    batch = _synthesize(plan, seed, 0, noise_level)
    mimic_order = [DEMO_LEAD_NAMES.index(name) for name in MIMIC_LEAD_ORDER]
    digital_limit = np.iinfo(np.int16).max
    with open(root / "record_list.csv", "w", newline="") as records_file, \
            open(root / "machine_measurements.csv", "w", newline="") as measurements_file, \
            open(root / "demo_labels.csv", "w", newline="") as labels_file:
        records_csv, measurements_csv, labels_csv = (csv.writer(f) for f in (records_file, measurements_file, labels_file))
        records_csv.writerow(MIMIC_RECORD_LIST_COLUMNS)
        measurements_csv.writerow(MIMIC_MEASUREMENT_COLUMNS)
        labels_csv.writerow(("study_id", *DEMO_LABELS))
        for index in range(len(batch)):
            subject_id, study_id = int(batch.subject_ids[index]), int(batch.study_ids[index])
            relative = mimic_record_path(subject_id, study_id)
            record_dir = root / Path(relative).parent
            record_dir.mkdir(parents=True, exist_ok=True)
            ecg_time = _ecg_time(seed, index)
            digital = np.clip(np.rint(batch.signals[index, mimic_order] * MIMIC_ADC_GAIN), -digital_limit, digital_limit)
            date, time_of_day = ecg_time.split(" ")
            _write_wfdb_format16(record_dir, str(study_id), digital.astype(np.int16), MIMIC_LEAD_ORDER,
                                 comments=[str(subject_id)], base_time=time_of_day, base_date=date)
            records_csv.writerow((subject_id, study_id, str(study_id), ecg_time, relative))
            values = batch.measurements[index]
            measured = [MIMIC_MISSING_MEASUREMENT if values[key] is None else values[key]
                        for key in MIMIC_MEASUREMENT_COLUMNS[-9:]]
            slots = _report_slots(batch.reports[index], np.random.default_rng([seed, index, 5]))
            cart_id = 6_000_000 + int(np.random.default_rng([seed, index, 6]).integers(1_000_000))
            measurements_csv.writerow((subject_id, study_id, cart_id, ecg_time, *slots,
                                       "0.005-150 Hz", "60 Hz notch Baseline filter", *measured))
            labels_csv.writerow((study_id, *batch.labels[index].astype(int)))
    return root


def _write_wfdb_format16(
    folder: Path, record_name: str, digital: np.ndarray, lead_names, comments: list[str], base_time: str,
    base_date: str,
) -> None:
    """One WFDB record, format 16 (little-endian int16, samples interleaved), gain 200/mV, byte-for-byte what
    `wfdb.wrsamp` writes for these arguments (tests/test_synthetic.py reads it back with wfdb). Written directly
    because `wrsamp` spends ~30 ms per record validating its pandas field tables: most of the corpus stage."""
    digital = np.ascontiguousarray(digital, dtype="<i2")  # (leads, samples)
    (folder / f"{record_name}.dat").write_bytes(digital.T.tobytes())
    year, month, day = base_date.split("-")
    lines = [f"{record_name} {len(lead_names)} {SAMPLING_RATE} {digital.shape[1]} {base_time} {day}/{month}/{year}"]
    checksums = digital.astype(np.int64).sum(axis=1) % 65536
    for name, first, checksum in zip(lead_names, digital[:, 0], checksums):
        lines.append(f"{record_name}.dat 16 {MIMIC_ADC_GAIN}(0)/mV 16 0 {int(first)} {int(checksum)} 0 {name}")
    lines += [f"# {comment}" for comment in comments]
    (folder / f"{record_name}.hea").write_text("\n".join(lines) + "\n")
