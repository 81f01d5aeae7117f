"""Seeded splits, label-fraction subsets for linear probing (1 %, 10 %, 100 %) and a patient-leakage check."""

from __future__ import annotations

from collections.abc import Sequence as SequenceType

import numpy as np
from datasets import Dataset, DatasetDict


def random_split_indices(
    num_items: int, fractions: SequenceType[float] = (0.7, 0.1, 0.2), seed: int = 42
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random (train, validation, test) index arrays of `num_items` items.

    The validation and test sizes are `round(fraction * num_items)`; train takes the rest, so every item is in
    exactly one split. The same seed and count always give the same split.
    """
    fractions = tuple(float(value) for value in fractions)
    if len(fractions) != 3 or any(value < 0 for value in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 (train, valid, test), got {fractions}")
    order = np.random.default_rng(seed).permutation(num_items)
    num_test = int(round(fractions[2] * num_items))
    num_valid = int(round(fractions[1] * num_items))
    test = np.sort(order[:num_test])
    valid = np.sort(order[num_test : num_test + num_valid])
    train = np.sort(order[num_test + num_valid :])
    return train, valid, test


def label_fraction_subsample(dataset: Dataset, fraction: float, seed: int = 42) -> Dataset:
    """A seeded subset of `round(fraction * len(dataset))` rows (at least one) that keeps every class present.

    Classes are covered rarest first, one randomly chosen record each, as long as the budget allows (with fewer
    rows than classes the rarest classes win); the rest of the budget is filled at random. `fraction >= 1`
    returns the dataset unchanged. Needs the multi-hot `labels` column.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or len(dataset) == 0:
        return dataset
    if "labels" not in dataset.column_names:
        raise ValueError(f"label_fraction_subsample needs a multi-hot 'labels' column; columns: {dataset.column_names}")
    labels = np.asarray(dataset.with_format("numpy")["labels"]) > 0
    budget = max(1, int(round(fraction * len(dataset))))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))
    chosen: list[int] = []
    covered = np.zeros(labels.shape[1], dtype=bool)
    counts = labels.sum(axis=0)
    for label in np.argsort(counts, kind="stable"):
        if len(chosen) >= budget:
            break
        if covered[label] or counts[label] == 0:
            continue
        pick = order[labels[order, label]][0]
        chosen.append(int(pick))
        covered |= labels[pick]
    taken = set(chosen)
    for index in order:
        if len(chosen) >= budget:
            break
        if int(index) not in taken:
            chosen.append(int(index))
            taken.add(int(index))
    return dataset.select(sorted(chosen))


def check_patient_leakage(dataset_dict: DatasetDict, column: str = "patient_id") -> None:
    """Raises ValueError when a patient appears in more than one split (empty ids are ignored).

    Datasets without the column (no patient ids published, e.g. CPSC2018) pass: there is nothing to check.
    """
    patients: dict[str, set[str]] = {}
    for split, dataset in dataset_dict.items():
        if column not in dataset.column_names:
            continue
        patients[split] = {str(value) for value in dataset[column] if value not in (None, "")}
    names = list(patients)
    problems = []
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            shared = patients[first] & patients[second]
            if shared:
                examples = ", ".join(sorted(shared)[:5])
                problems.append(f"{len(shared)} patient(s) in both {first!r} and {second!r} (e.g. {examples})")
    if problems:
        raise ValueError("patient leakage between splits: " + "; ".join(problems))
