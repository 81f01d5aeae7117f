"""MERL's published splits and prompts, bootstrap intervals, random-init baselines, the results schema and the
report table; end to end on fixtures laid out like the real datasets (`--split merl --prompts merl
--baseline random`)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fixtures_downstream import write_cpsc_merl_fixture, write_csn_merl_fixture, write_ptbxl_merl_fixture

from cmelt.data.downstream import DownstreamReport
from cmelt.data.labels import MERL_LABEL_SETS, label_codes
from cmelt.data.ptbxl import merl_label_table, ptbxl_label_table
from cmelt.data.splits import MERL_SPLIT_FILES, merl_column_for_code, read_merl_split_csvs, read_merl_split_list
from modeling_cmelt.pipeline_cmelt import label_texts_for, load_label_descriptions, resolve_prompts
from cmelt.train_scripts import domain_transfer, finetune, linear_probe, report, zero_shot
from cmelt.train_scripts.datasets_registry import load_evaluation_data
from cmelt.train_scripts.evaluation import (
    bootstrap_indices,
    cinc_row_components,
    load_metric,
    macro_auroc_row_fields,
    percentile_interval,
    read_rows,
    resampled_macro_auroc,
    resampled_ratio,
    result_row,
    write_rows,
)

MERL = Path(__file__).resolve().parents[2] / "shared" / "merl"
# paper Tab. 9 (REFERENCE.md section 2): train / valid / test rows
TABLE_9 = {
    "ptbxl_super": (17084, 2146, 2158), "ptbxl_sub": (17084, 2146, 2158), "ptbxl_form": (7197, 901, 880),
    "ptbxl_rhythm": (16832, 2100, 2098), "cpsc2018": (4950, 551, 1376), "csn": (16546, 1860, 4620),
}
LIST_COLUMN = {"ptbxl_super": "super_class", "ptbxl_sub": "sub_class", "ptbxl_form": "form", "ptbxl_rhythm": "rhythm"}


@pytest.fixture(scope="session")
def merl_folder() -> Path:
    if not MERL.is_dir():
        pytest.skip(f"MERL's split files not found at {MERL} (../shared/merl beside the repository)")
    return MERL


# ------------------------------------------------------------------------------------------------ splits


@pytest.mark.parametrize("label_set", list(MERL_SPLIT_FILES))
def test_shipped_lists_equal_merl_files_and_table_9(label_set, merl_folder):
    shipped = read_merl_split_list(label_set)
    original = read_merl_split_csvs(merl_folder / "finetune" / "data_split", label_set)
    assert shipped["split"].tolist() == original["split"].tolist()
    assert shipped["record_id"].tolist() == original["record_id"].tolist()
    assert shipped["label_codes"].tolist() == original["label_codes"].tolist()
    counts = shipped["split"].value_counts()
    assert (counts["train"], counts["validation"], counts["test"]) == TABLE_9[label_set]
    assert shipped["record_id"].is_unique
    # the split-files path of the loaders reads the same rows (also from the repository root of MERL)
    assert read_merl_split_list(label_set, merl_folder)["record_id"].tolist() == original["record_id"].tolist()


@pytest.mark.parametrize("label_set", list(LIST_COLUMN))
def test_labels_read_by_name_match_the_files_label_lists(label_set, merl_folder):
    """Each PTB-XL file also holds the label list as text (e.g. "['NORM']"); reading the 0/1 columns by name must
    give the same labels, in every split (the sub_class train file orders AVB, RAO/RAE, ISC differently)."""
    folder, stem, _ = MERL_SPLIT_FILES[label_set]
    shipped = read_merl_split_list(label_set)
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
        table = pd.read_csv(merl_folder / "finetune" / "data_split" / folder / f"{stem}_{name}.csv")
        ours = shipped[shipped["split"] == split]["label_codes"].tolist()
        listed = [sorted(ast.literal_eval(text)) for text in table[LIST_COLUMN[label_set]]]
        assert [sorted(code.strip("_") for code in codes) for codes in ours] == listed


def test_sub_class_column_order_differs_and_names_map_without_underscores(merl_folder):
    folder = merl_folder / "finetune" / "data_split" / "ptbxl" / "sub_class"
    train = list(pd.read_csv(folder / "ptbxl_sub_class_train.csv", nrows=0).columns)
    test = list(pd.read_csv(folder / "ptbxl_sub_class_test.csv", nrows=0).columns)
    assert train != test and sorted(train) == sorted(test)
    assert merl_column_for_code("_AVB", test) == "AVB" and merl_column_for_code("ISC_", test) == "ISC"
    with pytest.raises(ValueError, match="has no column"):
        merl_column_for_code("XYZ", test)


@pytest.mark.parametrize("task", ["super", "sub", "form", "rhythm"])
def test_our_ptbxl_labels_equal_the_split_files_class_by_class(task, shared_data):
    database = shared_data / "ptbxl" / "ptbxl_database_subset.csv"
    ours = ptbxl_label_table(shared_data / "ptbxl", task, database_csv=database).set_index("ecg_id")
    published = merl_label_table(shared_data / "ptbxl", task, database_csv=database, report=DownstreamReport()).set_index("ecg_id")
    common = ours.index.intersection(published.index)
    assert len(common) > 1000
    # rows of the subset that MERL left out: one record (3796: INJAL + INJAS, class MI) in super / sub only
    assert set(ours.index.difference(published.index)) == ({3796} if task in ("super", "sub") else set())
    assert published.index.difference(ours.index).empty
    assert (ours.loc[common, "split"] == published.loc[common, "split"]).all()  # MERL's split = the folds
    for code in label_codes(f"ptbxl_{task}"):
        mine = {i for i in common if code in ours.loc[i, "label_codes"]}
        theirs = {i for i in common if code in published.loc[i, "label_codes"]}
        assert mine == theirs, code


def test_split_merl_needs_a_dataset_with_published_splits(tmp_path):
    with pytest.raises(ValueError, match="--split merl needs"):
        load_evaluation_data("code_test", str(tmp_path), split="merl")
    with pytest.raises(ValueError, match="--split merl needs"):
        load_evaluation_data(dataset_path=str(tmp_path), split="merl")
    with pytest.raises(ValueError, match="MERL publishes splits"):
        read_merl_split_list("code_test")


# ------------------------------------------------------------------------------------------------ prompts


def test_merl_prompts_are_ckepe_by_name(merl_folder):
    ckepe = json.loads((merl_folder / "zeroshot" / "CKEPE_prompt.json").read_text())
    for label_set in MERL_LABEL_SETS:
        shipped = load_label_descriptions(label_set, prompts="merl")
        assert list(shipped) == label_codes(label_set)
        for code, text in shipped.items():
            assert text == ckepe.get(code, ckepe.get(code.strip("_")))
    document = json.loads((Path(zero_shot.__file__).parents[1] / "modeling_cmelt" / "label_descriptions.json").read_text())
    assert "Permission is hereby granted" in document["prompt_sets"]["merl"]["license"]
    assert label_texts_for(["ISC_"], "ptbxl_sub", prompts="merl")["ISC_"] == [ckepe["ISC"]]


def test_prompt_choices_and_errors(tmp_path):
    cmelt = resolve_prompts("cmelt", "cpsc2018")
    assert cmelt[1] == "cmelt" and cmelt[0]["AFIB"].startswith("Atrial Fibrillation")
    user = tmp_path / "authors.json"
    user.write_text(json.dumps({"cpsc2018": {"AFIB": "irregular rhythm", "NORM": ["normal", "sinus"]}}))
    assert resolve_prompts(str(user), "cpsc2018") == ({"AFIB": "irregular rhythm", "NORM": ["normal", "sinus"]}, "authors.json")
    assert label_texts_for(["NORM"], "cpsc2018", prompts=str(user))["NORM"] == ["normal", "sinus"]
    with pytest.raises(ValueError, match="not a code of label set"):
        label_texts_for(["VPC"], "cpsc2018", prompts=str(user))  # the user's file has no VPC text
    with pytest.raises(ValueError, match="unknown label_set 'code_test'"):
        resolve_prompts("merl", "code_test")  # MERL published prompts for its six tasks only
    with pytest.raises(ValueError, match="prompts must be one of"):
        resolve_prompts("gpt4", "cpsc2018")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"AFIB": 3}))
    with pytest.raises(ValueError, match="code: text or"):
        resolve_prompts(str(bad), "cpsc2018")


# ------------------------------------------------------------------------------------------------ bootstrap


def reference_macro_auroc(references, scores, rows):
    values = [roc_auc_score(references[rows, c], scores[rows, c]) for c in range(references.shape[1])
              if 0 < references[rows, c].sum() < len(rows)]
    return np.mean(values) if values else np.nan


def test_resampled_macro_auroc_equals_a_loop_over_sklearn():
    rng = np.random.default_rng(0)
    references = (rng.random((40, 4)) < [0.5, 0.3, 0.05, 0.5]).astype(float)
    references[:, 3] = 0
    references[0, 3] = 1  # a class that most resamples see with one value only: skipped there
    scores = np.round(rng.random((40, 4)), 1)  # ties
    indices = bootstrap_indices(40, 200, seed=3)
    fast = resampled_macro_auroc(references, scores, indices)
    slow = np.array([reference_macro_auroc(references, scores, rows) for rows in indices])
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    full = resampled_macro_auroc(references, scores, np.arange(40)[None])[0]
    metric = load_metric("macro_auroc").compute(references=references, predictions=scores, label_names=list("abcd"))
    assert full == pytest.approx(metric["macro_auroc"])
    assert np.array_equal(bootstrap_indices(40, 200, seed=3), indices)  # seeded


def test_intervals_and_paired_difference_against_numpy():
    rng = np.random.default_rng(1)
    references = (rng.random((60, 3)) < 0.4).astype(float)
    scores = references + rng.normal(0, 0.6, (60, 3))
    baseline = rng.random((60, 3))
    fields = macro_auroc_row_fields(references, scores, baseline, seed=7, num_resamples=300)
    indices = bootstrap_indices(60, 300, seed=7)  # fewer than the default 1,000: the sklearn loop is slow
    ours = np.array([reference_macro_auroc(references, scores, rows) for rows in indices])
    theirs = np.array([reference_macro_auroc(references, baseline, rows) for rows in indices])
    np.testing.assert_allclose(fields["ci95"], np.percentile(ours, [2.5, 97.5]))
    np.testing.assert_allclose(fields["baseline"]["ci95"], np.percentile(theirs, [2.5, 97.5]))
    np.testing.assert_allclose(fields["delta_vs_baseline"]["ci95"], np.percentile(ours - theirs, [2.5, 97.5]))
    assert fields["delta_vs_baseline"]["value"] == pytest.approx(fields["value"] - fields["baseline"]["value"])
    assert fields["ci95"][0] < fields["value"] < fields["ci95"][1]
    assert percentile_interval(np.array([np.nan, np.nan])) is None


def test_cinc_score_decomposes_per_record_for_resampling():
    codes = label_codes("physionet2021")
    rng = np.random.default_rng(2)
    references = (rng.random((30, len(codes))) < 0.15).astype(float)
    predictions = (rng.random((30, len(codes))) < 0.2).astype(float)
    observed, correct, inactive = cinc_row_components(references, predictions, codes)
    score = resampled_ratio(observed, correct, inactive, np.arange(30)[None])[0]
    metric = load_metric("cinc2021_challenge_score").compute(references=references, predictions=predictions, label_names=codes)
    assert score == pytest.approx(metric["challenge_score"])
    rows = bootstrap_indices(30, 3, seed=0)[1]
    again = load_metric("cinc2021_challenge_score").compute(
        references=references[rows], predictions=predictions[rows], label_names=codes
    )
    assert resampled_ratio(observed, correct, inactive, rows[None])[0] == pytest.approx(again["challenge_score"])


# ------------------------------------------------------------------------------------------------ schema, probe, report


def example_row(**overrides) -> dict:
    fields = dict(task="ptbxl-super", dataset="PTB-XL", split_source="merl", prompt_set="merl", protocol="zero-shot",
                  metric="macro_auroc", value=0.7, ci95=[0.65, 0.75], n_test=10, seed=42, model="m")
    return result_row(**{**fields, **overrides})


def test_result_rows_are_checked_and_merged(tmp_path):
    path = tmp_path / "results.json"
    write_rows(path, [example_row(), example_row(task="csn", dataset="CSN")])
    write_rows(path, [example_row(value=0.8)])  # same identity: replaced
    rows = read_rows(tmp_path)
    assert json.loads(path.read_text())["schema"] == "cmelt-results/1"
    assert sorted((row["task"], row["value"]) for row in rows) == [("csn", 0.7), ("ptbxl-super", 0.8)]
    with pytest.raises(ValueError, match="protocol must be one of"):
        example_row(protocol="few-shot")
    with pytest.raises(ValueError, match="split_source must be one of"):
        example_row(split_source="random")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 1, "results": []}))
    with pytest.raises(ValueError, match="not a 'cmelt-results/1' results file"):
        read_rows(tmp_path / "old.json")


def test_logreg_probe_picks_c_by_validation_log_loss():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(90, 5))
    labels = np.stack([features[:, 0] > 0, features[:, 1] + 0.5 * rng.normal(size=90) > 0], axis=1).astype(float)
    scores, details = linear_probe.logreg_probe(features[:50], labels[:50], features[50:70], labels[50:70], features[70:])
    assert scores.shape == (20, 2) and details["C"] in linear_probe.LOGREG_C_GRID
    assert details["validation_log_loss"][details["C"]] == min(details["validation_log_loss"].values())
    assert roc_auc_score(labels[70:, 0], scores[:, 0]) > 0.8


def test_report_table_puts_paper_numbers_beside_measured_rows(tmp_path):
    baseline = {"value": 0.5, "ci95": [0.4, 0.6]}
    write_rows(tmp_path / "results.json", [
        example_row(baseline=baseline, delta_vs_baseline={"value": 0.2, "ci95": [0.1, 0.3]}),
        example_row(task="ptbxl-super->csn", dataset="CSN", protocol="domain-transfer"),
    ])
    text = report.main([str(tmp_path), "--output", str(tmp_path / "table.md")])
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ptbxl-super")}
    assert "paper, published" in text.splitlines()[0]
    assert lines["zero-shot"].endswith("| 70.00 [65.00, 75.00] | 50.00 [40.00, 60.00] | 20.00 [10.00, 30.00] | 76.2 |")
    assert lines["domain-transfer"].endswith("| 70.00 [65.00, 75.00] | — | — | — |")  # no published number
    assert (tmp_path / "table.md").read_text() == text


# ------------------------------------------------------------------------------------------------ end to end

PER_SPLIT = {"train": 10, "validation": 6, "test": 8}


@pytest.fixture(scope="module")
def merl_model(tmp_path_factory):
    from conftest import build_tiny_model_folder

    texts = [text for label_set in MERL_LABEL_SETS for text in load_label_descriptions(label_set, prompts="merl").values()]
    return build_tiny_model_folder(tmp_path_factory.mktemp("cmelt-merl"), name="model", extra_texts=texts)


@pytest.fixture(scope="module")
def merl_roots(tmp_path_factory, merl_folder):
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference records not found at {SHARED_DATA}")
    base = tmp_path_factory.mktemp("merl-data")
    return {
        "ptbxl_super": write_ptbxl_merl_fixture(base / "ptb-xl", SHARED_DATA, PER_SPLIT),
        "cpsc2018": write_cpsc_merl_fixture(base / "cpsc2018", PER_SPLIT),
        "csn": write_csn_merl_fixture(base / "csn", merl_folder, PER_SPLIT),
        "cache": base / "cache",
    }


def merl_arguments(model, roots, dataset: str, output: Path, root_key: str | None = None) -> list[str]:
    return ["--model", str(model), "--dataset", dataset, "--root", str(roots[root_key or dataset]), "--split", "merl",
            "--cache_dir", str(roots["cache"]), "--output_dir", str(output), "--baseline", "random", "--no_progress",
            "--no_figures", "--batch_size", "8"]


def check_printed(capsys, rows: list[dict]) -> None:
    printed = capsys.readouterr().out
    for row in rows:
        assert row["split_source"] == "merl" and row["baseline"]["kind"] == "random-init"
        assert row["ci95"][0] <= row["value"] <= row["ci95"][1]
        assert row["delta_vs_baseline"]["value"] == pytest.approx(row["value"] - row["baseline"]["value"])
        value = f"{row['value'] * 100:.2f} [{row['ci95'][0] * 100:.2f}, {row['ci95'][1] * 100:.2f}]"
        assert value in printed and f"random-init baseline {row['baseline']['value'] * 100:.2f}" in printed


@pytest.mark.slow
@pytest.mark.parametrize("dataset,root_key", [("ptbxl_super", None), ("ptbxl_rhythm", "ptbxl_super"),
                                              ("cpsc2018", None), ("csn", None)])
def test_zero_shot_merl_split_prompts_and_baseline(merl_model, merl_roots, dataset, root_key, tmp_path, capsys):
    row = zero_shot.main(merl_arguments(merl_model, merl_roots, dataset, tmp_path, root_key) + ["--prompts", "merl"])
    check_printed(capsys, [row])
    assert row["prompt_set"] == "merl" and row["protocol"] == "zero-shot"
    expected_test = {"ptbxl_super": PER_SPLIT["test"], "cpsc2018": PER_SPLIT["test"], "csn": PER_SPLIT["test"]}
    if dataset in expected_test:
        assert row["n_test"] == expected_test[dataset]  # exactly the published test rows written to the fixture
    assert read_rows(tmp_path / "results.json") == [row]


@pytest.mark.slow
def test_linear_probe_merl_split_both_protocols_and_baseline(merl_model, merl_roots, tmp_path, capsys):
    rows = linear_probe.main(merl_arguments(merl_model, merl_roots, "ptbxl_super", tmp_path) + [
        "--protocol", "paper", "logreg", "--label_fraction", "0.5", "1.0", "--epochs", "3"])
    check_printed(capsys, rows)
    assert sorted((row["protocol"], row["label_fraction"]) for row in rows) == [
        ("linear-probe", 0.5), ("linear-probe", 1.0), ("linear-probe-logreg", 0.5), ("linear-probe-logreg", 1.0)]
    assert all(row["n_test"] == PER_SPLIT["test"] for row in rows)


@pytest.mark.slow
def test_finetune_merl_split_and_baseline(merl_model, merl_roots, tmp_path, capsys):
    row = finetune.main(merl_arguments(merl_model, merl_roots, "cpsc2018", tmp_path) + [
        "--epochs", "1", "--train_batch_size", "5", "--device", "cpu"])
    check_printed(capsys, [row])
    assert row["protocol"] == "fine-tune" and row["task"] == "cpsc2018" and row["leads"] == "12"


@pytest.mark.slow
def test_domain_transfer_merl_split_prompts_and_baseline_then_report(merl_model, merl_roots, tmp_path, capsys):
    row = domain_transfer.main(merl_arguments(merl_model, merl_roots, "csn", tmp_path / "dt") + [
        "--source", "cpsc2018", "--prompts", "merl"])
    check_printed(capsys, [row])
    assert row["task"] == "cpsc2018->csn" and row["prompt_set"] == "merl"
    zero_shot.main(merl_arguments(merl_model, merl_roots, "cpsc2018", tmp_path / "zs") + ["--prompts", "merl"])
    capsys.readouterr()
    text = report.main([str(tmp_path)])
    assert "| cpsc2018 | zero-shot |" in text and "| 80.1 |" in text and "| cpsc2018->csn | domain-transfer |" in text


@pytest.mark.slow
def test_split_files_folder_gives_the_shipped_rows(merl_roots, merl_folder):
    shipped = load_evaluation_data("csn", str(merl_roots["csn"]), split="merl", cache_dir=str(merl_roots["cache"]))
    original = load_evaluation_data("csn", str(merl_roots["csn"]), split_files=str(merl_folder / "finetune" / "data_split"),
                                    cache_dir=str(merl_roots["cache"]))
    assert shipped.split_source == original.split_source == "merl"
    for split in ("train", "validation", "test"):
        assert shipped.dataset_dict[split]["record_id"] == original.dataset_dict[split]["record_id"]
        assert len(shipped.dataset_dict[split]) == PER_SPLIT[split]
        assert shipped.dataset_dict[split]["labels"] == original.dataset_dict[split]["labels"]
    assert shipped.codes == label_codes("csn")  # MERL's 38 labels, none dropped
