"""Long jobs never lose or silently reuse the wrong work (issue 13 items 1, 2, 3, 5; issue 11 item 8).

Fault injection: poisoned records in a MIMIC conversion, an edited report and a zeroed `.dat` before a resumed
conversion, a truncated `plan.json`, pretraining reruns with other settings / identical settings / a stale
`.staging` folder, two processes saving the N3S cache at once, new encoder weights of the same size, and the
`cmelt-n3s` precompute that pretraining must reuse.
"""

import csv
import json
import multiprocessing
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk

import cmelt.data.n3s as n3s
from cmelt.data.ecg_store import write_json_atomically
from cmelt.data.ecg_store import SKIP_FLAT, SKIP_TRUNCATED
from cmelt.data.mimic_iv_ecg import convert_mimic_iv_ecg, load_mimic_index
from cmelt.data.n3s import ReportTable, add_n3s_column
from cmelt.data.synthetic import write_mimic_tree
from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor
from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain

REPORTS = [
    "sinus rhythm normal ecg",
    "sinus bradycardia otherwise normal ecg",
    "atrial fibrillation with rapid ventricular response abnormal ecg",
    "left bundle branch block abnormal ecg",
    "sinus tachycardia st elevation consider acute infarct",
    "right bundle branch block borderline ecg",
]


def must_not_run(*args, **kwargs):
    raise AssertionError("recomputed although cached")


# ---------------------------------------------------------------------------------------------------------------
# MIMIC conversion: per-record failures are skipped and counted; shards are keyed on their inputs


@pytest.fixture()
def mimic_root(tmp_path):
    return write_mimic_tree(tmp_path / "mimic", num_subjects=6, seed=4)


def record_stem(root, study_id):
    index = load_mimic_index(root)
    return root / index.loc[index["study_id"] == study_id, "path"].iloc[0]


def test_poisoned_records_are_skipped_and_counted_and_the_run_continues(mimic_root, tmp_path, monkeypatch):
    import modeling_cmelt.reading_cmelt as reading

    index = load_mimic_index(mimic_root)
    studies = index["study_id"].tolist()
    # a baseline outside int16 (OverflowError before), a header claiming 10^12 samples (MemoryError before)
    baseline_stem, huge_stem = record_stem(mimic_root, studies[0]), record_stem(mimic_root, studies[1])
    hea = baseline_stem.with_name(baseline_stem.name + ".hea")
    hea.write_text(hea.read_text().replace("200.0(0)/mV", "200(70000)/mV"))
    hea = huge_stem.with_name(huge_stem.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([" ".join(lines[0].split()[:3] + ["1000000000000"])] + lines[1:]) + "\n")
    # an exception nobody anticipated
    crashing_stem = record_stem(mimic_root, studies[2])
    original = reading.read_ecg

    def read_ecg_crashing(path, **kwargs):
        if str(path) == str(crashing_stem):
            raise RuntimeError("reader bug")
        return original(path, **kwargs)

    monkeypatch.setattr(reading, "read_ecg", read_ecg_crashing)
    dataset = convert_mimic_iv_ecg(mimic_root, tmp_path / "out", valid_fraction=0.2, shard_size=4)
    kept = set(dataset["train"]["study_id"]) | set(dataset["validation"]["study_id"])
    assert kept.isdisjoint(studies[:3]) and kept >= set(studies[3:]) - set(index.loc[index["report"] == "", "study_id"])
    summary = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert summary["by_reason"]["reader error (RuntimeError)"] == 1
    assert summary["by_reason"][SKIP_TRUNCATED] >= 1  # the 10^12-sample header (one vocabulary: it says why)
    assert summary["by_reason"][SKIP_FLAT] >= 1  # baseline 70000: every lead is hundreds of mV, so none is usable


