"""Seeded splits, label-fraction subsets and the patient-leakage check."""

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from cmelt.data.splits import check_patient_leakage, label_fraction_subsample, random_split_indices


def test_random_split_is_a_seeded_partition():
    train, valid, test = random_split_indices(1001, (0.7, 0.1, 0.2), seed=42)
    assert (len(train), len(valid), len(test)) == (701, 100, 200)
    assert sorted(np.concatenate([train, valid, test]).tolist()) == list(range(1001))
    again = random_split_indices(1001, (0.7, 0.1, 0.2), seed=42)
    assert all(np.array_equal(first, second) for first, second in zip((train, valid, test), again))
    assert not np.array_equal(test, random_split_indices(1001, (0.7, 0.1, 0.2), seed=7)[2])
    with pytest.raises(ValueError):
        random_split_indices(10, (0.7, 0.2, 0.2))


def labelled_dataset(num_rows: int = 1000, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = np.zeros((num_rows, 5), dtype=np.float32)
    labels[:, 0] = 1.0  # a very common class
    labels[rng.choice(num_rows, 3, replace=False), 1] = 1.0  # rare classes
    labels[rng.choice(num_rows, 1, replace=False), 2] = 1.0
    labels[rng.choice(num_rows, 300, replace=False), 3] = 1.0
    labels[:, 4] = 0.0  # absent class
    return Dataset.from_dict({"record_id": [str(index) for index in range(num_rows)], "labels": labels.tolist()})


def test_label_fraction_subsample_keeps_rare_classes():
    dataset = labelled_dataset()
    subset = label_fraction_subsample(dataset, 0.01, seed=1)
    labels = np.asarray(subset["labels"])
    assert len(subset) == 10
    assert labels[:, :4].sum(axis=0).min() >= 1  # every present class kept, even the one-record class
    assert len(set(subset["record_id"])) == 10
    assert subset["record_id"] == label_fraction_subsample(dataset, 0.01, seed=1)["record_id"]
    assert subset["record_id"] != label_fraction_subsample(dataset, 0.01, seed=2)["record_id"]
    assert len(label_fraction_subsample(dataset, 0.1, seed=1)) == 100
    assert label_fraction_subsample(dataset, 1.0) is dataset
    tiny = label_fraction_subsample(dataset, 0.001, seed=1)  # budget 1 < 3 present classes: rarest wins
    assert len(tiny) == 1 and np.asarray(tiny["labels"])[0, 2] == 1.0
    with pytest.raises(ValueError):
        label_fraction_subsample(dataset, 0.0)


def test_patient_leakage_check():
    clean = DatasetDict(
        train=Dataset.from_dict({"patient_id": ["1", "2", ""]}),
        validation=Dataset.from_dict({"patient_id": ["3", ""]}),
        test=Dataset.from_dict({"patient_id": ["4"]}),
    )
    check_patient_leakage(clean)
    leaky = DatasetDict(train=clean["train"], test=Dataset.from_dict({"patient_id": ["2", "5"]}))
    with pytest.raises(ValueError, match="'train' and 'test'"):
        check_patient_leakage(leaky)
    check_patient_leakage(DatasetDict(train=Dataset.from_dict({"record_id": ["a"]})))  # no ids published
