"""The label table: sizes, exact codes, SNOMED groups and the domain-transfer mapping."""

import csv
import json
from pathlib import Path

import pytest

from cmelt.data.labels import DOMAIN_TRANSFER, LABEL_SETS, CMELTLabel, label_codes, snomed_to_class_indices

# weights_abbreviations.csv header of physionetchallenges/evaluation-2021 (DATASET_LAYOUTS.md §6.5).
WEIGHTS_ABBREVIATIONS = (
    "AF,AFL,BBB,Brady,CLBBB|LBBB,CRBBB|RBBB,IAVB,IRBBB,LAD,LAnFB,LPR,LQRSV,LQT,NSIVCB,NSR,PAC|SVPB,PR,PRWP,"
    "PVC|VPB,QAb,RAD,SA,SB,STach,TAb,TInv"
).split(",")
# weights.csv header (same order).
WEIGHTS_SNOMED = (
    "164889003,164890007,6374002,426627000,733534002|164909002,713427006|59118001,270492004,713426002,39732003,"
    "445118002,164947007,251146004,111975006,698252002,426783006,284470004|63593006,10370003,365413008,"
    "427172004|17338001,164917005,47665007,427393009,426177001,427084000,164934002,59931005"
).split(",")


def test_label_set_sizes_match_paper_table_9():
    sizes = {name: len(labels) for name, labels in LABEL_SETS.items()}
    assert sizes == {
        "ptbxl_super": 5, "ptbxl_sub": 23, "ptbxl_form": 19, "ptbxl_rhythm": 12,
        "cpsc2018": 9, "csn": 38, "code_test": 6, "physionet2021": 26,
    }
    for name, labels in LABEL_SETS.items():
        assert all(isinstance(label, CMELTLabel) for label in labels)
        assert len({label.code for label in labels}) == len(labels), name


def test_physionet2021_codes_and_equivalence_classes_are_the_challenge_header():
    assert label_codes("physionet2021") == WEIGHTS_ABBREVIATIONS
    assert ["|".join(label.snomed) for label in LABEL_SETS["physionet2021"]] == WEIGHTS_SNOMED
    mapping = snomed_to_class_indices("physionet2021")
    assert mapping["164909002"] == mapping["733534002"] == [WEIGHTS_ABBREVIATIONS.index("CLBBB|LBBB")]
    assert "164884008" not in mapping  # CPSC's PVC code is unscored in 2021


def test_fixed_code_lists():
    assert label_codes("cpsc2018") == ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]
    assert label_codes("code_test") == ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]
    assert set(label_codes("csn")) >= {"AF", "AFIB", "2AVB1", "STDD", "JEB"} and "SB" not in label_codes("csn")
    csn = {label.code: label.snomed for label in LABEL_SETS["csn"]}
    assert csn["AF"] == ("164890007",) and csn["AFIB"] == ("164889003",) and csn["STTU"] == ("164931005",)
    with pytest.raises(ValueError, match="unknown label set"):
        label_codes("ptbxl")


def test_ptbxl_sets_equal_the_real_statement_table(shared_data):
    with open(shared_data / "ptbxl" / "scp_statements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    code = lambda row: row[""]  # noqa: E731 - the index column has an empty header
    diagnostic = [row for row in rows if row["diagnostic"].startswith("1")]
    assert set(label_codes("ptbxl_super")) == {row["diagnostic_class"] for row in diagnostic}
    assert set(label_codes("ptbxl_sub")) == {row["diagnostic_subclass"] for row in diagnostic}
    assert set(label_codes("ptbxl_form")) == {code(row) for row in rows if row["form"].startswith("1")}
    assert set(label_codes("ptbxl_rhythm")) == {code(row) for row in rows if row["rhythm"].startswith("1")}


def test_domain_transfer_is_tab_11():
    assert set(DOMAIN_TRANSFER) == {("ptbxl_super", "cpsc2018"), ("ptbxl_super", "csn"), ("cpsc2018", "csn")}
    for (source, target), mapping in DOMAIN_TRANSFER.items():
        assert set(mapping) == set(label_codes(source))
        assert all(code in label_codes(target) for targets in mapping.values() for code in targets)
    assert DOMAIN_TRANSFER[("ptbxl_super", "cpsc2018")]["CD"] == ("1AVB", "CRBBB", "CLBBB")
    assert DOMAIN_TRANSFER[("ptbxl_super", "cpsc2018")]["MI"] == ()
    assert set(DOMAIN_TRANSFER[("ptbxl_super", "csn")]["HYP"]) == {"RVH", "LVH"}
    assert set(DOMAIN_TRANSFER[("cpsc2018", "csn")]["STD"]) == {"STE", "STTC", "STTU", "STDD"}
    assert DOMAIN_TRANSFER[("cpsc2018", "csn")]["PAC"] == ("APB",)


def test_zero_shot_descriptions_cover_every_label_set():
    path = Path(__file__).resolve().parents[1] / "modeling_cmelt" / "label_descriptions.json"
    if not path.is_file():
        pytest.skip("modeling_cmelt/label_descriptions.json not present")
    sets = json.loads(path.read_text())["label_sets"]
    for name in LABEL_SETS:
        assert list(sets[name]) == label_codes(name), name
