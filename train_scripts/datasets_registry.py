"""One table from a downstream dataset name to its loader and label set, plus the dataset / model arguments that
every evaluation script (zero_shot, linear_probe, finetune, domain_transfer) shares. A library module, not a command:
the scripts import it, it imports no script.

    --dataset ptbxl_super --root /data/ptb-xl        # run the loader (cached by the datasets library)
    --dataset_path runs/cpsc2018                      # a DatasetDict saved with `save_to_disk` (e.g. by a loader CLI)
    --dataset csn --root /data/csn --split merl       # MERL's published rows and labels (shipped lists)
    --split merl --split_files MERL/finetune/data_split   # ... read from MERL's original CSV folder instead

`--split merl` exists for PTB-XL (super / sub / form / rhythm), CPSC2018 and CSN; without it PTB-XL uses its
folds and the others a seeded random split. The result rows record it as `split_source`.

A saved DatasetDict carries its class codes in `label_ids` (Sequence(ClassLabel)); its label set (which shipped
prompts and which metric apply) is `--label_set`, else the `--dataset` name, else the one label set whose codes
contain all of the dataset's codes (CSN may have dropped rare classes, so a subset is accepted).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from cmelt.data.downstream import label_names
from cmelt.data.labels import LABEL_SETS

CLASSIFICATION = "classification"
IDENTIFICATION = "patient_identification"


@dataclass(frozen=True)
class CMELTDatasetSpec:
    """A downstream dataset known by name.

    Attributes:
        name: the `--dataset` name (also the `dataset` field of result entries).
        label_set: key of `data.labels.LABEL_SETS` (None: patient identification, which has no label columns).
        task: `CLASSIFICATION` (multi-label, `labels` multi-hot) or `IDENTIFICATION` (`identity` + `role`).
        loader_module: module of the loader, imported only when this dataset is loaded (so a script never pays
            for, or breaks on, the other loaders' imports).
        loader_function: `load_*(root, **kwargs) -> DatasetDict` in that module.
        loader_task: the loader's `task` argument, when it has one (PTB-XL, PhysioNet 2021).
        default_split_source: `split_source` of result rows without `--split merl`.
        has_merl_split: whether MERL published a split of this dataset (`--split merl`).
    """

    name: str
    label_set: str | None
    task: str
    loader_module: str
    loader_function: str
    loader_task: str | None = None
    default_split_source: str = "seeded"
    has_merl_split: bool = False

    def loader(self) -> Callable[..., DatasetDict]:
        import importlib

        function = getattr(importlib.import_module(self.loader_module), self.loader_function)
        return functools.partial(function, task=self.loader_task) if self.loader_task else function


DATASETS: dict[str, CMELTDatasetSpec] = {
    spec.name: spec
    for spec in (
        *(
            CMELTDatasetSpec(f"ptbxl_{task}", f"ptbxl_{task}", CLASSIFICATION, "data.ptbxl", "load_ptbxl", task,
                             "ptbxl-folds", True)
            for task in ("super", "sub", "form", "rhythm")
        ),
        CMELTDatasetSpec("cpsc2018", "cpsc2018", CLASSIFICATION, "data.cpsc2018", "load_cpsc2018", has_merl_split=True),
        CMELTDatasetSpec("csn", "csn", CLASSIFICATION, "data.csn", "load_csn", has_merl_split=True),
        CMELTDatasetSpec("code_test", "code_test", CLASSIFICATION, "data.code_test", "load_code_test"),
        CMELTDatasetSpec("physionet2021", "physionet2021", CLASSIFICATION, "data.physionet2021", "load_physionet2021", "dx"),
        CMELTDatasetSpec("physionet2021_id", None, IDENTIFICATION, "data.physionet2021", "load_physionet2021", "id"),
    )
}


@dataclass
class CMELTEvaluationData:
    """A loaded downstream dataset and what the scripts need to know about it."""

    name: str
    dataset_dict: DatasetDict
    label_set: str | None
    task: str
    codes: list[str]
    split_source: str = "user"


def dataset_spec(name: str) -> CMELTDatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} (or pass --dataset_path)")
    return DATASETS[name]


def infer_label_set(codes: list[str]) -> str | None:
    """The label set whose codes are exactly `codes`, else the only one containing them all, else None."""
    exact = [name for name, labels in LABEL_SETS.items() if [label.code for label in labels] == list(codes)]
    if exact:
        return exact[0]
    supersets = [name for name, labels in LABEL_SETS.items() if set(codes) <= {label.code for label in labels}]
    return supersets[0] if len(supersets) == 1 else None


def load_evaluation_data(
    dataset: str | None = None,
    root: str | None = None,
    dataset_path: str | None = None,
    label_set: str | None = None,
    split: str | None = None,
    split_files: str | None = None,
    **loader_kwargs,
) -> CMELTEvaluationData:
    """Load a dataset by name (`dataset` + `root`) or from disk (`dataset_path`); see the module docstring.

    `split="merl"` (with optional `split_files`, MERL's CSV folder): MERL's published rows and labels."""
    if label_set is not None and label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; expected one of {sorted(LABEL_SETS)}")
    if split not in (None, "default", "merl"):
        raise ValueError(f"--split must be 'default' or 'merl' (MERL's published rows), got {split!r}")
    merl = split == "merl" or split_files is not None
    spec = dataset_spec(dataset) if dataset is not None else None
    split_source = "user"
    if merl and (dataset_path is not None or spec is None or not spec.has_merl_split):
        known = sorted(name for name, item in DATASETS.items() if item.has_merl_split)
        raise ValueError(
            f"--split merl needs --dataset NAME --root ROOT with a dataset MERL published splits for ({known}); "
            f"got dataset {dataset!r}" + (" and a saved --dataset_path (its splits are fixed)" if dataset_path else "")
        )
    if dataset_path is not None:
        path = Path(dataset_path)
        if not path.is_dir():
            raise ValueError(f"--dataset_path {path}: not a folder (expected a DatasetDict saved with save_to_disk)")
        dataset_dict = load_from_disk(str(path))
        if not isinstance(dataset_dict, DatasetDict):
            raise ValueError(f"--dataset_path {path}: holds a single Dataset; expected a DatasetDict with splits")
        name = dataset or path.name
    elif spec is not None:
        if root is None:
            raise ValueError(f"--dataset {dataset} needs --root (the folder of the raw dataset)")
        if merl:
            loader_kwargs = {**loader_kwargs, "split": "merl", "split_files": split_files}
        dataset_dict = spec.loader()(root, **loader_kwargs)
        name = spec.name
        split_source = "merl" if merl else spec.default_split_source
    else:
        raise ValueError("give --dataset NAME --root ROOT, or --dataset_path SAVED_DATASETDICT")

    task = spec.task if spec is not None else (CLASSIFICATION if "label_ids" in next(iter(dataset_dict.values())).features else IDENTIFICATION)
    if task == IDENTIFICATION:
        return CMELTEvaluationData(name, dataset_dict, None, task, [], split_source)
    codes = label_names(dataset_dict)
    label_set = label_set or (spec.label_set if spec is not None else None) or infer_label_set(codes)
    if label_set is not None:
        unknown = sorted(set(codes) - {label.code for label in LABEL_SETS[label_set]})
        if unknown:
            raise ValueError(f"dataset codes {unknown} are not codes of label set {label_set!r}")
    return CMELTEvaluationData(name, dataset_dict, label_set, task, codes, split_source)


def require_split(data: CMELTEvaluationData, split: str):
    if split not in data.dataset_dict:
        raise ValueError(f"dataset {data.name!r} has no {split!r} split (splits: {list(data.dataset_dict)})")
    return data.dataset_dict[split]


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", default=None, help=f"dataset name: {', '.join(sorted(DATASETS))}")
    group.add_argument("--root", default=None, help="folder of the raw dataset (with --dataset)")
    group.add_argument("--dataset_path", default=None, help="a DatasetDict saved with save_to_disk")
    group.add_argument("--label_set", default=None, help="label set of a saved dataset (default: inferred)")
    group.add_argument("--split", choices=("default", "merl"), default="default",
                       help="rows of the splits: 'merl' = MERL's published split files (PTB-XL, CPSC2018, CSN; the "
                            "benchmark of the paper's Tab. 2 / 3); default: PTB-XL folds / seeded random split")
    group.add_argument("--split_files", "--split_files", dest="split_files", default=None,
                       help="MERL's original finetune/data_split folder (implies --split merl; default: shipped lists)")
    group.add_argument("--cache_dir", default=None, help="datasets cache of the loader")
    group.add_argument("--num_proc", type=int, default=1, help="processes reading raw records")
    group.add_argument("--max_samples", type=int, default=None, help="use only the first N rows of each split (smoke runs)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a saved C-MELT model folder (pretraining or fine-tuned)")
    parser.add_argument("--model_name", default=None, help="name in the results file (default: the --model path)")
    parser.add_argument("--output_dir", required=True, help="results.json and figures are written here")
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no_figures", action="store_true", help="skip the ROC / t-SNE / 12-lead figures")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--baseline", choices=("none", "random"), default="none",
                        help="'random': also evaluate the same architecture with seeded random weights, same protocol")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000,
                        help="seeded resamples of the test set for the 95 %% confidence intervals")


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", default="cmelt",
                        help="label texts: 'cmelt' (our clinical descriptions), 'merl' (MERL's CKEPE prompts) or a JSON "
                             "file {code: text or [texts]} (e.g. the C-MELT authors' descriptions)")


def data_from_args(args: argparse.Namespace) -> CMELTEvaluationData:
    kwargs = {"num_proc": args.num_proc, "cache_dir": args.cache_dir} if args.dataset_path is None else {}
    data = load_evaluation_data(
        args.dataset, args.root, args.dataset_path, args.label_set, args.split, args.split_files, **kwargs
    )
    if args.max_samples is not None:
        if args.max_samples < 1:
            raise ValueError(f"--max_samples must be a positive row count, got {args.max_samples}")
        data.dataset_dict = DatasetDict(
            {split: rows.select(range(min(args.max_samples, len(rows)))) for split, rows in data.dataset_dict.items()}
        )
    return data


def device_from_args(args: argparse.Namespace):
    import torch

    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
