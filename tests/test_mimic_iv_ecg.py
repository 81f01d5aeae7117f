"""MIMIC-IV-ECG: the synthetic tree's exact layout, and the converter on it plus real PTB records written into it."""

import csv
import json
import shutil

import numpy as np
import pytest

from cmelt.data.ecg_store import ECG_FEATURE, SKIP_MISSING, SKIP_NON_FINITE, decode_ecg
from cmelt.data.mimic_iv_ecg import SKIP_NO_REPORT, CMELTMIMICLazyDataset, convert_mimic_iv_ecg
from cmelt.data.synthetic import (
    DEMO_LABELS,
    MIMIC_LEAD_ORDER,
    MIMIC_MEASUREMENT_COLUMNS,
    mimic_record_path,
    write_mimic_tree,
)
from cmelt.data.mimic_iv_ecg import merge_reports

CANONICAL = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
REAL_SUBJECT = 19999991
REAL_STUDIES = {"good": 49999001, "nan": 49999002, "no_report": 49999003, "missing_file": 49999004}
REAL_REPORT = ["Sinus rhythm", "", "Inferior infarct - age undetermined", "", "Abnormal ECG"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def real_ptb_signal(shared_data):
    """s0010_re's 12 standard leads (1000 Hz), resampled to 500 Hz and cut to 10 s, in MIMIC's lead order (mV)."""
    import wfdb
    from scipy.signal import resample_poly

    signal, fields = wfdb.rdsamp(str(shared_data / "wfdb" / "s0010_re"))
    names = [name.lower() for name in fields["sig_name"]]
    columns = [names.index(lead.lower()) for lead in MIMIC_LEAD_ORDER]
    return resample_poly(signal[:, columns], 1, 2, axis=0)[:5000]


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory, shared_data):
    import wfdb

    root = write_mimic_tree(tmp_path_factory.mktemp("mimic") / "mimic-iv-ecg", num_subjects=8, seed=2)
    signal = real_ptb_signal(shared_data)
    for kind, study in REAL_STUDIES.items():
        relative = mimic_record_path(REAL_SUBJECT, study)
        record_dir = root / relative.rsplit("/", 1)[0]
        record_dir.mkdir(parents=True, exist_ok=True)
        digital = np.rint(signal * 200).astype(np.int16)
        if kind == "nan":
            digital[1000:1200, 3] = -32768  # WFDB's "no sample": read back as NaN
        if kind != "missing_file":
            wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=list(MIMIC_LEAD_ORDER), d_signal=digital,
                        fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(record_dir))
        with open(root / "record_list.csv", "a", newline="") as handle:
            csv.writer(handle).writerow((REAL_SUBJECT, study, study, "2150-01-01 10:00:00", relative))
        reports = [""] * 18 if kind == "no_report" else REAL_REPORT + [""] * (18 - len(REAL_REPORT))
        with open(root / "machine_measurements.csv", "a", newline="") as handle:
            csv.writer(handle).writerow((REAL_SUBJECT, study, 6000001, "2150-01-01 10:00:00", *reports,
                                         "0.005-150 Hz", "60 Hz notch Baseline filter", 800, 40, 140, 180, 270, 560,
                                         50, 60, 40))
    return root