def test_resumed_conversion_rebuilds_shards_whose_inputs_changed(mimic_root, tmp_path):
    out = tmp_path / "out"
    first = convert_mimic_iv_ecg(mimic_root, out, valid_fraction=0.0, shard_size=4)["train"]
    rows = {row["study_id"]: row for row in first}
    edited_study, zeroed_study = list(rows)[0], list(rows)[5]
    # edit one report in machine_measurements.csv, zero one .dat in place (same size)
    with open(mimic_root / "machine_measurements.csv", newline="") as handle:
        table = list(csv.reader(handle))
    column = table[0].index("report_0")
    for line in table[1:]:
        if int(line[1]) == edited_study:
            line[column] = "Edited statement about a ventricular rhythm"
    with open(mimic_root / "machine_measurements.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(table)
    dat = record_stem(mimic_root, zeroed_study).with_suffix(".dat")
    dat.write_bytes(bytes(dat.stat().st_size))
    untouched = [p for p in (out / "shards").iterdir() if p.name.startswith("train")]
    again = convert_mimic_iv_ecg(mimic_root, out, valid_fraction=0.0, shard_size=4)["train"]
    reports = dict(zip(again["study_id"], again["report"]))
    assert "edited statement about a ventricular rhythm" in reports[edited_study]
    assert zeroed_study not in reports  # a zero signal is flat: skipped, not the old signal
    assert len(untouched) == len(list((out / "shards").glob("train-*")))


def test_truncated_plan_json_does_not_stop_the_resume(mimic_root, tmp_path):
    out = tmp_path / "out"
    first = convert_mimic_iv_ecg(mimic_root, out, valid_fraction=0.0, shard_size=4)
    plan = (out / "plan.json").read_text()
    (out / "plan.json").write_text(plan[: len(plan) // 2])
    with pytest.warns(UserWarning, match="plan.json"):
        again = convert_mimic_iv_ecg(mimic_root, out, valid_fraction=0.0, shard_size=4)
    assert again["train"]["study_id"] == first["train"]["study_id"]
    json.loads((out / "plan.json").read_text())


def test_json_state_files_are_written_atomically(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomically(path, {"complete": True})
    with pytest.raises(TypeError):
        write_json_atomically(path, {"complete": False, "bad": object()})
    assert json.loads(path.read_text()) == {"complete": True}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# ---------------------------------------------------------------------------------------------------------------
# N3S cache: content keys, the CLI's cache reused by pretraining, concurrent saves


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return build_tiny_t5(REPORTS * 5, tmp_path_factory.mktemp("t5"), vocab_size=64, d_model=32, d_ff=64)


def corpus(num_rows=40, seed=0, offset=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(REPORTS), num_rows)
    return Dataset.from_dict({"report": [REPORTS[i] for i in ids], "report_id": (ids + offset).tolist()})


def test_new_encoder_weights_of_the_same_size_are_not_served_stale_neighbours(encoder, tmp_path, monkeypatch):
    dataset = corpus()
    copy = tmp_path / "encoder"
    shutil.copytree(encoder, copy)
    add_n3s_column(dataset, tmp_path / "cache", str(copy), k=2)
    from transformers import T5EncoderModel

    model = T5EncoderModel.from_pretrained(copy)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(-1.5)
    model.save_pretrained(copy)  # same shapes, same file size, other content
    calls = []
    original = n3s.embed_reports
    monkeypatch.setattr(n3s, "embed_reports", lambda *a, **k: calls.append(1) or original(*a, **k))
    add_n3s_column(dataset, tmp_path / "cache", str(copy), k=2)
    assert calls, "new weights reused the old embeddings"
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text().replace("}", ', "x": 1}', 1))
    calls.clear()
    add_n3s_column(dataset, tmp_path / "cache", str(copy), k=2)
    assert calls, "a changed tokenizer reused the old embeddings"


def test_column_cache_key_includes_the_dtype(encoder, tmp_path):
    dataset = corpus()
    add_n3s_column(dataset, tmp_path, str(encoder), k=2)
    add_n3s_column(dataset, tmp_path, str(encoder), k=2, dtype="bfloat16")
    columns = sorted(p.name for p in tmp_path.glob("column-*.arrow"))
    assert len(columns) == 2 and any("bfloat16" in name for name in columns), columns


def test_cli_precompute_is_reused_by_pretraining_without_re_embedding(encoder, tmp_path, monkeypatch):
    from cmelt.train_scripts.pretraining import _with_n3s

    corpus_dir = tmp_path / "corpus"
    DatasetDict({"train": corpus(seed=1), "validation": corpus(num_rows=10, seed=2, offset=100)}).save_to_disk(corpus_dir)
    for row in load_from_disk(str(corpus_dir))["validation"]:
        assert row["report_id"] >= 100  # validation reports have ids of their own
    n3s.main([str(corpus_dir), "--encoder", str(encoder), "--k", "3"])
    monkeypatch.setattr(n3s, "embed_reports", must_not_run)
    monkeypatch.setattr(n3s, "build_index", must_not_run)
    monkeypatch.setattr(n3s, "search_farthest", must_not_run)
    train = load_from_disk(str(corpus_dir))["train"]
    with_column, texts = _with_n3s(train, CMELTDataArguments(dataset_path=str(corpus_dir), n3s_k=3))
    negatives = {i for row in with_column["n3s_negatives"] for i in row}
    assert negatives and max(negatives) < 100  # training rows never get validation reports as negatives
    assert texts(sorted(negatives)) == [REPORTS[i] for i in sorted(negatives)]


def _save_and_read_tables(cache_dir, seed, rounds, errors):
    tables = [ReportTable([0, 1], ["a", "b"]), ReportTable([0, 1, 2], ["a", "b", "c" * 5000])]
    rng = np.random.default_rng(seed)
    failures = 0
    for _ in range(rounds):
        try:
            tables[int(rng.integers(2))].save(cache_dir)
            loaded = ReportTable.load(cache_dir)
            assert loaded.fingerprint in {table.fingerprint for table in tables}
        except Exception as error:  # noqa: BLE001 - counted and reported by the parent
            failures += 1
            errors.put(f"{type(error).__name__}: {error}")
    errors.put(("done", failures))


@pytest.mark.slow
def test_two_processes_saving_the_cache_never_collide(tmp_path):
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    workers = [context.Process(target=_save_and_read_tables, args=(tmp_path, seed, 150, errors)) for seed in (0, 1)]
    for worker in workers:
        worker.start()
    messages, done = [], 0
    while done < len(workers):
        message = errors.get(timeout=120)
        if isinstance(message, tuple):
            done += 1
        else:
            messages.append(message)
    for worker in workers:
        worker.join(timeout=60)
    assert messages == [], messages[:5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ReportTable.FILE_NAME]


# ---------------------------------------------------------------------------------------------------------------
# pretraining resume safety


@pytest.fixture(scope="module")
def processor(encoder):
    from transformers import AutoTokenizer

    return CMELTProcessor(CMELTFeatureExtractor(num_samples=1000), AutoTokenizer.from_pretrained(encoder))


def pretraining_corpus(num_rows=16):
    from test_pretraining import tiny_corpus

    return tiny_corpus(num_rows=num_rows)


def lookup(ids):
    from test_pretraining import REPORTS as corpus_reports

    return [corpus_reports[i] for i in ids]


def run(processor, output_dir, use_etm=True, learning_rate=1e-3, max_steps=4, **extra):
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(processor.tokenizer)}, use_etm=use_etm)
    model = CMELTForPreTraining(config)
    args = CMELTTrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, save_steps=3, logging_steps=1,
        learning_rate=learning_rate, report_to="none", seed=7, dataloader_num_workers=0, **extra,
    )
    return pretrain(CMELTModelArguments(), CMELTDataArguments(), args, train_dataset=pretraining_corpus(),
                    report_texts=lookup, model=model, processor=processor)


