"""Zero-shot evaluation: score every ECG of a labelled dataset against text prompts of its labels.

The scoring is the pipeline's (`modeling_cmelt.pipeline_cmelt`): label embeddings = mean of their prompts'
embeddings, score = sigmoid(scale * ecg . label + bias). Here it runs in batches over a `datasets.Dataset` whose rows
hold `ecg` (int16 uV, 12 x 5000), `lead_mask` and a multi-hot `labels` vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ecg_store import decode_ecg
from data.leads import add_leads_argument, apply_lead_subset, lead_keep_mask, lead_names
from modeling_cmelt.pipeline_cmelt import encode_label_texts, zero_shot_logits
from train_scripts.evaluation import load_metric


def ecg_batches(dataset, batch_size: int, device, progress: bool = True, description: str = "ECG embeddings"):
    """Yields (input_values float32 mV (b, 12, 5000), lead_mask bool (b, 12)) tensors on `device`, in row order."""
    columns = dataset.with_format("numpy", columns=["ecg", "lead_mask"])
    for start in tqdm(range(0, len(dataset), batch_size), desc=description, disable=not progress):
        rows = columns[start : start + batch_size]
        input_values = torch.from_numpy(decode_ecg(rows["ecg"])).to(device)
        lead_mask = torch.from_numpy(np.asarray(rows["lead_mask"], dtype=bool)).to(device)
        yield input_values, lead_mask


@torch.no_grad()
def ecg_embeddings(model, dataset, batch_size: int = 64, progress: bool = True, keep=None) -> torch.Tensor:
    """(len(dataset), projection_dim) ECG embeddings of a dataset with `ecg` and `lead_mask` columns.

    `keep`: (12,) bool lead subset (`data.leads.lead_keep_mask`); the other leads are zeroed and masked."""
    model.eval()
    embeds = []
    for input_values, lead_mask in ecg_batches(dataset, batch_size, model.device, progress):
        if keep is not None:
            input_values, lead_mask = apply_lead_subset(input_values, lead_mask, keep)
        embeds.append(model.get_ecg_features(input_values, lead_mask=lead_mask).pooler_output.float().cpu())
    return torch.cat(embeds)


@torch.no_grad()
def zero_shot_scores(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], batch_size: int = 64, progress: bool = True,
    embeddings: torch.Tensor | None = None,
) -> np.ndarray:
    """(len(dataset), len(label_texts)) sigmoid scores, columns in the order of `label_texts`.

    `embeddings`: the dataset's `ecg_embeddings`, when already computed (then the ECG tower is not run again)."""
    label_embeds = encode_label_texts(model, tokenizer, label_texts).float().cpu()
    if embeddings is None:
        embeddings = ecg_embeddings(model, dataset, batch_size, progress)
    logits = zero_shot_logits(model, embeddings.float().cpu(), label_embeds)
    return logits.sigmoid().numpy()


def evaluate_zero_shot(
    model, tokenizer, dataset, label_texts: Mapping[str, Sequence[str]], label_names: Sequence[str] | None = None,
    batch_size: int = 64, progress: bool = True, embeddings: torch.Tensor | None = None,
) -> dict:
    """Macro AUROC (and per-class AUROC) of zero-shot scores against the dataset's multi-hot `labels`.

    `label_names` gives the order of the `labels` columns (default: the keys of `label_texts`); each scored label
    must be one of them."""
    label_names = list(label_names or label_texts)
    missing = [label for label in label_texts if label not in label_names]
    if missing:
        raise ValueError(f"labels {missing} have prompts but no column in the dataset's labels {label_names}")
    scores = zero_shot_scores(model, tokenizer, dataset, label_texts, batch_size, progress, embeddings)
    references = np.asarray(dataset.with_format("numpy")["labels"], dtype=np.float32)
    references = references[:, [label_names.index(label) for label in label_texts]]
    result = load_metric("macro_auroc").compute(
        references=references, predictions=scores, label_names=list(label_texts)
    )
    return {
        "macro_auroc": result["macro_auroc"], "per_class": result["per_class"], "scores": scores,
        "skipped_classes": result["skipped_classes"],
    }


