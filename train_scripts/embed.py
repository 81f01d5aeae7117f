"""`cmelt-embed`: ECG embeddings (and report-text embeddings) of many records, saved as a `datasets.Dataset`.

    cmelt-embed ecgs/ --model MODEL --output runs/embeddings                     # then: cmelt-search runs/embeddings "atrial fibrillation"
    cmelt-embed records.csv --text_column report --model MODEL --output runs/emb --parquet

`OUTPUT` is a Dataset saved with `save_to_disk` (load it with `datasets.load_from_disk`), one row per readable
record: `path`, `ecg_embedding` (the model's projected ECG embedding, the space it shares with text), `lead_mask`
(12 bool, after `--leads`), `leads` (present leads, "I,II,..."), and with `--text_column` the record's `text` and
its `text_embedding`. Records that could not be read are listed with their error in `OUTPUT/skipped.csv` and
counted; the run goes on. `OUTPUT/embedding_info.json` names the model (cmelt-search embeds queries with it).
`--parquet` also writes `OUTPUT/embeddings.parquet`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cmelt.data.leads import apply_lead_subset, lead_keep_mask
from cmelt.data.record_inputs import add_input_arguments, collect_record_paths, csv_column_by_path, iter_record_batches
from modeling_cmelt.pipeline_cmelt import encode_label_texts
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

INFO_FILE = "embedding_info.json"
SKIPPED_FILE = "skipped.csv"
TEXT_BATCH = 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help="folder for the Dataset (save_to_disk)")
    parser.add_argument("--text_column", default=None, help="CSV column with each record's report: embed it too")
    parser.add_argument("--parquet", action="store_true", help="also write OUTPUT/embeddings.parquet")
    args = parser.parse_args(argv)
    lead_keep_mask(args.leads)  # fail before loading anything
    return args


@torch.no_grad()
def text_embeddings(model, tokenizer, texts: list[str]) -> np.ndarray:
    """(len(texts), projection_dim) embeddings of report texts, cleaned as pretraining cleaned reports."""
    chunks = []
    for start in range(0, len(texts), TEXT_BATCH):
        chunk = {str(index): [text or " "] for index, text in enumerate(texts[start : start + TEXT_BATCH])}
        chunks.append(encode_label_texts(model, tokenizer, chunk).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.config.projection_dim), dtype=np.float32)


@torch.no_grad()
def embed_records(args: argparse.Namespace):
    """(Dataset of the embedded records, [(path, error)] of those that could not be read)."""
    from datasets import Dataset, Features, Sequence, Value

    from cmelt.data.ecg_store import LEAD_MASK_FEATURE
    from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
    from cmelt.train_scripts.datasets_registry import device_from_args
    from cmelt.train_scripts.scoring import load_dual_encoder

    paths = collect_record_paths(args.inputs, args.path_column)
    texts_by_path = csv_column_by_path(args.inputs, args.path_column, args.text_column) if args.text_column else {}
    keep = lead_keep_mask(args.leads)
    model, tokenizer = load_dual_encoder(args.model, device_from_args(args))
    feature_extractor = CMELTFeatureExtractor.from_pretrained(args.model)
    columns = {"path": [], "ecg_embedding": [], "lead_mask": [], "leads": []}
    skipped = []
    for batch in iter_record_batches(paths, feature_extractor, args.batch_size, args.sampling_rate, not args.no_progress, "embedding"):
        skipped += [(path, error) for path, error in zip(batch.paths, batch.errors) if error is not None]
        if batch.input_values is None:
            continue
        values, mask = apply_lead_subset(torch.from_numpy(batch.input_values), torch.from_numpy(batch.lead_mask), keep)
        embeds = model.get_ecg_features(values.to(model.device), lead_mask=mask.to(model.device)).pooler_output
        columns["path"] += [batch.paths[position] for position in batch.read_positions]
        columns["ecg_embedding"] += list(embeds.float().cpu().numpy())
        columns["lead_mask"] += mask.tolist()
        columns["leads"] += [",".join(lead for lead, used in zip(CANONICAL_LEADS, row) if used) for row in mask.tolist()]
    dimension = model.config.projection_dim
    features = {
        "path": Value("string"), "ecg_embedding": Sequence(Value("float32"), length=dimension),
        "lead_mask": LEAD_MASK_FEATURE, "leads": Value("string"),
    }
    if args.text_column:
        columns["text"] = [texts_by_path.get(path, "") for path in columns["path"]]
        columns["text_embedding"] = list(text_embeddings(model, tokenizer, columns["text"]))
        features.update({"text": Value("string"), "text_embedding": Sequence(Value("float32"), length=dimension)})
    return Dataset.from_dict(columns, features=Features(features)), skipped


def main(argv: list[str] | None = None):
    import pandas as pd

    args = parse_args(argv)
    dataset, skipped = embed_records(args)
    output = Path(args.output)
    dataset.save_to_disk(str(output))
    pd.DataFrame(skipped, columns=["path", "error"]).to_csv(output / SKIPPED_FILE, index=False)
    info = {"model": str(args.model), "leads": args.leads, "records": len(dataset), "skipped": len(skipped),
            "embedding_dim": len(dataset[0]["ecg_embedding"]) if len(dataset) else None}
    (output / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    if args.parquet:
        dataset.to_parquet(str(output / "embeddings.parquet"))
    print(f"embedded {len(dataset)} records into {output}; {len(skipped)} could not be read "
          f"(listed with their error in {output / SKIPPED_FILE})", file=sys.stderr)
    return dataset, skipped


if __name__ == "__main__":
    main()
