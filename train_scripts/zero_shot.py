"""Zero-shot evaluation: score every ECG of a labelled dataset against text prompts of its labels.

    cmelt-zero-shot --model MODEL_FOLDER --dataset cpsc2018 --root /data/cpsc2018 --output_dir runs/zero_shot

The scoring and its evaluation live in `train_scripts.scoring`, the figures in `train_scripts.figures`; this file is
the command line only.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cmelt.data.leads import add_leads_argument, lead_keep_mask, lead_names
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
    macro_auroc_row_fields,
    result_row,
    task_and_dataset,
    write_and_print_rows,
)
from cmelt.train_scripts.figures import save_evaluation_figures
from cmelt.train_scripts.scoring import (
    evaluate_zero_shot,
    labels_of,
    load_dual_encoder,
    predict_ecg_features,
    random_baseline_scores,
    read_descriptions_file,
)
from modeling_cmelt.pipeline_cmelt import label_texts_for, resolve_prompts


def main(argv: list[str] | None = None) -> dict | None:
    """Zero-shot macro AUROC of a model on a dataset's test split (CI, optional random-init baseline); writes
    results.json ("cmelt-results/1") and figures. Flags the script does not define are `TrainingArguments` flags
    (`--bf16 true`, `--per_device_eval_batch_size`, `--report_to`, ...); under `accelerate launch` / `torchrun` the
    ECG pass is split over the processes and the main process writes (the others return None)."""
    parser = argparse.ArgumentParser(description="Zero-shot evaluation: prompts of the dataset's labels, macro AUROC.")
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    add_prompt_arguments(parser)
    parser.add_argument("--eval_split", default="test", help="the split scored (default: test)")
    parser.add_argument("--descriptions", default=None, help="JSON {code: text or [texts]} overriding single labels' prompts")
    parser.add_argument("--hypothesis_template", default="{}", help="format applied to every prompt, e.g. 'ECG: {}'")
    add_leads_argument(parser)
    args, training_flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    training_args = evaluation_training_arguments(args, training_flags)  # fail before loading anything
    keep = lead_keep_mask(args.leads)

    descriptions = read_descriptions_file(args.descriptions) if args.descriptions else None
    data = data_from_args(args)
    if data.task != CLASSIFICATION:
        raise ValueError(f"zero-shot needs a labelled dataset; {data.name!r} is {data.task}")
    test = require_split(data, args.eval_split)
    torch.manual_seed(args.seed)
    model, tokenizer = load_dual_encoder(args.model)
    prompt_name = resolve_prompts(args.prompts, data.label_set, args.model)[1]
    texts = label_texts_for(
        data.codes, data.label_set, descriptions, args.hypothesis_template, folder=args.model, prompts=args.prompts
    )
    embeddings = predict_ecg_features(model, {"test": test}, training_args, keep)["test"]
    result = evaluate_zero_shot(model, tokenizer, test, texts, data.codes, embeddings=embeddings)
    scores = result["scores"]
    baseline_scores = random_baseline_scores(args.model, tokenizer, test, texts, args, training_args, keep)
    if training_args.process_index != 0:
        return None  # the main process writes the results and figures, once

    references = labels_of(test)
    figures = {} if args.no_figures else save_evaluation_figures(
        args.output_dir, f"zero_shot_{data.name}", test, data.codes, result["scores"], references, embeddings.numpy(), args.seed,
        lead_mask_override=keep,
    )
    task, dataset = task_and_dataset(data.label_set, data.name)
    row = result_row(
        task=task, dataset=dataset, split_source=data.split_source,
        prompt_set=prompt_name + ("+descriptions" if descriptions else ""), protocol="zero-shot", leads=args.leads,
        metric="macro_auroc", per_label=result["per_class"], n_test=len(test), seed=args.seed,
        model=args.model_name or str(args.model), commit=current_commit(),
        **macro_auroc_row_fields(references, scores, baseline_scores, args.seed, args.bootstrap_resamples),
        details={"eval_split": args.eval_split, "label_set": data.label_set, "figures": figures,
                 "lead_set": args.leads, "leads": list(lead_names(args.leads)),
                 "classes_without_both_values": result["skipped_classes"],
                 "ecg_pass_processes": training_args.world_size},
    )
    write_and_print_rows(args.output_dir, [row])
    return row


if __name__ == "__main__":
    main()
