"""CODE-test: HDF5 tracings at 400 Hz with symmetric zero padding, labels by column name."""

import numpy as np
import pytest
from scipy.signal import resample_poly

from cmelt.data.code_test import load_code_test, main
from cmelt.data.downstream import DownstreamReport, label_names
from cmelt.data.ecg_store import decode_ecg
from fixtures_downstream import real_twelve_leads, write_code_test_tree


def test_code_test_loader(shared_data, tmp_path):
    labels = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 0]])
    root = write_code_test_tree(tmp_path / "code", shared_data, labels, seconds=[10, 7, 10])
    # columns in another order than the label set: labels must be read by name
    gold = root / "annotations" / "gold_standard.csv"
    lines = [line.split(",") for line in gold.read_text().splitlines()]
    order = [5, 4, 3, 2, 1, 0]
    gold.write_text("\n".join(",".join(line[index] for index in order) for line in lines) + "\n")
    report = DownstreamReport()
    dataset = load_code_test(root, cache_dir=tmp_path / "cache", report=report)
    assert list(dataset) == ["test"] and label_names(dataset) == ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]
    rows = list(dataset["test"])
    assert [row["labels"] for row in rows] == labels.astype(float).tolist()
    assert rows[2]["label_ids"] == [0, 4] and rows[0]["label_ids"] == []
    real_400 = real_twelve_leads(shared_data, 400, 10).astype(np.float32)
    expected_7s = resample_poly(real_400[:, :2800], 5, 4, axis=1)  # 7 s at 500 Hz, starting at t = 0
    seven = decode_ecg(np.asarray(rows[1]["ecg"]))
    np.testing.assert_allclose(seven[:, 200:3300], expected_7s[:, 200:3300], atol=2e-3)
    assert np.all(seven[:, 3500:] == 0)
    ten = decode_ecg(np.asarray(rows[0]["ecg"]))
    np.testing.assert_allclose(ten[:, 200:4800], resample_poly(real_400, 5, 4, axis=1)[:, 200:4800], atol=2e-3)
    assert report.skipped.total == 0


def test_row_count_mismatch_and_cli(shared_data, tmp_path, capsys):
    root = write_code_test_tree(tmp_path / "code", shared_data, np.zeros((2, 6)), seconds=[10, 10])
    gold = root / "annotations" / "gold_standard.csv"
    main([str(root), "--cache_dir", str(tmp_path / "cache")])
    output = capsys.readouterr().out
    assert "6 classes" in output and "records" in output
    gold.write_text(gold.read_text() + "0,0,0,0,0,1\n")
    with pytest.raises(ValueError, match="2 tracings but"):
        load_code_test(root, cache_dir=tmp_path / "cache")
