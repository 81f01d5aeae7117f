"""cmelt-build-dataset: a CSV of paths and labels -> the DatasetDict the evaluation scripts take; real records from
../shared/data, generated challenge records, unreadable ones skipped and counted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from fixtures_downstream import sine_twelve_leads, truncate_file, write_challenge_record


from cmelt.data.csv_dataset import build_csv_dataset, main
from cmelt.data.downstream import downstream_features, label_names
from cmelt.data.ecg_store import encode_ecg
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from cmelt.train_scripts import finetune, linear_probe, zero_shot

CODES_BY_RECORD = ["AF", "NORM", "AF;LBBB", "NORM", "LBBB", "AF", "NORM", "AF;NORM", "LBBB", "NORM", "AF", "LBBB"]


@pytest.fixture(scope="module")
def clinic_csv(tmp_path_factory, shared_data):
    """A clinic's export: 12 generated records in ecgs/ (relative paths), the two real records by absolute path,
    a truncated .mat and a missing file; 7 patients; labels as separated codes and as one column per class."""
    root = tmp_path_factory.mktemp("clinic")
    rows = []
    for index, codes in enumerate(CODES_BY_RECORD):
        frequency = {"AF": 2.0, "NORM": 1.0, "LBBB": 1.5}[codes.split(";")[0]]
        write_challenge_record(root / "ecgs", f"E{index:03d}", sine_twelve_leads(500, 10, frequency, seed=index), 500, ["0"])
        rows.append({"file": f"ecgs/E{index:03d}", "patient": f"P{index % 6}", "dx": codes})
    rows.append({"file": str(shared_data / "wfdb" / "s0010_re"), "patient": "P6", "dx": "NORM"})
    rows.append({"file": str(shared_data / "wfdb" / "100"), "patient": "P6", "dx": "AF"})
    broken = write_challenge_record(root / "ecgs", "BROKEN", sine_twelve_leads(500, 10), 500, ["0"])
    truncate_file(broken.with_suffix(".mat"), 64)
    rows.append({"file": "ecgs/BROKEN", "patient": "P1", "dx": "AF"})
    rows.append({"file": "ecgs/NOT_THERE", "patient": "P2", "dx": "NORM"})
    table = pd.DataFrame(rows)
    for code in ("AF", "LBBB", "NORM"):
        table[code] = [("1" if code in dx.split(";") else "0") for dx in table["dx"]]
    table.to_csv(root / "ecgs.csv", index=False)
    return root / "ecgs.csv"


def test_codes_patients_and_skipped_records(clinic_csv, shared_data, tmp_path):
    dataset_dict, report = build_csv_dataset(clinic_csv, "file", label_column="dx", separator=";",
                                             patient_column="patient", seed=1, cache_dir=str(tmp_path / "cache"))
    assert set(dataset_dict) == {"train", "validation", "test"}
    assert label_names(dataset_dict) == ["AF", "LBBB", "NORM"]
    assert dataset_dict["train"].features == downstream_features(["AF", "LBBB", "NORM"], with_patient_id=True)
    assert sum(len(split) for split in dataset_dict.values()) == 14  # 16 rows, 2 unreadable
    assert report.skipped.total == 2
    patients = {split: set(rows["patient_id"]) for split, rows in dataset_dict.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["train"] & patients["validation"])
    rows = {row["record_id"]: row for split in dataset_dict.values() for row in split}
    real = rows[str(shared_data / "wfdb" / "s0010_re")]
    canonical = CMELTFeatureExtractor()(str(shared_data / "wfdb" / "s0010_re"), return_tensors="np")
    assert np.array_equal(np.asarray(real["ecg"]), encode_ecg(canonical["input_values"][0]))
    assert real["lead_mask"] == [True] * 12 and real["labels"] == [0.0, 0.0, 1.0]
    assert rows[str(shared_data / "wfdb" / "100")]["lead_mask"] == canonical_mask_of_100()
    assert rows[str(clinic_csv.parent / "ecgs" / "E002")]["label_ids"] == [0, 1]


def canonical_mask_of_100() -> list[bool]:
    return [lead in ("II", "V5") for lead in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")]


def test_one_column_per_class_and_clear_errors(clinic_csv, tmp_path):
    by_columns, _ = build_csv_dataset(clinic_csv, "file", ["NORM", "AF", "LBBB"], seed=1, cache_dir=str(tmp_path / "c"))
    assert label_names(by_columns) == ["NORM", "AF", "LBBB"] and "patient_id" not in by_columns["train"].column_names
    by_codes, _ = build_csv_dataset(clinic_csv, "file", label_column="dx", separator=";", seed=1, cache_dir=str(tmp_path / "c"))
    first = {row["record_id"]: row["label_ids"] for row in by_codes["train"]}
    for row in by_columns["train"]:  # same records, same labels by name (column order differs)
        assert sorted(["NORM", "AF", "LBBB"][i] for i in row["label_ids"]) == sorted(["AF", "LBBB", "NORM"][i] for i in first[row["record_id"]])
    with pytest.raises(ValueError, match="no path column 'path'"):
        build_csv_dataset(clinic_csv, label_column="dx")
    with pytest.raises(ValueError, match=r"label columns \['MI'\] are not in the CSV"):
        build_csv_dataset(clinic_csv, "file", ["MI"])
    with pytest.raises(ValueError, match="either class_columns"):
        build_csv_dataset(clinic_csv, "file")


@pytest.mark.slow
def test_evaluation_scripts_take_the_built_dataset(clinic_csv, model_folder, tmp_path):  # noqa: F811
    output = tmp_path / "mine"
    main(["--csv", str(clinic_csv), "--path_column", "file", "--label_column", "dx", "--separator", ";",
          "--patient_column", "patient", "--split_fractions", "0.5", "0.25", "0.25", "--seed", "3",
          "--output", str(output), "--cache_dir", str(tmp_path / "cache")])
    report = json.loads((output / "mine_load_report.json").read_text())
    assert report["skipped"] == 2 and sum(report["by_reason"].values()) == 2
    assert label_names(load_from_disk(str(output))) == ["AF", "LBBB", "NORM"]
    args = ["--model", str(model_folder), "--dataset_path", str(output), "--no_progress", "--no_figures", "--batch_size", "8"]
    zero = zero_shot.main(args + ["--output_dir", str(tmp_path / "zs")])
    assert zero["dataset"] == "mine" and set(zero["per_label"]) <= {"AF", "LBBB", "NORM"}
    assert zero["details"]["label_set"] is None  # user codes: no shipped label set applies, codes are free text
    (probe,) = linear_probe.main(args + ["--output_dir", str(tmp_path / "lp"), "--epochs", "2", "--leads", "I,II"])
    assert probe["leads"] == "I,II" and probe["details"]["leads"] == ["I", "II"]
    tuned = finetune.main(args + ["--output_dir", str(tmp_path / "ft"), "--epochs", "1", "--train_batch_size", "4",
                                  "--device", "cpu"])
    assert tuned["protocol"] == "fine-tune" and tuned["dataset"] == "mine"
