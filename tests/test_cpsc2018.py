"""CPSC2018 in both layouts: original REFERENCE.csv + struct .mat, and the challenge .hea + .mat release."""

import numpy as np
import pytest

from cmelt.data.cpsc2018 import load_cpsc2018
from cmelt.data.downstream import DownstreamReport, label_names
from cmelt.data.ecg_store import decode_ecg
from fixtures_downstream import real_twelve_leads, sine_twelve_leads, truncate_file, write_challenge_record, write_cpsc_original_tree

CODES = ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]


def all_rows(dataset):
    return {row["record_id"]: row for split in dataset.values() for row in split}


def test_original_layout(shared_data, tmp_path):
    real = real_twelve_leads(shared_data, 500, 12)
    with_nan = sine_twelve_leads(500, 8)
    with_nan[0, 10] = np.nan
    records = [
        dict(record_id="A0001", labels=[5], signal=real),
        dict(record_id="A0002", labels=[1], signal=sine_twelve_leads(500, 8, seed=1)),
        dict(record_id="A0003", labels=[9, 5, 6], signal=sine_twelve_leads(500, 30, seed=2)),
        dict(record_id="A0004", labels=[10, 7], signal=sine_twelve_leads(500, 10, seed=3)),
        dict(record_id="A0005", labels=[10], signal=sine_twelve_leads(500, 10, seed=4)),
        dict(record_id="A0006", labels=[2], raw_bytes=b"this is not a MATLAB file"),
        dict(record_id="A0007", labels=[3], write_signal=False),
        dict(record_id="A0008", labels=[8], signal=with_nan),
    ]
    root = write_cpsc_original_tree(tmp_path / "cpsc", records)
    report = DownstreamReport()
    dataset = load_cpsc2018(root, cache_dir=tmp_path / "cache", report=report)
    assert label_names(dataset) == CODES
    rows = all_rows(dataset)
    assert sorted(rows) == ["A0001", "A0002", "A0003", "A0004"]
    assert [CODES[index] for index in rows["A0003"]["label_ids"]] == ["STE", "CRBBB", "PAC"] or sorted(
        CODES[index] for index in rows["A0003"]["label_ids"]
    ) == ["CRBBB", "PAC", "STE"]
    assert [CODES[index] for index in rows["A0004"]["label_ids"]] == ["VPC"]  # label 10 counted, VPC kept
    assert rows["A0001"]["labels"][CODES.index("CRBBB")] == 1.0 and sum(rows["A0001"]["labels"]) == 1.0
    assert report.codes_outside_label_set["REFERENCE label 10"] == 2
    assert report.dropped["no label of the task"] == 1
    assert report.skipped.counts == {"unreadable .mat file": 1, "signal or header file missing": 1, "NaN/inf samples": 1}
    np.testing.assert_allclose(decode_ecg(np.asarray(rows["A0001"]["ecg"])), real[:, :5000], atol=6e-4)
    short = decode_ecg(np.asarray(rows["A0002"]["ecg"]))
    assert np.all(short[:, 4000:] == 0) and np.abs(short[:, :4000]).max() > 0.2  # 8 s right-padded


def test_challenge_layout_with_unknown_codes_and_bad_files(shared_data, tmp_path):
    folder = tmp_path / "cpsc_2018" / "g1"
    real = real_twelve_leads(shared_data, 500, 15)
    write_challenge_record(folder, "A0001", real, 500, ["59118001"], style="2020")
    write_challenge_record(folder, "A0002", sine_twelve_leads(500, 10), 500, ["164889003", "999999999"])
    write_challenge_record(folder, "A0003", sine_twelve_leads(500, 10), 500, ["999999999"])
    write_challenge_record(folder, "A0004", sine_twelve_leads(500, 10), 500, ["426783006"])
    truncate_file(folder / "A0004.mat", 24 + 12 * 2 * 3000)
    write_challenge_record(folder, "A0005", sine_twelve_leads(500, 10), 500, ["164884008", "429622005"])
    write_challenge_record(folder, "A0006", sine_twelve_leads(500, 10), 500, ["270492004"])
    (folder / "A0006.mat").unlink()
    report = DownstreamReport()
    dataset = load_cpsc2018(tmp_path / "cpsc_2018", cache_dir=tmp_path / "cache", report=report)
    rows = all_rows(dataset)
    assert sorted(rows) == ["A0001", "A0002", "A0005"]
    assert [CODES[index] for index in rows["A0002"]["label_ids"]] == ["AFIB"]
    assert sorted(CODES[index] for index in rows["A0005"]["label_ids"]) == ["STD", "VPC"]
    assert report.codes_outside_label_set["999999999"] == 2
    assert report.dropped["no label of the task"] == 1
    assert report.skipped.counts == {"record shorter than its header claims": 1, "signal or header file missing": 1}
    np.testing.assert_allclose(decode_ecg(np.asarray(rows["A0001"]["ecg"])), real[:, :5000], atol=6e-4)


def test_split_is_seeded_70_10_20(tmp_path):
    folder = tmp_path / "g1"
    for number in range(20):
        write_challenge_record(folder, f"A{number + 1:04d}", sine_twelve_leads(500, 2, seed=number), 500, ["426783006"])
    first = load_cpsc2018(tmp_path, cache_dir=tmp_path / "cache", seed=3)
    again = load_cpsc2018(tmp_path, cache_dir=tmp_path / "cache2", seed=3)
    other = load_cpsc2018(tmp_path, cache_dir=tmp_path / "cache", seed=4)
    assert {split: len(data) for split, data in first.items()} == {"train": 14, "validation": 2, "test": 4}
    assert first["test"]["record_id"] == again["test"]["record_id"]
    assert first["test"]["record_id"] != other["test"]["record_id"]
    with pytest.raises(ValueError, match="fractions"):
        load_cpsc2018(tmp_path, split_fractions=(0.5, 0.1, 0.1), cache_dir=tmp_path / "cache")
