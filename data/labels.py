"""Every downstream label set of the repository, in one table.

`LABEL_SETS[name]` lists the classes of a task in the order of the paper (C-MELT Tab. 9 / MERL), which is also
the column order of the `labels` multi-hot vector the loaders write. Each class carries:

- `code`: the label as the task names it (PTB-XL SCP statement or aggregate, CPSC / CSN acronym, CODE column
  name, PhysioNet 2021 `weights_abbreviations.csv` header cell verbatim, e.g. "CLBBB|LBBB");
- `name`: a plain-English name (zero-shot prompts start from it);
- `snomed`: the SNOMED CT codes that count as this class in `#Dx` header lines (empty for PTB-XL, whose labels are
  SCP-ECG statements). For PhysioNet 2021 these are the challenge's equivalence classes; for CPSC2018 the first
  code is the one the challenge release writes for that class, the others are the codes the challenge scores as
  the same diagnosis.

`DOMAIN_TRANSFER[(source, target)]` maps each source label to the target labels it stands for (paper Tab. 11).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CMELTLabel:
    """One class of a downstream task."""

    code: str
    name: str
    snomed: tuple[str, ...] = ()


def _labels(*rows: tuple) -> list[CMELTLabel]:
    return [CMELTLabel(row[0], row[1], tuple(row[2:])) for row in rows]


LABEL_SETS: dict[str, list[CMELTLabel]] = {
    "ptbxl_super": _labels(
        ("NORM", "normal ECG"),
        ("MI", "myocardial infarction"),
        ("STTC", "ST/T change"),
        ("CD", "conduction disturbance"),
        ("HYP", "hypertrophy"),
    ),
    "ptbxl_sub": _labels(
        ("AMI", "anterior myocardial infarction"),
        ("LAFB/LPFB", "left anterior or posterior fascicular block"),
        ("LVH", "left ventricular hypertrophy"),
        ("STTC", "ST-T changes"),
        ("IMI", "inferior myocardial infarction"),
        ("SEHYP", "septal hypertrophy"),
        ("CRBBB", "complete right bundle branch block"),
        ("WPW", "Wolff-Parkinson-White syndrome"),
        ("LAO/LAE", "left atrial overload or enlargement"),
        ("NORM", "normal ECG"),
        ("ISC_", "non-specific ischemic ST-T changes"),
        ("_AVB", "atrioventricular block"),
        ("RAO/RAE", "right atrial overload or enlargement"),
        ("LMI", "lateral myocardial infarction"),
        ("ISCI", "ischemic ST-T changes in inferior leads"),
        ("ISCA", "ischemic ST-T changes in anterior leads"),
        ("NST_", "non-specific ST changes"),
        ("CLBBB", "complete left bundle branch block"),
        ("ILBBB", "incomplete left bundle branch block"),
        ("IRBBB", "incomplete right bundle branch block"),
        ("PMI", "posterior myocardial infarction"),
        ("RVH", "right ventricular hypertrophy"),
        ("IVCD", "non-specific intraventricular conduction disturbance"),
    ),
    "ptbxl_form": _labels(
        ("PAC", "atrial premature complex"),
        ("DIG", "digitalis effect"),
        ("HVOLT", "high QRS voltage"),
        ("STD_", "non-specific ST depression"),
        ("LPR", "prolonged PR interval"),
        ("QWAVE", "Q waves present"),
        ("VCLVH", "voltage criteria for left ventricular hypertrophy"),
        ("NDT", "non-diagnostic T abnormalities"),
        ("TAB_", "T-wave abnormality"),
        ("LOWT", "low amplitude T-waves"),
        ("ABQRS", "abnormal QRS"),
        ("LNGQT", "long QT interval"),
        ("PRC(S)", "premature complexes"),
        ("NT_", "non-specific T-wave changes"),
        ("STE_", "non-specific ST elevation"),
        ("NST_", "non-specific ST changes"),
        ("PVC", "ventricular premature complex"),
        ("INVT", "inverted T-waves"),
        ("LVOLT", "low QRS voltages in the frontal and horizontal leads"),
    ),
    "ptbxl_rhythm": _labels(
        ("SVARR", "supraventricular arrhythmia"),
        ("BIGU", "bigeminal pattern"),
        ("STACH", "sinus tachycardia"),
        ("SARRH", "sinus arrhythmia"),
        ("SBRAD", "sinus bradycardia"),
        ("TRIGU", "trigeminal pattern"),
        ("AFIB", "atrial fibrillation"),
        ("SR", "sinus rhythm"),
        ("SVTAC", "supraventricular tachycardia"),
        ("PSVT", "paroxysmal supraventricular tachycardia"),
        ("AFLT", "atrial flutter"),
        ("PACE", "normal functioning artificial pacemaker"),
    ),
    "cpsc2018": _labels(
        ("AFIB", "atrial fibrillation", "164889003"),
        ("VPC", "premature ventricular contraction", "164884008", "427172004", "17338001"),
        ("NORM", "normal ECG (sinus rhythm)", "426783006"),
        ("1AVB", "first-degree atrioventricular block", "270492004"),
        ("CRBBB", "right bundle branch block", "59118001", "713427006"),
        ("STE", "ST-segment elevation", "164931005"),
        ("PAC", "premature atrial contraction", "284470004", "63593006"),
        ("CLBBB", "left bundle branch block", "164909002", "733534002"),
        ("STD", "ST-segment depression", "429622005"),
    ),
    # Codes as in the dataset's ConditionNames_SNOMED-CT.csv (note: its "AF" is atrial flutter, "AFIB" atrial
    # fibrillation, "STE" ST extension 164930006 and "STTU" ST tilt up 164931005).
    "csn": _labels(
        ("AQW", "abnormal Q wave", "164917005"),
        ("UW", "U wave", "164937009"),
        ("SR", "sinus rhythm", "426783006"),
        ("WPW", "Wolff-Parkinson-White pattern", "74390002"),
        ("2AVB", "second-degree atrioventricular block", "195042002"),
        ("AT", "atrial tachycardia", "713422000"),
        ("VB", "ventricular bigeminy", "11157007"),
        ("ARS", "right axis deviation", "47665007"),
        ("STTC", "ST-T change", "428750005"),
        ("SA", "sinus arrhythmia", "427393009"),
        ("STE", "ST extension", "164930006"),
        ("VPB", "ventricular premature beat", "17338001"),
        ("TWO", "T wave inversion", "59931005"),
        ("STTU", "ST tilt up", "164931005"),
        ("ALS", "left axis deviation", "39732003"),
        ("APB", "atrial premature beat", "284470004"),
        ("2AVB1", "second-degree atrioventricular block type I", "54016002"),
        ("PRIE", "PR interval prolongation", "164947007"),
        ("CCR", "counterclockwise rotation", "251199005"),
        ("CR", "clockwise rotation", "251198002"),
        ("AF", "atrial flutter", "164890007"),
        ("AVB", "atrioventricular block", "233917008"),
        ("QTIE", "QT interval prolongation", "111975006"),
        ("LBBB", "left bundle branch block", "164909002"),
        ("VEB", "ventricular escape beat", "75532003"),
        ("SVT", "supraventricular tachycardia", "426761007"),
        ("RBBB", "right bundle branch block", "59118001"),
        ("1AVB", "first-degree atrioventricular block", "270492004"),
        ("STDD", "ST depression", "429622005"),
        ("MI", "myocardial infarction", "164865005"),
        ("AFIB", "atrial fibrillation", "164889003"),
        ("TWC", "T wave change", "164934002"),
        ("PWC", "P wave change", "164912004"),
        ("ERV", "early repolarization of the ventricles", "428417006"),
        ("RVH", "right ventricular hypertrophy", "89792004"),
        ("LVH", "left ventricular hypertrophy", "164873001"),
        ("ST", "sinus tachycardia", "427084000"),
        ("JEB", "junctional escape beat", "426995002"),
    ),
    "code_test": _labels(
        ("1dAVb", "first-degree atrioventricular block", "270492004"),
        ("RBBB", "right bundle branch block", "59118001", "713427006"),
        ("LBBB", "left bundle branch block", "164909002", "733534002"),
        ("SB", "sinus bradycardia", "426177001"),
        ("AF", "atrial fibrillation", "164889003"),
        ("ST", "sinus tachycardia", "427084000"),
    ),
    # Order and codes of the challenge's weights.csv / weights_abbreviations.csv header.
    "physionet2021": _labels(
        ("AF", "atrial fibrillation", "164889003"),
        ("AFL", "atrial flutter", "164890007"),
        ("BBB", "bundle branch block", "6374002"),
        ("Brady", "bradycardia", "426627000"),
        ("CLBBB|LBBB", "left bundle branch block", "733534002", "164909002"),
        ("CRBBB|RBBB", "right bundle branch block", "713427006", "59118001"),
        ("IAVB", "first-degree atrioventricular block", "270492004"),
        ("IRBBB", "incomplete right bundle branch block", "713426002"),
        ("LAD", "left axis deviation", "39732003"),
        ("LAnFB", "left anterior fascicular block", "445118002"),
        ("LPR", "prolonged PR interval", "164947007"),
        ("LQRSV", "low QRS voltages", "251146004"),
        ("LQT", "prolonged QT interval", "111975006"),
        ("NSIVCB", "nonspecific intraventricular conduction disorder", "698252002"),
        ("NSR", "sinus rhythm", "426783006"),
        ("PAC|SVPB", "premature atrial contraction", "284470004", "63593006"),
        ("PR", "pacing rhythm", "10370003"),
        ("PRWP", "poor R wave progression", "365413008"),
        ("PVC|VPB", "premature ventricular contraction", "427172004", "17338001"),
        ("QAb", "abnormal Q wave", "164917005"),
        ("RAD", "right axis deviation", "47665007"),
        ("SA", "sinus arrhythmia", "427393009"),
        ("SB", "sinus bradycardia", "426177001"),
        ("STach", "sinus tachycardia", "427084000"),
        ("TAb", "T wave abnormal", "164934002"),
        ("TInv", "T wave inversion", "59931005"),
    ),
}

# (source label set, target label set) -> source label -> target labels it is scored against (paper Tab. 11).
# An empty tuple means the source label has no counterpart in the target set.
DOMAIN_TRANSFER: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("ptbxl_super", "cpsc2018"): {
        "NORM": ("NORM",),
        "MI": (),
        "STTC": ("STE", "STD"),
        "CD": ("1AVB", "CRBBB", "CLBBB"),
        "HYP": (),
    },
    ("ptbxl_super", "csn"): {
        "NORM": ("SR",),
        "MI": ("MI",),
        "STTC": ("STTC", "STE", "TWO", "STTU", "QTIE", "TWC"),
        "CD": ("2AVB", "2AVB1", "1AVB", "AVB", "LBBB", "RBBB", "STDD"),
        "HYP": ("RVH", "LVH"),
    },
    ("cpsc2018", "csn"): {
        "AFIB": ("AFIB",),
        "VPC": ("VPB",),
        "NORM": ("SR",),
        "1AVB": ("1AVB",),
        "CRBBB": ("RBBB",),
        "STE": ("STE",),
        "PAC": ("APB",),
        "CLBBB": ("LBBB",),
        "STD": ("STE", "STTC", "STTU", "STDD"),
    },
}


def label_codes(label_set: str) -> list[str]:
    """The class codes of `label_set` in column order."""
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; expected one of {sorted(LABEL_SETS)}")
    return [label.code for label in LABEL_SETS[label_set]]


def snomed_to_class_indices(label_set: str) -> dict[str, list[int]]:
    """SNOMED CT code -> indices of the classes of `label_set` it counts for (a code may count for several)."""
    mapping: dict[str, list[int]] = {}
    for index, label in enumerate(LABEL_SETS[label_set]):
        for code in label.snomed:
            mapping.setdefault(code, []).append(index)
    return mapping


# MERL's label sets: the tasks whose rows and CKEPE prompts MERL published (C-MELT Tab. 2 / 3).
MERL_LABEL_SETS = ("ptbxl_super", "ptbxl_sub", "ptbxl_form", "ptbxl_rhythm", "cpsc2018", "csn")
MERL_PROMPTS_SOURCE = (
    "MERL's CKEPE prompts (zeroshot/CKEPE_prompt.json of cheliu-computation/MERL-ICML2024 at commit "
    "38799b7deb1c9958f41badcfacc6a95192787cc4), keyed by this repository's class codes"
)


def merl_prompt_key(code: str, prompts: dict) -> str:
    """MERL's prompt key of one of our codes, by name (MERL writes PTB-XL codes without underscores)."""
    for candidate in (code, code.strip("_")):
        if candidate in prompts:
            return candidate
    raise ValueError(f"class {code!r} has no CKEPE prompt (keys: {sorted(prompts)})")


def merl_prompt_sets(ckepe_prompts: dict[str, str]) -> dict[str, dict[str, str]]:
    """{label set: {our code: CKEPE prompt}} for MERL's six tasks, matched by name, never by position."""
    return {
        label_set: {code: ckepe_prompts[merl_prompt_key(code, ckepe_prompts)] for code in label_codes(label_set)}
        for label_set in MERL_LABEL_SETS
    }
