"""`cmelt-search`: the ECGs of a `cmelt-embed` folder nearest to a text query, through the `datasets` FAISS index.

    cmelt-search runs/embeddings "atrial fibrillation with rapid ventricular response" -k 10

The query is embedded by the same model (named in `embedding_info.json`, or `--model`) and cleaned like the
prompts of zero-shot labelling; the index is `Dataset.add_faiss_index(..., metric_type=METRIC_INNER_PRODUCT)` over
`ecg_embedding`, queried with `get_nearest_examples`. The ranking by inner product is the zero-shot ranking:
`score` = sigmoid(scale * inner product + bias), the model's ECG-text match score, is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from modeling_cmelt.pipeline_cmelt import encode_label_texts

INFO_FILE = "embedding_info.json"  # written by cmelt-embed
INDEX_COLUMN = "ecg_embedding"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embeddings", help="folder written by cmelt-embed")
    parser.add_argument("queries", nargs="+", help="text queries, e.g. 'atrial fibrillation'")
    parser.add_argument("-k", "--top_k", type=int, default=10, help="ECGs returned per query")
    parser.add_argument("--model", default=None, help="model that embeds the queries (default: the one cmelt-embed used)")
    parser.add_argument("--output", default=None, help="also write the hits as CSV")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"-k must be at least 1, got {args.top_k}")
    return args


def load_index(folder: Path):
    """The embedded records with a FAISS inner-product index on `ecg_embedding`."""
    import faiss
    from datasets import load_from_disk

    if not (folder / INFO_FILE).is_file():
        raise ValueError(f"{folder}: not a cmelt-embed folder (no {INFO_FILE})")
    dataset = load_from_disk(str(folder))
    if len(dataset) == 0:
        raise ValueError(f"{folder}: holds no embedded records (see skipped.csv)")
    dataset.add_faiss_index(column=INDEX_COLUMN, metric_type=faiss.METRIC_INNER_PRODUCT)
    return dataset


@torch.no_grad()
def search(dataset, model, tokenizer, query: str, k: int) -> list[dict]:
    """The `k` nearest records to `query`: rank, score (sigmoid match score), inner product, path, leads."""
    query_embedding = encode_label_texts(model, tokenizer, {query: [query]}).float().cpu()
    inner_products, examples = dataset.get_nearest_examples(INDEX_COLUMN, query_embedding[0].numpy(), k=min(k, len(dataset)))
    scale, bias = model.logit_scale_and_bias()  # the zero-shot logit: scale * inner product + bias
    scores = torch.sigmoid(torch.as_tensor(inner_products) * float(scale) + float(bias)).numpy()
    return [
        {"query": query, "rank": rank + 1, "score": float(score), "inner_product": float(product), "path": path, "leads": leads}
        for rank, (score, product, path, leads) in enumerate(zip(scores, inner_products, examples["path"], examples["leads"]))
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    import pandas as pd

    from cmelt.train_scripts.datasets_registry import device_from_args
    from cmelt.train_scripts.scoring import load_dual_encoder

    args = parse_args(argv)
    folder = Path(args.embeddings)
    dataset = load_index(folder)
    model_name = args.model or json.loads((folder / INFO_FILE).read_text())["model"]
    model, tokenizer = load_dual_encoder(model_name, device_from_args(args))
    hits = [hit for query in args.queries for hit in search(dataset, model, tokenizer, query, args.top_k)]
    table = pd.DataFrame(hits)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    if args.output:
        table.to_csv(args.output, index=False)
    print(f"{len(dataset)} records searched with {model_name}", file=sys.stderr)
    return hits


if __name__ == "__main__":
    main()
