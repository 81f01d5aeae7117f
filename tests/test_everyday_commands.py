"""cmelt-label, cmelt-embed and cmelt-search end to end: real records from ../shared/data, generated fixtures in the
datasets' layouts, and unreadable files among the inputs (an error per record, never a stopped run)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoTokenizer, pipeline

from fixtures_downstream import real_twelve_leads, sine_twelve_leads, truncate_file, write_challenge_record

from cmelt.data.record_inputs import collect_record_paths
from modeling_cmelt import CMELTModel
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.pipeline_cmelt import encode_label_texts
from cmelt.train_scripts import embed, label, search

LABELS = ["NORM", "MI", "STTC", "CD", "HYP"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    """good/: a challenge record (.hea + .mat, real leads), a CPSC-style nested folder, a .npy at 250 Hz;
    bad/: a truncated .mat, a garbage header, a corrupt .npy; a CSV listing real records, a relative path and a
    missing file."""
    root = tmp_path_factory.mktemp("inputs")
    write_challenge_record(root / "good", "JS00001", real_twelve_leads(shared_data, 500, 10), 500, ["426783006"])
    write_challenge_record(root / "good" / "nested", "JS00002", sine_twelve_leads(500, 12), 500, ["164889003"])
    np.save(root / "good" / "holter.npy", sine_twelve_leads(250, 10, seed=3))
    truncated = write_challenge_record(root / "bad", "JS00003", sine_twelve_leads(500, 10), 500, ["164889003"])
    truncate_file(truncated.with_suffix(".mat"), 100)
    (root / "bad" / "garbage.hea").write_text("this is not a header\n")
    (root / "bad" / "broken.npy").write_bytes(b"not numpy")
    pd.DataFrame({"path": [str(shared_data / "wfdb" / "s0010_re"), "good/JS00001", "missing/record"],
                  "report": ["sinus rhythm", "atrial fibrillation", "none"]}).to_csv(root / "list.csv", index=False)
    return root


def test_inputs_from_folders_globs_csv_and_files(inputs, shared_data):
    found = collect_record_paths([str(inputs / "good"), str(inputs / "bad" / "*.npy"), str(inputs / "list.csv"),
                                  str(shared_data / "wfdb" / "100.hea"), str(inputs / "nowhere.hea")])
    assert found == [
        str(inputs / "good" / "JS00001"),  # listed once, by its header, although a .mat sits beside it
        str(inputs / "good" / "holter.npy"),
        str(inputs / "good" / "nested" / "JS00002"),
        str(inputs / "bad" / "broken.npy"),
        str(shared_data / "wfdb" / "s0010_re"),
        # "good/JS00001" from the CSV resolves to the folder's record: not listed twice
        str(inputs / "missing" / "record"),
        str(shared_data / "wfdb" / "100"),
        str(inputs / "nowhere"),  # named explicitly: kept, and will carry an error
    ]
    with pytest.raises(ValueError, match="no column 'file'"):
        collect_record_paths([str(inputs / "list.csv")], path_column="file")


@pytest.mark.slow
def test_label_scores_equal_the_pipeline_and_bad_records_get_errors(dual_encoder_folder, inputs, shared_data, tmp_path):
    output = tmp_path / "labels.csv"
    label.main([str(shared_data / "wfdb"), str(inputs / "good"), str(inputs / "bad"), str(inputs / "list.csv"),
                "--model", str(dual_encoder_folder), "--label_set", "ptbxl_super", "--sampling_rate", "250",
                "--output", str(output), "--batch_size", "3", "--no_progress"])
    table = pd.read_csv(output).set_index("path")
    assert list(table.columns[:5]) == ["error", "leads", "n_leads", "top_labels", "notes"] and list(table.columns[5:]) == LABELS
    bad = [str(inputs / "bad" / name) for name in ("JS00003", "broken.npy", "garbage")] + [str(inputs / "missing" / "record")]
    assert table.loc[bad, "error"].notna().all() and table.loc[bad, LABELS].isna().all().all()
    good = table.drop(index=bad)
    assert len(good) == 5 and good["error"].isna().all()
    assert good.loc[str(shared_data / "wfdb" / "100"), "leads"] == "II,V5"
    assert good.loc[str(inputs / "good" / "holter.npy"), "n_leads"] == 12
    classifier = pipeline("zero-shot-ecg-classification", model=str(dual_encoder_folder), trust_remote_code=True)
    for path in (shared_data / "wfdb" / "s0010_re", inputs / "good" / "JS00001"):
        expected = {entry["label"]: entry["score"] for entry in classifier(str(path), candidate_labels=LABELS, label_set="ptbxl_super")}
        assert good.loc[str(path), LABELS].to_dict() == pytest.approx(expected, rel=1e-5, abs=1e-12)
        top = good.loc[str(path), "top_labels"].split(";")
        assert [item.split(":")[0] for item in top] == sorted(expected, key=expected.get, reverse=True)[:3]


@pytest.mark.slow
def test_label_json_lines_free_text_and_leads(dual_encoder_folder, shared_data, tmp_path):
    output = tmp_path / "labels.jsonl"
    rows = label.main([str(shared_data / "wfdb" / "s0010_re.hea"), "--model", str(dual_encoder_folder), "--labels",
                       "atrial fibrillation,sinus rhythm", "--leads", "P-2", "--top_k", "1", "--softmax",
                       "--output", str(output), "--no_progress"])
    (stored,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert stored["leads"] == "I,II" and stored["n_leads"] == 2 and stored["error"] is None
    assert stored["atrial fibrillation"] + stored["sinus rhythm"] == pytest.approx(1.0, abs=1e-5)
    assert rows[0]["top_labels"].count(":") == 1
    with pytest.raises(SystemExit):
        label.main([str(shared_data / "wfdb"), "--model", str(dual_encoder_folder)])  # nothing to score against


@pytest.mark.slow
def test_embed_and_search_find_the_nearest_ecgs(dual_encoder_folder, inputs, shared_data, tmp_path):
    out = tmp_path / "emb"
    dataset, skipped = embed.main([str(inputs / "list.csv"), str(inputs / "good"), str(inputs / "bad"),
                                   str(shared_data / "wfdb" / "100"), "--model", str(dual_encoder_folder), "--output", str(out),
                                   "--text_column", "report", "--parquet", "--sampling_rate", "250", "--no_progress"])
    stored = load_from_disk(str(out))
    assert len(stored) == 5 and stored.column_names == ["path", "ecg_embedding", "lead_mask", "leads", "text", "text_embedding"]
    assert pd.read_csv(out / "skipped.csv")["path"].tolist() == [str(p) for p in (
        inputs / "missing" / "record", inputs / "bad" / "JS00003", inputs / "bad" / "broken.npy", inputs / "bad" / "garbage")]
    assert pd.read_parquet(out / "embeddings.parquet")["path"].tolist() == stored["path"]
    model = CMELTModel.from_pretrained(dual_encoder_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(dual_encoder_folder)
    features = CMELTFeatureExtractor()(str(shared_data / "wfdb" / "100"), return_tensors="pt")
    with torch.no_grad():
        expected = model.get_ecg_features(features["input_values"], lead_mask=features["lead_mask"]).pooler_output[0]
    row = stored[stored["path"].index(str(shared_data / "wfdb" / "100"))]
    assert np.allclose(row["ecg_embedding"], expected.numpy(), atol=1e-5) and row["leads"] == "II,V5"
    reports = dict(zip(stored["path"], stored["text"]))
    assert reports[str(inputs / "good" / "JS00001")] == "atrial fibrillation"
    afib = encode_label_texts(model, tokenizer, {"q": ["atrial fibrillation"]})[0]
    assert np.allclose(stored[stored["path"].index(str(inputs / "good" / "JS00001"))]["text_embedding"], afib.detach().numpy(), atol=1e-5)

    hits = search.main([str(out), "atrial fibrillation", "-k", "3", "--output", str(tmp_path / "hits.csv")])
    embeddings = np.asarray(stored["ecg_embedding"], dtype=np.float32)
    brute = np.argsort(-(embeddings @ afib.detach().numpy()), kind="stable")[:3]
    assert [hit["path"] for hit in hits] == [stored["path"][i] for i in brute]
    classifier = pipeline("zero-shot-ecg-classification", model=str(dual_encoder_folder), trust_remote_code=True)
    best = hits[0]
    (entry,) = classifier(best["path"], candidate_labels=["atrial fibrillation"], sampling_rate=250 if best["path"].endswith(".npy") else None)
    assert best["score"] == pytest.approx(entry["score"], rel=1e-5, abs=1e-12)  # the search score is the zero-shot score
    assert pd.read_csv(tmp_path / "hits.csv")["rank"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="not a cmelt-embed folder"):
        search.main([str(tmp_path), "x"])


def test_demo_example_record_is_a_labelable_copy(tmp_path, dual_encoder_folder):
    """The README's bare-clone quick start labels OUT/example-ecg, which the demo writes from a held-out record."""
    from cmelt.data.synthetic import write_mimic_tree
    from modeling_cmelt.reading_cmelt import read_ecg
    from cmelt.train_scripts.demo import write_example_record

    write_mimic_tree(tmp_path / "mimic", num_subjects=2, seed=0)
    listed = pd.read_csv(tmp_path / "mimic" / "record_list.csv").iloc[1]
    example = write_example_record(tmp_path / "mimic", int(listed["study_id"]), tmp_path / "out")
    assert example == tmp_path / "out" / "example-ecg" / "example"
    copied, original = read_ecg(example), read_ecg(tmp_path / "mimic" / listed["path"])
    assert np.array_equal(copied.signal, original.signal) and copied.lead_names == original.lead_names
    (row,) = label.main([str(tmp_path / "out" / "example-ecg"), "--model", str(dual_encoder_folder), "--label_set",
                         "ptbxl_super", "--output", str(tmp_path / "labels.csv"), "--no_progress"])
    assert row["error"] is None and row["n_leads"] == 12


def test_a_record_read_with_wfdb_like_the_physionet_example(dual_encoder_folder, shared_data):
    """README: `wfdb.rdrecord(name, pn_dir=...)` then the pipeline on the array; here the same record read locally
    (no internet) gives the scores of the file path."""
    import wfdb

    classifier = pipeline("zero-shot-ecg-classification", model=str(dual_encoder_folder), trust_remote_code=True)
    record = wfdb.rdrecord(str(shared_data / "wfdb" / "s0010_re"))
    from_array = classifier(record.p_signal.T, sampling_rate=record.fs, lead_names=record.sig_name,
                            candidate_labels=LABELS, label_set="ptbxl_super")
    from_file = classifier(str(shared_data / "wfdb" / "s0010_re"), candidate_labels=LABELS, label_set="ptbxl_super")
    assert [item["label"] for item in from_array] == [item["label"] for item in from_file]
    assert [item["score"] for item in from_array] == pytest.approx([item["score"] for item in from_file], rel=1e-4)
