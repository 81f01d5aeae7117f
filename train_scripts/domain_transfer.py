"""Zero-shot domain transfer (paper Tab. 4 / 11): label a target dataset with the SOURCE label set's prompts.

    python -m cmelt.train_scripts.domain_transfer --model MODEL --source ptbxl_super --dataset cpsc2018 --root CPSC \
        --output_dir runs/transfer

Each source label is prompted with its text in `--prompts` (cmelt, merl or a JSON file; `--descriptions` overrides
single labels); `data.labels.DOMAIN_TRANSFER`
says which target classes a source label stands for (PTBXL-Super -> CPSC2018: NORM -> NORM; CD -> 1AVB, CRBBB,
CLBBB; STTC -> STE, STD; MI, HYP -> none). A target class is scored with the zero-shot score of the source label
mapped to it (the highest one when several source labels map to it, e.g. CPSC2018 -> CSN: STE <- STE and STD);
the metric is the macro AUROC over the mapped target classes present in the dataset.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cmelt.data.labels import DOMAIN_TRANSFER, label_codes
from cmelt.train_scripts.datasets_registry import (
    CLASSIFICATION,
    add_dataset_arguments,
    add_model_arguments,
    add_prompt_arguments,
    data_from_args,
    require_split,
)
from cmelt.train_scripts.evaluation import (
    current_commit,
    evaluation_training_arguments,
    load_metric,
    macro_auroc_row_fields,
    result_row,
    task_and_dataset,
    write_and_print_rows,
)
from cmelt.train_scripts.figures import save_evaluation_figures
from cmelt.train_scripts.scoring import (
    labels_of,
    load_dual_encoder,
    predict_ecg_features,
    random_baseline_scores,
    read_descriptions_file,
    zero_shot_scores,
)
from modeling_cmelt.pipeline_cmelt import label_texts_for, resolve_prompts

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


def main(argv: list[str] | None = None) -> dict | None:
    """Flags the script does not define are `TrainingArguments` flags of the ECG pass (see `zero_shot.main`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    add_prompt_arguments(parser)
    parser.add_argument("--source", required=True, help="source label set, e.g. ptbxl_super or cpsc2018")
    parser.add_argument("--eval_split", default="test", help="the split scored (default: test)")
    parser.add_argument("--descriptions", default=None, help="JSON {source code: text or [texts]} overriding single labels' prompts")
    args, training_flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    training_args = evaluation_training_arguments(args, training_flags)  # fail before loading anything
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
    test = require_split(data, args.eval_split)

    torch.manual_seed(args.seed)
    model, tokenizer = load_dual_encoder(args.model)
    prompt_name = resolve_prompts(args.prompts, args.source, args.model)[1]
    texts = label_texts_for(source_labels, args.source, descriptions, folder=args.model, prompts=args.prompts)
    embeddings = predict_ecg_features(model, {"test": test}, training_args)["test"]
    source_scores = zero_shot_scores(model, tokenizer, test, texts, embeddings=embeddings)
    scores = target_scores(source_scores, source_labels, mapping)
    baseline_source = random_baseline_scores(args.model, tokenizer, test, texts, args, training_args)
    if training_args.process_index != 0:
        return None  # the ECG passes were shared; the main process writes the results and figures, once
    baseline_scores = None if baseline_source is None else target_scores(baseline_source, source_labels, mapping)
    references = labels_of(test)[:, [data.codes.index(code) for code in mapping]]
    result = load_metric("macro_auroc").compute(references=references, predictions=scores, label_names=list(mapping))

    figures = {} if args.no_figures else save_evaluation_figures(
        args.output_dir, f"domain_transfer_{args.source}_to_{data.name}", test, list(mapping), scores, references,
        embeddings.numpy(), args.seed,
    )
    source_task = task_and_dataset(args.source, args.source)[0]
    target_task, target_dataset = task_and_dataset(data.label_set, data.name)
    row = result_row(
        task=f"{source_task}->{target_task}", dataset=target_dataset, split_source=data.split_source,
        prompt_set=prompt_name + ("+descriptions" if descriptions else ""), protocol="domain-transfer",
        metric="macro_auroc", per_label=result["per_class"], n_test=len(test), seed=args.seed,
        model=args.model_name or str(args.model), commit=current_commit(),
        **macro_auroc_row_fields(references, scores, baseline_scores, args.seed, args.bootstrap_resamples),
        details={
            "eval_split": args.eval_split, "source_label_set": args.source, "target_dataset": data.name,
            "target_label_set": data.label_set, "mapping": mapping, "target_score": TARGET_SCORE_RULE,
            "mapped_classes_absent_from_dataset": absent, "classes_without_both_values": result["skipped_classes"],
            "figures": figures, "ecg_pass_processes": training_args.world_size,
        },
    )
    write_and_print_rows(args.output_dir, [row])
    return row


if __name__ == "__main__":
    main()
