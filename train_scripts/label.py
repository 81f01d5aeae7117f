"""`cmelt-label`: zero-shot labels for a folder (or list, glob, CSV) of ECG records, written as a table.

    cmelt-label ecgs/ --model MODEL --label_set ptbxl_super --output labels.csv
    cmelt-label a.hea b.mat list.csv --model MODEL --labels "atrial fibrillation,sinus rhythm" --output labels.jsonl

One row per record: `path`, `error` (why the record could not be read; the run goes on), `leads` (the leads present
after `--leads`, e.g. "I,II"), `n_leads`, `top_labels` (the `--top_k` best, "AFIB:0.91;NORM:0.40"), `notes`
(reader warnings such as a flat lead) and one score column per label. Scores are the pipeline's
(`modeling_cmelt.pipeline_cmelt`): independent sigmoids of the ECG-label similarity, or a softmax over the labels
with `--softmax`. Records are read and scored in batches (`--batch_size`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cmelt.data.leads import apply_lead_subset, lead_keep_mask
from cmelt.data.record_inputs import add_input_arguments, collect_record_paths, iter_record_batches
from modeling_cmelt.pipeline_cmelt import encode_label_texts, label_texts_for, load_label_descriptions, zero_shot_logits
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser)
    parser.add_argument("--label_set", default=None, help="shipped label set, e.g. ptbxl_super, cpsc2018, csn")
    parser.add_argument("--labels", default=None, help="comma-separated codes of --label_set, or free-text labels")
    parser.add_argument("--descriptions", default=None, help="JSON {label: text or [texts]}: your own prompts")
    parser.add_argument("--top_k", type=int, default=3, help="labels listed in the top_labels column")
    parser.add_argument("--softmax", action="store_true", help="scores are a softmax over the labels (default: sigmoids)")
    parser.add_argument("--output", default="-", help="CSV (.csv) or JSON lines (.jsonl) file; '-' = CSV on stdout")
    args = parser.parse_args(argv)
    if args.label_set is None and args.labels is None and args.descriptions is None:
        parser.error("give --label_set, --labels or --descriptions (what to score the records against)")
    if args.top_k < 1:
        parser.error(f"--top_k must be at least 1, got {args.top_k}")
    if args.output != "-" and Path(args.output).suffix.lower() not in (".csv", ".jsonl", ".json"):
        parser.error(f"--output must end in .csv or .jsonl, got {args.output}")
    lead_keep_mask(args.leads)  # fail before loading anything
    return args


def label_texts_from_args(args: argparse.Namespace) -> dict[str, list[str]]:
    """{label: prompts} from --labels / --label_set / --descriptions (pipeline precedence: user texts first)."""
    from cmelt.train_scripts.scoring import read_descriptions_file

    descriptions = read_descriptions_file(args.descriptions) if args.descriptions else None
    if args.labels is not None:
        labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    elif args.label_set is not None:
        labels = list(load_label_descriptions(args.label_set, args.model))
    else:
        labels = list(descriptions)
    return label_texts_for(labels, args.label_set, descriptions, folder=args.model)


def score_rows(batch, scores: np.ndarray, labels: list[str], keep: np.ndarray, top_k: int) -> list[dict]:
    """One output row per record of `batch`; `scores` holds the read records' rows, in `read_positions` order."""
    rows = []
    read = {position: index for index, position in enumerate(batch.read_positions)}
    for position, path in enumerate(batch.paths):
        row = {"path": path, "error": batch.errors[position], "leads": None, "n_leads": None, "top_labels": None,
               "notes": batch.notes[position] or None}
        if position in read:
            index = read[position]
            present = batch.lead_mask[index] & keep
            row["leads"] = ",".join(lead for lead, used in zip(CANONICAL_LEADS, present) if used)
            row["n_leads"] = int(present.sum())
            order = np.argsort(-scores[index], kind="stable")[:top_k]
            row["top_labels"] = ";".join(f"{labels[i]}:{scores[index, i]:.3f}" for i in order)
        row.update({label: (float(scores[read[position], i]) if position in read else None) for i, label in enumerate(labels)})
        rows.append(row)
    return rows


@torch.no_grad()
def label_records(args: argparse.Namespace) -> list[dict]:
    from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
    from cmelt.train_scripts.datasets_registry import device_from_args
    from cmelt.train_scripts.scoring import load_dual_encoder

    paths = collect_record_paths(args.inputs, args.path_column)
    keep = lead_keep_mask(args.leads)
    model, tokenizer = load_dual_encoder(args.model, device_from_args(args))
    feature_extractor = CMELTFeatureExtractor.from_pretrained(args.model)
    texts = label_texts_from_args(args)
    labels = list(texts)
    label_embeds = encode_label_texts(model, tokenizer, texts).float().cpu()
    rows = []
    for batch in iter_record_batches(paths, feature_extractor, args.batch_size, args.sampling_rate, not args.no_progress, "labelling"):
        scores = np.zeros((0, len(labels)), dtype=np.float32)
        if batch.input_values is not None:
            values, mask = apply_lead_subset(torch.from_numpy(batch.input_values), torch.from_numpy(batch.lead_mask), keep)
            embeds = model.get_ecg_features(values.to(model.device), lead_mask=mask.to(model.device)).pooler_output
            logits = zero_shot_logits(model, embeds.float().cpu(), label_embeds)
            scores = (logits.softmax(dim=-1) if args.softmax else logits.sigmoid()).numpy()
        rows += score_rows(batch, scores, labels, keep, args.top_k)
    return rows


def write_table(rows: list[dict], output: str) -> None:
    import sys

    import pandas as pd

    table = pd.DataFrame(rows)
    if "n_leads" in table:
        table["n_leads"] = table["n_leads"].astype("Int64")  # stays an integer column beside unreadable records
    if output == "-":
        table.to_csv(sys.stdout, index=False)
    elif Path(output).suffix.lower() in (".jsonl", ".json"):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        table.to_json(output, orient="records", lines=True)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(output, index=False)


def main(argv: list[str] | None = None) -> list[dict]:
    import sys

    args = parse_args(argv)
    rows = label_records(args)
    write_table(rows, args.output)
    failed = sum(row["error"] is not None for row in rows)
    print(f"labelled {len(rows) - failed} of {len(rows)} records ({failed} could not be read; see the error column)"
          + ("" if args.output == "-" else f"; written to {args.output}"), file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