# ------------------------------------------------------------------------------------------------------------
# figures shared by every evaluation script

TSNE_MAX_POINTS = 2000
TOP_PREDICTIONS_SHOWN = 3


def example_row(references: np.ndarray | None) -> int:
    """Index of the row shown in the 12-lead figure: the first with a positive label (else the first)."""
    if references is not None and len(references) and references.ndim == 2:
        positive = np.flatnonzero(references.sum(axis=1) > 0)
        if positive.size:
            return int(positive[0])
    return 0


def save_evaluation_figures(
    output_dir,
    prefix: str,
    dataset,
    codes: Sequence[str],
    scores: np.ndarray | None = None,
    references: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    seed: int = 0,
    lead_mask_override: np.ndarray | None = None,
) -> dict[str, str]:
    """ROC curves per label, t-SNE of `embeddings` coloured by label and a 12-lead print of one example ECG with its
    top predicted labels, as `<output_dir>/<prefix>_{roc,tsne,example_ecg}.png`. Returns {figure: file name}
    (relative to `output_dir`, where results.json lives, so a results folder can be moved as a whole).

    `references` / `scores` are (n, len(codes)); the t-SNE uses a seeded subset of at most 2000 rows. A figure
    that cannot be drawn (e.g. fewer than 4 rows for t-SNE) is left out with a printed reason, never an error.
    `lead_mask_override`: (12,) bool; leads that are False are drawn as zero (fine-tuning on a lead subset).
    """
    from pathlib import Path

    from train_scripts import figures

    output_dir = Path(output_dir)
    written: dict[str, str] = {}
    codes = list(codes)
    if scores is not None and references is not None:
        scorable = [column for column in range(len(codes)) if references[:, column].min() != references[:, column].max()]
        if scorable:
            written["roc"] = str(figures.plot_roc_curves(
                references[:, scorable], scores[:, scorable], [codes[c] for c in scorable], output_dir / f"{prefix}_roc.png"
            ))
        else:
            print(f"figures: no ROC curves for {prefix}: no label has both positives and negatives")
    if embeddings is not None:
        if len(embeddings) >= 4:
            rows = np.arange(len(embeddings))
            if len(rows) > TSNE_MAX_POINTS:
                rows = np.sort(np.random.default_rng(seed).choice(rows, TSNE_MAX_POINTS, replace=False))
            colours = references[rows] if references is not None else np.zeros(len(rows), dtype=int)
            names = codes if references is not None else ["all"]
            written["tsne"] = str(figures.plot_embedding_tsne(
                np.asarray(embeddings)[rows], colours, names, output_dir / f"{prefix}_tsne.png", seed=seed
            ))
        else:
            print(f"figures: no t-SNE for {prefix}: {len(embeddings)} rows (at least 4 needed)")
    if len(dataset):
        index = example_row(references)
        row = dataset.with_format("numpy", columns=["ecg", "lead_mask"])[index]
        values = decode_ecg(row["ecg"])
        mask = np.asarray(row["lead_mask"], dtype=bool)
        if lead_mask_override is not None:
            mask = mask & np.asarray(lead_mask_override, dtype=bool)
        values = values * mask[:, None]
        predictions = None
        if scores is not None:
            best = np.argsort(-scores[index], kind="stable")[:TOP_PREDICTIONS_SHOWN]
            predictions = [(codes[column], float(scores[index, column])) for column in best]
        truth = [codes[c] for c in np.flatnonzero(references[index])] if references is not None else []
        record = dataset[index].get("record_id", index) if "record_id" in dataset.column_names else index
        title = f"record {record}" + (f" - labels: {', '.join(truth)}" if truth else "")
        written["example_ecg"] = str(figures.plot_ecg_12lead(
            values, output_dir / f"{prefix}_example_ecg.png", title=title, predictions=predictions
        ))
    return {figure: Path(path).name for figure, path in written.items()}


# ------------------------------------------------------------------------------------------------------------
# CLI


