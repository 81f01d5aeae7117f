"""N3S: farthest reports by brute force, the map-time column, cache reuse, and too-few-reports handling."""

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

import cmelt.data.n3s as n3s
from cmelt.data.n3s import ReportTable, add_n3s_column, embed_reports, farthest_reports, report_table_of
from cmelt.data.synthetic import generate_demo_ecgs
from cmelt.data.text_tower import build_tiny_t5
from cmelt.data.mimic_iv_ecg import merge_reports


@pytest.fixture(scope="module")
def reports():
    batch = generate_demo_ecgs(400, seed=8, noise_level=0.0)
    return sorted({merge_reports(statements) for statements in batch.reports})


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, reports):
    return str(build_tiny_t5(reports, tmp_path_factory.mktemp("tiny_t5"), vocab_size=160, d_model=32, d_ff=64))


def corpus(reports, id_step=1):
    """Rows repeat reports with a skew (the first report is the most common), like MIMIC."""
    rng = np.random.default_rng(0)
    picks = np.minimum(rng.zipf(1.6, size=300) - 1, len(reports) - 1)
    return Dataset.from_dict({"report": [reports[i] for i in picks], "report_id": [int(i) * id_step + 7 for i in picks]})


def test_embeddings_are_normalised_and_ignore_padding(encoder, reports):
    embeddings = embed_reports(reports[:20], encoder, batch_size=8)
    assert embeddings.shape[0] == 20 and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    short = min(reports, key=len)
    alone = embed_reports([short], encoder)
    padded = embed_reports([short, max(reports, key=len)], encoder, batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_farthest_reports_match_brute_force(encoder, reports):
    embeddings = embed_reports(reports, encoder)
    k = 6
    found = farthest_reports(embeddings, k=k)
    assert found.shape == (len(reports), k) and found.dtype == np.int64
    similarity = embeddings @ embeddings.T
    for row in range(len(reports)):
        assert row not in found[row] and len(set(found[row])) == k
        others = np.delete(similarity[row], row)
        expected_scores = np.sort(others)[:k]
        np.testing.assert_allclose(np.sort(similarity[row, found[row]]), expected_scores, atol=1e-5)


def test_ivf_index_gives_valid_candidates(encoder, reports):
    embeddings = embed_reports(reports, encoder)
    found = farthest_reports(embeddings, k=4, index_type="ivf")
    assert found.shape == (len(reports), 4)
    assert all(row not in found[row] for row in range(len(reports)))
    assert (found >= 0).all() and (found < len(reports)).all()


def test_fewer_reports_than_k_plus_one():
    vectors = np.eye(5, 8, dtype=np.float32)
    with pytest.warns(UserWarning, match="reduced from 8 to 4"):
        found = farthest_reports(vectors, k=8)
    assert found.shape == (5, 4)
    assert all(sorted(found[row]) == [other for other in range(5) if other != row] for row in range(5))
    with pytest.warns(UserWarning, match="reduced"):
        assert farthest_reports(vectors[:1], k=3).shape == (1, 0)


def test_column_is_the_lookup_of_each_rows_report(encoder, reports, tmp_path):
    dataset = corpus(reports, id_step=3)  # sparse ids
    k = 5
    result = add_n3s_column(DatasetDict({"train": dataset, "validation": dataset.select(range(40))}), tmp_path, encoder, k=k)
    table = ReportTable.load(tmp_path)
    assert len(table) == len(set(dataset["report"]))
    embeddings = embed_reports(table.all_texts, encoder)
    expected = farthest_reports(embeddings, k=k)
    for split in ("train", "validation"):
        assert result[split].column_names == ["report", "report_id", "n3s_negatives"]
        for row in result[split]:
            own = int(row["report_id"])
            assert table.text(own) == row["report"]
            assert own not in row["n3s_negatives"] and len(row["n3s_negatives"]) == k
            expected_ids = table.report_ids[expected[table.rows([own])[0]]]
            assert sorted(row["n3s_negatives"]) == sorted(expected_ids.tolist())
    negative = result["train"][0]["n3s_negatives"]
    assert table.texts(negative) == [table.text(report_id) for report_id in negative]


def test_rerun_reuses_embeddings_index_and_neighbours(encoder, reports, tmp_path, monkeypatch):
    dataset = corpus(reports)
    first = add_n3s_column(dataset, tmp_path, encoder, k=4)
    cached = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    assert any(name.endswith(".faiss") for name in cached) and any(name.startswith("embeddings") for name in cached)

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(n3s, "embed_reports", must_not_run)
    monkeypatch.setattr(n3s, "build_index", must_not_run)
    again = add_n3s_column(dataset, tmp_path, encoder, k=4)
    assert again["n3s_negatives"] == first["n3s_negatives"]
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir() if path.name in cached} == cached
    other_k = add_n3s_column(dataset, tmp_path, encoder, k=3)  # new k: same embeddings and index, new search
    assert len(other_k[0]["n3s_negatives"]) == 3


def test_a_single_report_gets_no_candidates(encoder, tmp_path):
    dataset = Dataset.from_dict({"report": ["sinus rhythm normal ecg"] * 4, "report_id": [0] * 4})
    with pytest.warns(UserWarning, match="reduced"):
        result = add_n3s_column(dataset, tmp_path, encoder, k=4)
    assert all(row == [] for row in result["n3s_negatives"])


def test_inconsistent_report_ids_are_rejected():
    dataset = Dataset.from_dict({"report": ["a", "b"], "report_id": [1, 1]})
    with pytest.raises(ValueError, match="two texts"):
        report_table_of(dataset)


def test_length_batches_respect_rows_and_token_budget():
    from cmelt.data.n3s import length_batches

    lengths = [5, 50, 7, 300, 6, 49, 8]
    batches = length_batches(lengths, batch_size=3, max_batch_tokens=100)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for rows in batches:
        assert len(rows) <= 3
        assert len(rows) == 1 or max(lengths[r] for r in rows) * len(rows) <= 100
    assert [lengths[r] for r in batches[-1]] == [300]  # longer than the budget: alone
    flat = [lengths[r] for rows in batches for r in rows]
    assert flat == sorted(lengths)  # ordered by length, so padding stays small


def test_embeddings_do_not_depend_on_batching(encoder, reports):
    from cmelt.data.n3s import embed_reports

    one_by_one = embed_reports(reports, encoder, batch_size=1)
    budgeted = embed_reports(reports, encoder, batch_size=64, max_batch_tokens=64)
    np.testing.assert_allclose(budgeted, one_by_one, atol=1e-5)