def test_synthetic_tree_has_the_mimic_layout(mimic_root):
    records = read_csv(mimic_root / "record_list.csv")
    assert records[0] == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    measurements = read_csv(mimic_root / "machine_measurements.csv")
    assert tuple(measurements[0]) == MIMIC_MEASUREMENT_COLUMNS and len(measurements[0]) == 33
    assert all(len(row) == 33 for row in measurements)
    labels = read_csv(mimic_root / "demo_labels.csv")
    assert labels[0] == ["study_id", *DEMO_LABELS] and len(labels) == len(records) - len(REAL_STUDIES)
    synthetic = [row for row in records[1:] if int(row[0]) != REAL_SUBJECT]
    assert len({row[0] for row in synthetic}) == 8 and len(synthetic) > 8
    for subject_id, study_id, file_name, ecg_time, path in synthetic:
        assert len(subject_id) == 8 and file_name == study_id
        assert path == f"files/p{subject_id[:4]}/p{subject_id}/s{study_id}/{study_id}"
        assert (mimic_root / f"{path}.dat").stat().st_size == 120_000
        assert len(ecg_time) == 19 and ecg_time[4] == "-" and ecg_time[13] == ":"
    header = (mimic_root / f"{synthetic[0][4]}.hea").read_text().splitlines()
    assert header[0].split()[1:4] == ["12", "500", "5000"]
    signal_lines = [line.split() for line in header[1:13]]
    assert [line[-1] for line in signal_lines] == list(MIMIC_LEAD_ORDER)
    assert all(line[1] == "16" and line[2].startswith("200") and line[2].endswith("/mV") for line in signal_lines)
    report_cells = [row[4:22] for row in measurements[1:]]
    assert any("" in cells[: max(i for i, c in enumerate(cells) if c) + 1] for cells in report_cells)  # gaps
    no_p_wave = {row[0] for row in labels[1:] if "1" in (row[1 + DEMO_LABELS.index("AFIB")], row[1 + DEMO_LABELS.index("AFLT")])}
    p_onset = measurements[0].index("p_onset")
    for row in measurements[1:]:  # AF / flutter have no P wave to measure: MIMIC's 29999 sentinel
        if int(row[0]) != REAL_SUBJECT:
            assert (row[p_onset] == "29999") == (row[1] in no_p_wave)


