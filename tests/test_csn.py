"""CSN (ecg-arrhythmia 1.0.0): #Dx mapping to the 38 labels, bad records, and the < N records label rule."""

import numpy as np
import pytest

from cmelt.data.csn import load_csn, read_condition_names
from cmelt.data.downstream import DownstreamReport, label_names
from cmelt.data.ecg_store import decode_ecg
from cmelt.data.labels import label_codes
from fixtures_downstream import csn_record_folder, real_twelve_leads, sine_twelve_leads, write_challenge_record, write_csn_tree


def build_tree(root, shared_data):
    write_csn_tree(root)
    real = real_twelve_leads(shared_data, 500, 10)
    plan = [
        ["164889003", "59118001", "164934002"],  # AFIB RBBB TWC
        ["426783006"],                          # SR
        ["426783006", "426177001"],             # SR + SB (SB is not one of the 38)
        ["164889003,,251238007,"],              # AFIB with an unknown code and stray commas
        ["426177001"],                          # SB only -> no label of the task
        ["426783006"],                          # .mat missing
        ["426783006"],                          # NaN samples
    ]
    for position, codes in enumerate(plan):
        name = f"JS{position + 1:05d}"
        folder = csn_record_folder(root, position * 60)
        digital = None
        if position == 6:
            digital = np.rint(sine_twelve_leads(500, 10) * 1000).astype(np.int16)
            digital[2, 50:60] = -32768
        signal = real if position == 0 else sine_twelve_leads(500, 10, seed=position)
        write_challenge_record(folder, name, signal, 500, codes[0] if len(codes) == 1 else codes, style="2020", digital=digital)
        if position == 5:
            (folder / f"{name}.mat").unlink()
    return real


def test_csn_loader(shared_data, tmp_path):
    real = build_tree(tmp_path / "csn", shared_data)
    assert read_condition_names(tmp_path / "csn" / "ConditionNames_SNOMED-CT.csv")["AFIB"] == "164889003"
    report = DownstreamReport()
    dataset = load_csn(tmp_path / "csn", min_records_per_label=0, cache_dir=tmp_path / "cache", report=report)
    assert label_names(dataset) == label_codes("csn")
    rows = {row["record_id"]: row for split in dataset.values() for row in split}
    assert sorted(rows) == ["JS00001", "JS00002", "JS00003", "JS00004"]
    codes = label_names(dataset)
    assert sorted(codes[index] for index in rows["JS00001"]["label_ids"]) == ["AFIB", "RBBB", "TWC"]
    assert [codes[index] for index in rows["JS00003"]["label_ids"]] == ["SR"]
    assert [codes[index] for index in rows["JS00004"]["label_ids"]] == ["AFIB"]
    assert report.codes_outside_label_set == {"426177001": 2, "251238007": 1}
    assert report.dropped["no label of the task"] == 1
    assert report.skipped.counts == {"signal or header file missing": 1, "NaN/inf samples": 1}
    np.testing.assert_allclose(decode_ecg(np.asarray(rows["JS00001"]["ecg"])), real, atol=6e-4)


def test_labels_with_too_few_records_are_dropped(shared_data, tmp_path):
    build_tree(tmp_path / "csn", shared_data)
    report = DownstreamReport()
    dataset = load_csn(tmp_path / "csn", min_records_per_label=2, cache_dir=tmp_path / "cache", report=report)
    # loaded: AFIB x2, SR x2, RBBB x1, TWC x1, the other 34 labels x0 -> only AFIB and SR stay, in table order
    assert label_names(dataset) == ["SR", "AFIB"]
    rows = {row["record_id"]: row for split in dataset.values() for row in split}
    assert sorted(rows) == ["JS00001", "JS00002", "JS00003", "JS00004"]
    assert rows["JS00001"]["labels"] == [0.0, 1.0] and rows["JS00002"]["label_ids"] == [0]
    assert any(entry.startswith("RBBB (1 records)") for entry in report.dropped_labels)
    assert len(report.dropped_labels) == 36
    with pytest.raises(ValueError, match="at least 3 records"):
        load_csn(tmp_path / "csn", min_records_per_label=3, cache_dir=tmp_path / "cache")
