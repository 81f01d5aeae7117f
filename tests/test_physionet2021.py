"""PhysioNet 2021: scored equivalence classes (dx) and the identification protocol (id)."""

import numpy as np
import pytest
from scipy.signal import resample_poly

from cmelt.data.downstream import DownstreamReport, label_names
from cmelt.data.ecg_store import decode_ecg
from cmelt.data.labels import label_codes
from cmelt.data.physionet2021 import load_physionet2021
from cmelt.data.splits import check_patient_leakage
from fixtures_downstream import real_twelve_leads, sine_twelve_leads, write_challenge_record, write_ptbxl_tree

CODES = label_codes("physionet2021")


@pytest.fixture(scope="module")
def challenge_tree(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("challenge-2021")
    training = root / "training"
    real_1000 = real_twelve_leads(shared_data, 1000, 10)
    write_challenge_record(training / "cpsc_2018" / "g1", "A0001", real_twelve_leads(shared_data, 500, 15), 500, ["59118001"], style="2020")
    write_challenge_record(training / "cpsc_2018" / "g1", "A0002", sine_twelve_leads(500, 10), 500, ["164909002", "164884008"])
    write_challenge_record(training / "cpsc_2018" / "g1", "A0003", sine_twelve_leads(500, 10), 500, ["164884008"])
    write_challenge_record(training / "georgia" / "g1", "E00001", sine_twelve_leads(500, 10, seed=1), 500, ["733534002", "426783006"])
    write_challenge_record(training / "ptb" / "g1", "S0001", real_1000, 1000, ["164865005", "426783006"])
    write_challenge_record(training / "ptb-xl" / "g1", "HR00001", sine_twelve_leads(500, 10, seed=2), 500, ["251146004"])
    for number in range(2, 12):
        write_challenge_record(training / "ningbo" / "g1", f"JS{10646 + number:05d}", sine_twelve_leads(500, 10, seed=number), 500, ["426177001"])
    return root, real_1000


def test_dx_labels_use_the_equivalence_classes(challenge_tree, tmp_path):
    root, real_1000 = challenge_tree
    report = DownstreamReport()
    dataset = load_physionet2021(root, "dx", cache_dir=tmp_path, report=report)
    assert label_names(dataset) == CODES
    rows = {row["record_id"]: row for split in dataset.values() for row in split}
    assert len(rows) == 15 and "A0003" not in rows  # only the unscored 164884008: dropped
    named = lambda row: sorted(CODES[index] for index in row["label_ids"])  # noqa: E731
    assert named(rows["A0001"]) == ["CRBBB|RBBB"]
    assert named(rows["A0002"]) == ["CLBBB|LBBB"] and named(rows["E00001"]) == ["CLBBB|LBBB", "NSR"]
    assert named(rows["HR00001"]) == ["LQRSV"] and rows["HR00001"]["source"] == "ptb-xl"
    assert report.codes_outside_label_set == {"164884008": 2, "164865005": 1}
    assert report.dropped["no scored class"] == 1
    # the 1000 Hz PTB record is resampled to 500 Hz
    ptb = decode_ecg(np.asarray(rows["S0001"]["ecg"]))
    expected = resample_poly(np.round(real_1000 * 1000) / 1000, 1, 2, axis=1)  # the stored (1 uV) samples
    np.testing.assert_allclose(ptb[:, 100:4900], expected[:, 100:4900], atol=2e-3)
    assert {split: len(data) for split, data in dataset.items()} == {"train": 11, "validation": 2, "test": 2}  # round(1.5) = 2
    only = load_physionet2021(root, "dx", sources=["georgia"], cache_dir=tmp_path)
    assert sum(len(split) for split in only.values()) == 1


def test_identification_with_ptbxl_test_identities(challenge_tree, shared_data, tmp_path):
    root, _ = challenge_tree
    ptbxl = write_ptbxl_tree(
        tmp_path / "ptbxl", shared_data,
        [dict(ecg_id=1, patient_id=7, scp_codes={"NORM": 100.0}, strat_fold=1),
         dict(ecg_id=2, patient_id=8, scp_codes={"NORM": 100.0}, strat_fold=1),
         dict(ecg_id=3, patient_id=7, scp_codes={"NORM": 100.0}, strat_fold=2, signal=sine_twelve_leads(500, 10)),
         dict(ecg_id=4, patient_id=7, scp_codes={"NORM": 100.0}, strat_fold=2)],
    )
    report = DownstreamReport()
    dataset = load_physionet2021(root, "id", ptbxl_root=ptbxl, id_valid_fraction=0.3, cache_dir=tmp_path / "cache", report=report)
    train, valid, test = dataset["train"], dataset["validation"], dataset["test"]
    assert "labels" not in train.column_names
    # 500 Hz records only, ptb-xl source left out: 14 records (A0001..3, E00001, 10 ningbo) -> 2 segments of 5 s each
    assert report.dropped["sampling rate is not 500 Hz (identification uses 500 Hz records, as Oh et al.)"] == 1
    assert sum(count for reason, count in report.dropped.items() if reason.startswith("source 'ptb-xl'")) == 1
    assert len(set(train["patient_id"])) + len(set(valid["patient_id"])) == 14
    assert set(train["role"]) == {"train"} and len(train) == 2 * len(set(train["patient_id"])) + 1  # A0001: 15 s
    assert sorted(set(train["identity"])) == list(range(len(set(train["patient_id"]))))
    assert len(valid) > 0
    by_identity = {}
    for identity, role, segment in zip(valid["identity"], valid["role"], valid["segment_index"]):
        by_identity.setdefault(identity, []).append((segment, role))
    assert all(sorted(pairs) == [(0, "gallery"), (1, "probe")] for pairs in by_identity.values())
    # PTB-XL: patient 7 has 3 records -> the first two by ecg_id; patient 8 has one -> left out
    assert sorted(zip(test["record_id"], test["role"])) == [("ptbxl:1", "gallery"), ("ptbxl:3", "probe")]
    assert set(test["patient_id"]) == {"ptbxl:7"} and set(test["identity"]) == {0}
    crop = decode_ecg(np.asarray(test[0]["ecg"]))
    assert np.all(crop[:, 2500:] == 0) and np.abs(crop[:, :2500]).max() > 0.1  # a 5-s window
    check_patient_leakage(dataset)
    without_ptbxl = load_physionet2021(root, "id", id_valid_fraction=0.3, cache_dir=tmp_path / "cache")
    assert len(without_ptbxl["test"]) % 2 == 0 and set(without_ptbxl["test"]["role"]) <= {"gallery", "probe"}
    check_patient_leakage(without_ptbxl)