def read_descriptions_file(path) -> dict[str, list[str]]:
    """A user's prompts: JSON {code: text or [texts]}."""
    import json
    from pathlib import Path

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--descriptions {path}: expected a JSON file {{code: text or [texts]}} ({error})") from error
    if not isinstance(document, dict) or not all(
        isinstance(value, str) or (isinstance(value, list) and all(isinstance(text, str) for text in value))
        for value in document.values()
    ):
        raise ValueError(f"--descriptions {path}: expected a JSON object {{code: text or [texts]}}")
    return document


def load_dual_encoder(folder, device):
    """The dual encoder (`CMELTModel`) and tokenizer of a saved model folder, in eval mode on `device`."""
    from transformers import AutoTokenizer

    from modeling_cmelt import CMELTModel

    model = CMELTModel.from_pretrained(folder).to(device).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def random_baseline_scores(model_folder, tokenizer, device, test, texts, args, keep=None) -> np.ndarray | None:
    """With `--baseline random`: zero-shot scores of the same architecture with seeded random weights (else None),
    on the same lead subset `keep`."""
    from modeling_cmelt import CMELTModel
    from train_scripts.evaluation import random_init_like

    if args.baseline != "random":
        return None
    baseline = random_init_like(CMELTModel, model_folder, args.seed).to(device).eval()
    embeddings = ecg_embeddings(baseline, test, args.batch_size, not args.no_progress, keep)
    return zero_shot_scores(baseline, tokenizer, test, texts, args.batch_size, embeddings=embeddings)


def main(argv: list[str] | None = None) -> dict:
    """Zero-shot macro AUROC of a model on a dataset's test split (CI, optional random-init baseline); writes
    results.json ("cmelt-results/1") and figures."""
    import argparse

    from modeling_cmelt.pipeline_cmelt import label_texts_for, resolve_prompts
    from train_scripts.datasets_registry import (
        CLASSIFICATION,
        add_dataset_arguments,
        add_model_arguments,
        add_prompt_arguments,
        data_from_args,
        device_from_args,
        require_split,
    )
    from train_scripts.evaluation import (
        current_commit,
        macro_auroc_row_fields,
        result_row,
        task_and_dataset,
        write_and_print_rows,
    )

    parser = argparse.ArgumentParser(description="Zero-shot evaluation: prompts of the dataset's labels, macro AUROC.")
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    add_prompt_arguments(parser)
    parser.add_argument("--eval_split", default="test", help="the split scored (default: test)")
    parser.add_argument("--descriptions", default=None, help="JSON {code: text or [texts]} overriding single labels' prompts")
    parser.add_argument("--hypothesis_template", default="{}", help="format applied to every prompt, e.g. 'ECG: {}'")
    add_leads_argument(parser)
    args = parser.parse_args(argv)
    from train_scripts.evaluation import is_main_process

    if not is_main_process():
        return None  # launched on several processes: the main one evaluates and writes, once
    keep = lead_keep_mask(args.leads)  # fail before loading anything

    descriptions = read_descriptions_file(args.descriptions) if args.descriptions else None
    data = data_from_args(args)
    if data.task != CLASSIFICATION:
        raise ValueError(f"zero-shot needs a labelled dataset; {data.name!r} is {data.task}")
    test = require_split(data, args.eval_split)
    torch.manual_seed(args.seed)
    model, tokenizer = load_dual_encoder(args.model, device_from_args(args))
    prompt_name = resolve_prompts(args.prompts, data.label_set, args.model)[1]
    texts = label_texts_for(
        data.codes, data.label_set, descriptions, args.hypothesis_template, folder=args.model, prompts=args.prompts
    )
    progress = not args.no_progress
    embeddings = ecg_embeddings(model, test, args.batch_size, progress, keep)
    result = evaluate_zero_shot(model, tokenizer, test, texts, data.codes, args.batch_size, progress, embeddings)
    scores = result["scores"]
    baseline_scores = random_baseline_scores(args.model, tokenizer, model.device, test, texts, args, keep)

    references = np.asarray(test.with_format("numpy")["labels"], dtype=np.float32)
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
                 "classes_without_both_values": result["skipped_classes"]},
    )
    write_and_print_rows(args.output_dir, [row])
    return row


if __name__ == "__main__":
    main()