def snapshot(output_dir):
    return {p.relative_to(output_dir).as_posix(): p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_identical_rerun_of_a_finished_run_is_a_no_op(processor, tmp_path):
    first = run(processor, tmp_path)
    before = snapshot(tmp_path)
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    again = run(processor, tmp_path)
    assert snapshot(tmp_path) == before  # no new checkpoint, no rewritten model
    assert again.state.global_step in (0, 4)
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, weights[key]), key  # the returned model is the finished one


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    ({"learning_rate": 1e-1}, "learning_rate: 0.001 -> 0.1"),
    ({"use_etm": False}, "model_config.use_etm: True -> False"),
    ({"max_steps": 6}, "max_steps: 4 -> 6"),
])
def test_rerun_with_other_settings_names_the_differences(processor, tmp_path, change, expected):
    run(processor, tmp_path, max_steps=4)
    with pytest.raises(ValueError) as error:
        run(processor, tmp_path, **{"max_steps": 4, **change})
    assert expected in str(error.value) and "--overwrite_output_dir" in str(error.value)
    fresh = run(processor, tmp_path, overwrite_output_dir=True, **{"max_steps": 4, **change})
    assert fresh.state.global_step == change.get("max_steps", 4)


@pytest.mark.slow
def test_stale_staging_folder_is_removed(processor, tmp_path):
    staging = tmp_path / ".staging" / "checkpoint-3"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"partial")
    (staging / "optimizer_of_another_run.pt").write_bytes(b"stale")
    run(processor, tmp_path)
    assert not (tmp_path / "checkpoint-3" / "optimizer_of_another_run.pt").exists()  # moved in with checkpoint-3 before
    assert not any((tmp_path / ".staging").glob("*"))
    assert (tmp_path / "checkpoint-4" / "model.safetensors").is_file()
