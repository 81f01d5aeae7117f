"""modeling_cmelt/label_descriptions.json: one clinical description per label of every downstream label set."""

import csv
import json
import re
from pathlib import Path

import pytest

DESCRIPTIONS_PATH = Path(__file__).resolve().parents[1] / "modeling_cmelt" / "label_descriptions.json"

# Label sets as typed in REFERENCE.md §2 (PhysioNet 2021: weights_abbreviations.csv header).
EXPECTED_CODES = {
    "ptbxl_super": ["NORM", "MI", "STTC", "CD", "HYP"],
    "ptbxl_sub": ["AMI", "LAFB/LPFB", "LVH", "STTC", "IMI", "SEHYP", "CRBBB", "WPW", "LAO/LAE", "NORM", "ISC_",
                  "_AVB", "RAO/RAE", "LMI", "ISCI", "ISCA", "NST_", "CLBBB", "ILBBB", "IRBBB", "PMI", "RVH", "IVCD"],
    "ptbxl_form": ["PAC", "DIG", "HVOLT", "STD_", "LPR", "QWAVE", "VCLVH", "NDT", "TAB_", "LOWT", "ABQRS", "LNGQT",
                   "PRC(S)", "NT_", "STE_", "NST_", "PVC", "INVT", "LVOLT"],
    "ptbxl_rhythm": ["SVARR", "BIGU", "STACH", "SARRH", "SBRAD", "TRIGU", "AFIB", "SR", "SVTAC", "PSVT", "AFLT",
                     "PACE"],
    "cpsc2018": ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"],
    "csn": ["AQW", "UW", "SR", "WPW", "2AVB", "AT", "VB", "ARS", "STTC", "SA", "STE", "VPB", "TWO", "STTU", "ALS",
            "APB", "2AVB1", "PRIE", "CCR", "CR", "AF", "AVB", "QTIE", "LBBB", "VEB", "SVT", "RBBB", "1AVB", "STDD",
            "MI", "AFIB", "TWC", "PWC", "ERV", "RVH", "LVH", "ST", "JEB"],
    "code_test": ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"],
    "physionet2021": ["AF", "AFL", "BBB", "Brady", "CLBBB|LBBB", "CRBBB|RBBB", "IAVB", "IRBBB", "LAD", "LAnFB", "LPR",
                      "LQRSV", "LQT", "NSIVCB", "NSR", "PAC|SVPB", "PR", "PRWP", "PVC|VPB", "QAb", "RAD", "SA", "SB",
                      "STach", "TAb", "TInv"],
}
FORBIDDEN_WORDS = re.compile(r"\b(should|recommend\w*|treat\w*|consult\w*|requir\w*|therapy|management)\b", re.I)


@pytest.fixture(scope="module")
def label_sets() -> dict:
    document = json.loads(DESCRIPTIONS_PATH.read_text(encoding="utf-8"))
    assert document["version"] == 1
    return document["label_sets"]


def all_descriptions(label_sets):
    return [(set_name, code, text) for set_name, codes in label_sets.items() for code, text in codes.items()]


def test_every_code_of_every_label_set_is_described(label_sets):
    assert set(label_sets) == set(EXPECTED_CODES)
    for set_name, codes in EXPECTED_CODES.items():
        assert len(codes) == len(set(codes))
        assert set(label_sets[set_name]) == set(codes), set_name
    assert {name: len(codes) for name, codes in label_sets.items()} == {
        "ptbxl_super": 5, "ptbxl_sub": 23, "ptbxl_form": 19, "ptbxl_rhythm": 12, "cpsc2018": 9, "csn": 38,
        "code_test": 6, "physionet2021": 26}


def test_descriptions_start_with_readable_name_then_one_or_two_sentences(label_sets):
    for set_name, code, text in all_descriptions(label_sets):
        marker = f" ({code}). "
        assert marker in text, f"{set_name}/{code}: expected 'Readable Name ({code}). ...', got {text!r}"
        name, body = text.split(marker, 1)
        assert name and (name[0].isupper() or name[0].isdigit()) and name != code, f"{set_name}/{code}: {name!r}"
        assert len(name.split()) >= 2 or len(name) > len(code), f"{set_name}/{code}: name {name!r} is not spelled out"
        assert body.strip() and body[0].isupper() and body.endswith("."), f"{set_name}/{code}: {body!r}"
        sentences = [part for part in re.split(r"(?<=[.!?])\s+", body.strip()) if part]
        assert 1 <= len(sentences) <= 2, f"{set_name}/{code}: {len(sentences)} sentences"
        assert not FORBIDDEN_WORDS.search(text), f"{set_name}/{code}: recommendation wording in {text!r}"


def test_known_meanings_of_ambiguous_codes(label_sets):
    csn, sub = label_sets["csn"], label_sets["ptbxl_sub"]
    assert csn["AF"].startswith("Atrial Flutter") and csn["AFIB"].startswith("Atrial Fibrillation")
    assert csn["ST"].startswith("Sinus Tachycardia")
    assert "elevation" in csn["STTU"] and "depression" in csn["STDD"] and "inversion" in csn["TWO"]
    assert "Counterclockwise" in csn["CCR"] and csn["CR"].startswith("Clockwise")
    assert "escape" in csn["VEB"].lower() and "escape" in csn["JEB"].lower()
    assert sub["ISC_"].startswith("Non-Specific Ischemic") and sub["_AVB"].startswith("Atrioventricular Block")
    assert label_sets["code_test"]["AF"].startswith("Atrial Fibrillation")
    assert label_sets["physionet2021"]["AFL"].startswith("Atrial Flutter")


def test_ptbxl_sets_match_scp_statements(shared_data, label_sets):
    with open(shared_data / "ptbxl" / "scp_statements.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    code_column = next(iter(rows[0]))  # the unnamed index column holds the SCP code
    derived = {
        "ptbxl_super": {row["diagnostic_class"] for row in rows if row["diagnostic_class"]},
        "ptbxl_sub": {row["diagnostic_subclass"] for row in rows if row["diagnostic_subclass"]},
        "ptbxl_form": {row[code_column] for row in rows if row["form"] in ("1", "1.0")},
        "ptbxl_rhythm": {row[code_column] for row in rows if row["rhythm"] in ("1", "1.0")},
    }
    for set_name, codes in derived.items():
        assert set(label_sets[set_name]) == codes, set_name
