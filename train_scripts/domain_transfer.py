"""Zero-shot domain transfer (paper Tab. 4 / 11): label a target dataset with the SOURCE label set's prompts.

    python -m train_scripts.domain_transfer --model MODEL --source ptbxl_super --dataset cpsc2018 --root CPSC \
        --output_dir runs/transfer

Each source label is prompted with its shipped description (or `--descriptions`); `data.labels.DOMAIN_TRANSFER`
says which target classes a source label stands for (PTBXL-Super -> CPSC2018: NORM -> NORM; CD -> 1AVB, CRBBB,
CLBBB; STTC -> STE, STD; MI, HYP -> none). A target class is scored with the zero-shot score of the source label
mapped to it (the highest one when several source labels map to it, e.g. CPSC2018 -> CSN: STE <- STE and STD);
the metric is the macro AUROC over the mapped target classes present in the dataset.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from data.labels import DOMAIN_TRANSFER, label_codes
from modeling_cmelt.pipeline_cmelt import label_texts_for
from train_scripts.datasets_registry import (
    CLASSIFICATION,
    add_dataset_arguments,
    add_model_arguments,
    data_from_args,
    device_from_args,
    require_split,
)
from train_scripts.evaluation import load_metric, write_results
from train_scripts.linear_probe import labels_of
from train_scripts.zero_shot import (
    ecg_embeddings,
    load_dual_encoder,
    read_descriptions_file,
    save_evaluation_figures,
    zero_shot_scores,
)

TARGET_SCORE_RULE = "max over the source labels mapped to the target class"


def transfer_mapping(source: str, target: str) -> dict[str, list[str]]:
    """Target class -> the source labels mapped to it (target classes without a source label are left out)."""
    if (source, target) not in DOMAIN_TRANSFER:
        raise ValueError(
            f"no domain-transfer mapping from {source!r} to {target!r}; known (source, target) pairs: "
            f"{sorted(DOMAIN_TRANSFER)}"
        )
    mapping: dict[str, list[str]] = {}
    for source_label, targets in DOMAIN_TRANSFER[(source, target)].items():
        for target_label in targets:
            mapping.setdefault(target_label, []).append(source_label)
    return {code: mapping[code] for code in label_codes(target) if code in mapping}


def target_scores(source_scores: np.ndarray, source_labels: Sequence[str], mapping: Mapping[str, Sequence[str]]) -> np.ndarray:
    """(n, len(mapping)) target-class scores from (n, len(source_labels)) source-label scores (max rule)."""
    columns = {label: index for index, label in enumerate(source_labels)}
    return np.stack(
        [source_scores[:, [columns[label] for label in sources]].max(axis=1) for sources in mapping.values()], axis=1
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--source", required=True, help="source label set, e.g. ptbxl_super or cpsc2018")
    parser.add_argument("--split", default="test")
    parser.add_argument("--descriptions", default=None, help="JSON {source code: text or [texts]} overriding the shipped prompts")
    args = parser.parse_args(argv)

    descriptions = read_descriptions_file(args.descriptions) if args.descriptions else None
    data = data_from_args(args)
    if data.task != CLASSIFICATION or data.label_set is None:
        raise ValueError(f"domain transfer needs a labelled target dataset of a known label set; got {data.name!r}")
    mapping = transfer_mapping(args.source, data.label_set)
    absent = [code for code in mapping if code not in data.codes]
    mapping = {code: sources for code, sources in mapping.items() if code in data.codes}
    if not mapping:
        raise ValueError(f"none of the mapped target classes is in dataset {data.name!r} (classes {data.codes})")
    source_labels = [label for label in label_codes(args.source) if any(label in s for s in mapping.values())]
    test = require_split(data, args.split)

    torch.manual_seed(args.seed)
    model, tokenizer = load_dual_encoder(args.model, device_from_args(args))
    texts = label_texts_for(source_labels, args.source, descriptions, folder=args.model)
    embeddings = ecg_embeddings(model, test, args.batch_size, not args.no_progress)
    source_scores = zero_shot_scores(model, tokenizer, test, texts, args.batch_size, False, embeddings)
    scores = target_scores(source_scores, source_labels, mapping)
    all_references = labels_of(test)
    references = all_references[:, [data.codes.index(code) for code in mapping]]
    result = load_metric("macro_auroc").compute(references=references, predictions=scores, label_names=list(mapping))

    name = f"{args.source}->{data.name}"
    output_dir = Path(args.output_dir)
    figures = {} if args.no_figures else save_evaluation_figures(
        output_dir, f"domain_transfer_{args.source}_to_{data.name}", test, list(mapping), scores, references,
        embeddings.numpy(), args.seed,
    )
    entry = write_results(
        output_dir / "results.json",
        model=args.model_name or str(args.model),
        dataset=name,
        task=data.task,
        protocol="domain_transfer",
        metric_name="macro_auroc",
        value=result["macro_auroc"],
        per_class=result["per_class"],
        split=args.split,
        extra={
            "source_label_set": args.source,
            "target_dataset": data.name,
            "target_label_set": data.label_set,
            "mapping": mapping,
            "target_score": TARGET_SCORE_RULE,
            "mapped_classes_absent_from_dataset": absent,
            "classes_without_both_values": result["skipped_classes"],
            "num_records": len(test),
            "figures": figures,
        },
    )
    print(f"domain transfer {name} ({args.split}, {len(test)} records): macro AUROC {result['macro_auroc']:.4f}")
    for code, value in result["per_class"].items():
        print(f"  {code:<10}<- {'/'.join(mapping[code]):<22}{value:.4f}")
    print(f"results written to {output_dir / 'results.json'}")
    return entry


if __name__ == "__main__":
    main()
