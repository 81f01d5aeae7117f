"""PTB-XL: label sets and per-row labels on the real metadata, and the full loader on a layout-exact tree."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import wfdb

from cmelt.data.downstream import DownstreamReport, label_names
from cmelt.data.ecg_store import decode_ecg
from cmelt.data.labels import label_codes
from cmelt.data.ptbxl import load_ptbxl, main, ptbxl_label_table
from cmelt.data.splits import check_patient_leakage
from fixtures_downstream import real_twelve_leads, truncate_file, write_ptbxl_tree

TASK_SIZES = {"super": 5, "sub": 23, "form": 19, "rhythm": 12}


@pytest.fixture(scope="module")
def real_ptbxl(shared_data):
    return shared_data / "ptbxl", shared_data / "ptbxl" / "ptbxl_database_subset.csv"


def independent_labels(real_ptbxl, task: str) -> dict[int, set[str]]:
    """Labels per ecg_id with pandas string operations: keys of the dict literal by regex, joined to the table."""
    root, database_csv = real_ptbxl
    database = pd.read_csv(database_csv, usecols=["ecg_id", "scp_codes"])
    statements = pd.read_csv(root / "scp_statements.csv").rename(columns={"Unnamed: 0": "statement"})
    keys = database.assign(statement=database["scp_codes"].str.findall(r"'([^']+)'\s*:")).explode("statement")
    if task in ("super", "sub"):
        column = "diagnostic_class" if task == "super" else "diagnostic_subclass"
        table = statements.loc[statements["diagnostic"] == 1.0, ["statement", column]].rename(columns={column: "label"})
    else:
        table = statements.loc[statements[task] == 1.0, ["statement"]].assign(label=lambda frame: frame["statement"])
    merged = keys.merge(table, on="statement", how="inner")
    return merged.groupby("ecg_id")["label"].apply(set).to_dict()


@pytest.mark.parametrize("task", sorted(TASK_SIZES))
def test_real_metadata_labels_match_an_independent_computation(real_ptbxl, task):
    root, database_csv = real_ptbxl
    table = ptbxl_label_table(root, task, database_csv=database_csv)
    assert len(label_codes(f"ptbxl_{task}")) == TASK_SIZES[task]
    expected = independent_labels(real_ptbxl, task)
    computed = {row.ecg_id: set(row.label_codes) for row in table.itertuples()}
    assert computed == expected  # same rows (unlabelled ones dropped) and same labels per row
    assert set().union(*computed.values()) <= set(label_codes(f"ptbxl_{task}"))
    folds = pd.read_csv(database_csv, usecols=["ecg_id", "strat_fold"]).set_index("ecg_id")["strat_fold"]
    for row in table.itertuples():
        assert row.split == {9: "validation", 10: "test"}.get(folds[row.ecg_id], "train")


def test_zero_likelihood_statements_count(real_ptbxl):
    root, database_csv = real_ptbxl
    table = ptbxl_label_table(root, "form", database_csv=database_csv).set_index("ecg_id")
    # ecg_id 1 is {'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}: LVOLT (form) has likelihood 0 and still counts.
    assert table.loc[1, "label_codes"] == ["LVOLT"]


def test_cli_metadata_only_prints_class_counts(real_ptbxl):
    root, database_csv = real_ptbxl
    result = subprocess.run(
        [sys.executable, "-m", "cmelt.data.ptbxl", str(root), "--task", "rhythm", "--metadata_only", "--database_csv", str(database_csv)],
        capture_output=True, text=True, check=True,
    )
    expected = independent_labels(real_ptbxl, "rhythm")
    folds = pd.read_csv(database_csv, usecols=["ecg_id", "strat_fold"]).set_index("ecg_id")["strat_fold"]
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert "12 classes" in result.stdout
    for code in label_codes("ptbxl_rhythm"):
        test_count = sum(1 for ecg_id, labels in expected.items() if code in labels and folds[ecg_id] == 10)
        total = sum(1 for labels in expected.values() if code in labels)
        assert int(lines[code][2]) == test_count and int(lines[code][3]) == total, code
    assert int(lines["records"][3]) == len(expected)


@pytest.fixture(scope="module")
def ptbxl_tree(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbxl")
    real = real_twelve_leads(shared_data, 500, 10)
    nan_signal = real.copy()
    nan_signal[3, 100:200] = np.nan
    records = [
        dict(ecg_id=1, patient_id=11, scp_codes={"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}, strat_fold=3),
        dict(ecg_id=2, patient_id=11, scp_codes={"IMI": 35.0, "ABQRS": 0.0, "SR": 0.0}, strat_fold=3),
        dict(ecg_id=3, patient_id=12, scp_codes={"CLBBB": 100.0, "AFIB": 0.0}, strat_fold=9,
             signal=real[:, ::-1].copy()),
        dict(ecg_id=4, patient_id=13, scp_codes={"LVH": 50.0, "STACH": 0.0}, strat_fold=10),
        dict(ecg_id=5, patient_id=14, scp_codes={"NORM": 100.0}, strat_fold=1, write_signal=False),
        dict(ecg_id=6, patient_id=15, scp_codes={"NORM": 100.0}, strat_fold=2, signal=nan_signal),
        dict(ecg_id=7, patient_id=16, scp_codes={"NORM": 100.0}, strat_fold=4),
        dict(ecg_id=1002, patient_id=17, scp_codes={"SR": 0.0}, strat_fold=5),  # no diagnostic label
    ]
    write_ptbxl_tree(root, shared_data, records)
    truncate_file(root / "records500" / "00000" / "00007_hr.dat", 60_000)
    database = root / "ptbxl_database.csv"
    database.write_text(database.read_text() + database.read_text().splitlines()[2].replace("2,", "8,", 1).replace("{", "{oops", 1) + "\n")
    return root, real


def test_loader_on_layout_exact_tree(ptbxl_tree, tmp_path):
    root, real = ptbxl_tree
    report = DownstreamReport()
    dataset = load_ptbxl(root, "super", cache_dir=tmp_path, report=report, output_dir=tmp_path / "out")
    assert label_names(dataset) == ["NORM", "MI", "STTC", "CD", "HYP"]
    assert {split: sorted(dataset[split]["record_id"]) for split in dataset} == {
        "train": ["1", "2"], "validation": ["3"], "test": ["4"]
    }
    assert report.skipped.counts == {
        "signal or header file missing": 1, "NaN/inf samples": 1, "record shorter than its header claims": 1,
        "unparsable scp_codes": 1,
    }
    assert report.dropped["no label of the task"] == 1
    assert (tmp_path / "out" / "ptb_xl_super_load_report.json").is_file()
    rows = {row["record_id"]: row for row in dataset["train"]}
    assert rows["2"]["label_ids"] == [1] and rows["2"]["labels"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert rows["1"]["patient_id"] == "11" and all(rows["1"]["lead_mask"])
    stored, _ = wfdb.rdsamp(str(root / "records500" / "00000" / "00001_hr"))
    np.testing.assert_allclose(decode_ecg(np.asarray(rows["1"]["ecg"])), stored.T, atol=1e-3 + 1e-6)
    check_patient_leakage(dataset)
    sub = load_ptbxl(root, "sub", cache_dir=tmp_path)
    assert label_names(sub)[17] == "CLBBB" and sub["validation"][0]["label_ids"] == [17]


def test_cli_with_signals_prints_class_counts(ptbxl_tree, tmp_path, capsys):
    root, _ = ptbxl_tree
    main([str(root), "--task", "rhythm", "--cache_dir", str(tmp_path)])
    output = capsys.readouterr().out
    table = {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.strip()}
    assert "12 classes" in output
    # train 00001, 00002, 01002 (SR); validation 00003 (AFIB); test 00004 (STACH); the bad ones skipped
    assert table["records"] == ["3", "1", "1", "5"]
    assert table["SR"] == ["3", "0", "0", "3"] and table["AFIB"] == ["0", "1", "0", "1"] and table["STACH"][-1] == "1"


def test_parallel_loading_gives_the_same_rows_and_report(ptbxl_tree, tmp_path):
    root, _ = ptbxl_tree
    serial_report, parallel_report = DownstreamReport(), DownstreamReport()
    serial = load_ptbxl(root, "super", cache_dir=tmp_path / "serial", report=serial_report)
    parallel = load_ptbxl(root, "super", cache_dir=tmp_path / "parallel", report=parallel_report, num_proc=2)
    assert parallel["train"]["record_id"] == serial["train"]["record_id"]
    assert np.array_equal(np.asarray(parallel["train"][0]["ecg"]), np.asarray(serial["train"][0]["ecg"]))
    assert parallel_report.skipped.counts == serial_report.skipped.counts