@pytest.fixture(scope="module")
def converted(mimic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "corpus"
    dataset = convert_mimic_iv_ecg(mimic_root, out, num_proc=1, valid_fraction=0.3, seed=0, shard_size=4)
    return out, dataset


def test_conversion_rows_reports_and_drop_counts(mimic_root, converted):
    out, dataset = converted
    total = len(read_csv(mimic_root / "record_list.csv")) - 1
    assert sum(len(dataset[split]) for split in ("train", "validation")) == total - 3
    summary = json.loads((out / "skipped.json").read_text())
    assert summary["by_reason"] == {SKIP_NO_REPORT: 1, SKIP_NON_FINITE: 1, SKIP_MISSING: 1}  # one vocabulary: a missing file says so
    assert set(summary["examples"][SKIP_NON_FINITE]) == {str(REAL_STUDIES["nan"])}

    rows = {row["study_id"]: row for split in dataset.values() for row in split.with_format("numpy")}
    real = rows[REAL_STUDIES["good"]]
    assert real["report"] == merge_reports(REAL_REPORT) == "sinus rhythm inferior infarct age undetermined abnormal ecg"
    assert real["ecg"].shape == (12, 5000) and real["lead_mask"].all()
    for split in dataset.values():  # stored as int16 microvolts (the numpy formatter widens ints when reading)
        assert split.features["ecg"] == ECG_FEATURE and split.data.schema.field("ecg").type.storage_dtype.value_type.value_type == "int16"


def test_real_record_lands_in_canonical_order(converted, shared_data):
    _, dataset = converted
    source = real_ptb_signal(shared_data)  # MIMIC order on disk
    quantised = np.rint(source * 200) / 200
    rows = [row for split in dataset.values() for row in split.with_format("numpy") if row["study_id"] == REAL_STUDIES["good"]]
    ecg = decode_ecg(rows[0]["ecg"])
    for canonical_index, name in enumerate(CANONICAL):
        np.testing.assert_allclose(ecg[canonical_index], quantised[:, MIMIC_LEAD_ORDER.index(name)], atol=1.5e-3)
    assert not np.allclose(ecg[CANONICAL.index("aVL")], ecg[CANONICAL.index("aVF")])


def test_report_ids_index_the_sorted_unique_reports(converted):
    _, dataset = converted
    pairs = {(row["report_id"], row["report"]) for split in dataset.values() for row in split.select_columns(["report_id", "report"])}
    texts = sorted({text for _, text in pairs})
    assert len({report_id for report_id, _ in pairs}) == len(pairs) == len(texts)
    assert all(texts[report_id] == text for report_id, text in pairs)
    normal = merge_reports(["Sinus rhythm", "Normal ECG"])
    assert normal in texts  # the identical normal report


def test_split_is_by_patient(converted):
    _, dataset = converted
    train, valid = set(dataset["train"]["subject_id"]), set(dataset["validation"]["subject_id"])
    assert train and valid and not train & valid


def test_resume_redoes_only_the_missing_shard(mimic_root, converted):
    out, dataset = converted
    shards = sorted(path for path in (out / "shards").iterdir() if path.is_dir())
    assert len(shards) >= 3
    before = {path.name: (path / "state.json").stat().st_mtime_ns for path in shards}
    shutil.rmtree(shards[1])
    again = convert_mimic_iv_ecg(mimic_root, out, num_proc=1, valid_fraction=0.3, seed=0, shard_size=4)
    after = {path.name: (path / "state.json").stat().st_mtime_ns for path in (out / "shards").iterdir() if path.is_dir()}
    assert set(after) == set(before)
    assert [name for name in before if before[name] != after[name]] == [shards[1].name]
    for split in ("train", "validation"):
        assert again[split]["study_id"] == dataset[split]["study_id"]
    with pytest.raises(ValueError, match="different conversion"):
        convert_mimic_iv_ecg(mimic_root, out, num_proc=1, valid_fraction=0.3, seed=0, shard_size=5)


def test_lazy_dataset_gives_the_same_rows(mimic_root, converted):
    _, dataset = converted
    lazy = CMELTMIMICLazyDataset(mimic_root, split="validation", valid_fraction=0.3, seed=0)
    converted_rows = {row["study_id"]: row for row in dataset["validation"].with_format("numpy")}
    items = [lazy[i] for i in range(len(lazy))]
    kept = [item for item in items if item is not None]
    assert {item["study_id"] for item in kept} == set(converted_rows)
    for item in kept:
        row = converted_rows[item["study_id"]]
        np.testing.assert_array_equal(item["ecg"], row["ecg"])
        assert item["report"] == row["report"] and item["report_id"] == row["report_id"]
    assert lazy.skips.total == len(items) - len(kept)


def test_empty_split_and_all_dropped_shard_still_load(mimic_root, tmp_path):
    out = tmp_path / "corpus"
    dataset = convert_mimic_iv_ecg(mimic_root, out, num_proc=1, valid_fraction=0.0, seed=0, shard_size=1)
    assert len(dataset["validation"]) == 0
    total = len(read_csv(mimic_root / "record_list.csv")) - 1
    assert len(dataset["train"]) == total - 3  # three one-record shards were dropped entirely
    assert len(list((out / "shards").iterdir())) == total


def test_lazy_dataset_gets_the_same_n3s_column_as_the_converted_corpus(mimic_root, converted, tmp_path):
    from cmelt.data.n3s import add_n3s_column
    from cmelt.data.text_tower import build_tiny_t5

    _, dataset = converted
    validation = dataset["validation"]
    encoder = build_tiny_t5(list(validation["report"]) * 3, tmp_path / "t5", vocab_size=64, d_model=16, d_ff=32)
    lazy = CMELTMIMICLazyDataset(mimic_root, split="validation", valid_fraction=0.3, seed=0)
    assert "n3s_negatives" not in lazy.column_names  # the pretraining script refuses N3S on it as it is
    lazy.with_n3s(tmp_path / "lazy_cache", str(encoder), k=2)
    assert "n3s_negatives" in lazy.column_names
    column = add_n3s_column(validation, tmp_path / "corpus_cache", str(encoder), k=2)
    expected = {row["study_id"]: list(row["n3s_negatives"]) for row in column}
    kept = [item for item in (lazy[i] for i in range(len(lazy))) if item is not None]
    assert kept
    for item in kept:
        assert list(item["n3s_negatives"]) == expected[item["study_id"]]
        assert item["report_id"] not in item["n3s_negatives"]
