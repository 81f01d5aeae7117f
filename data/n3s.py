"""N3S (nearest-neighbour negative sampling): each report's k farthest reports, added as a column of report ids.

    python -m cmelt.data.n3s DATASET_DIR --encoder PATH [--k 64] [--cache_dir DIR] [--split train]

Work is done once per *unique* report, never per row: the unique-report table (report_id -> text) is embedded
(`embed_reports`: mean-pooled over the attention mask, L2-normalised; the paper uses google/flan-t5-small, any
local HF encoder works), a FAISS inner-product index is searched with the negated embeddings (the farthest reports
by cosine are the nearest neighbours of -q), and `dataset.map(batched=True)` over the `report_id` column alone adds
each row's k candidate ids by table lookup. The new column is attached beside the existing columns (no copy of
the ECGs). The collator draws one candidate per swapped sample and reads its text from `ReportTable`.

Cache (in `cache_dir`, default DATASET_DIR/n3s_cache): `report_table.json`, and per (encoder, k, index type,
report table, dtype, max length) key the embeddings (`.npy`), the FAISS index (`faiss.write_index`) and the
neighbours (`.npy`); a re-run with the same key loads them instead of recomputing. The encoder's part of the key is
a content hash of its config, weight files and tokenizer files, so new weights of the same shape or another
tokenizer never reuse stale neighbours. Every cache file is written to a unique temporary name and renamed into
place, so concurrent runs neither collide nor read a torn file.

The CLI builds the table over the training split (`--split train`, the default; `--split all` for every split)
and records what it built in `manifest.json`; pretraining reads that manifest and reuses exactly that cache.

Fewer than k + 1 unique reports: k is reduced to (number of unique reports - 1) with a warning, so every row still
gets only real, distinct, non-self candidates (a table of one report gets an empty list; the collator then keeps
that sample aligned).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .ecg_store import write_atomically, write_json_atomically

DEFAULT_ENCODER = "google/flan-t5-small"
DEFAULT_COLUMN = "n3s_negatives"
_SEARCH_BATCH = 4096


class ReportTable:
    """Unique reports: `report_id` -> text. Built by `add_n3s_column`; load with `ReportTable.load(cache_dir)`."""

    FILE_NAME = "report_table.json"

    def __init__(self, report_ids, texts):
        self.report_ids = np.asarray(report_ids, dtype=np.int64)
        self._texts = list(texts)
        if len(self.report_ids) != len(self._texts):
            raise ValueError(f"{len(self.report_ids)} report ids for {len(self._texts)} texts")
        if len(np.unique(self.report_ids)) != len(self.report_ids):
            raise ValueError("report ids must be unique")
        self._row = {int(report_id): row for row, report_id in enumerate(self.report_ids)}

    @classmethod
    def load(cls, cache_dir: str | os.PathLike) -> "ReportTable":
        data = json.loads((Path(cache_dir) / cls.FILE_NAME).read_text())
        return cls(data["report_ids"], data["texts"])

    def save(self, cache_dir: str | os.PathLike) -> None:
        write_json_atomically(Path(cache_dir) / self.FILE_NAME,
                              {"report_ids": self.report_ids.tolist(), "texts": self._texts}, indent=None)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for report_id, text in zip(self.report_ids.tolist(), self._texts):
            digest.update(f"{report_id}\x00{text}\x01".encode())
        return digest.hexdigest()[:16]

    def rows(self, report_ids) -> np.ndarray:
        """Table rows of these report ids (KeyError for an unknown id)."""
        return np.array([self._row[int(report_id)] for report_id in report_ids], dtype=np.int64)

    def text(self, report_id: int) -> str:
        return self._texts[self._row[int(report_id)]]

    def texts(self, report_ids) -> list[str]:
        return [self._texts[self._row[int(report_id)]] for report_id in report_ids]

    @property
    def all_texts(self) -> list[str]:
        return list(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def embed_reports(
    texts: list[str],
    encoder_name_or_path: str,
    batch_size: int = 256,
    max_length: int = 256,
    device: str | None = None,
    dtype: str = "float32",
    max_batch_tokens: int | None = 4096,
) -> np.ndarray:
    """(len(texts), hidden) float32 embeddings: encoder output mean-pooled over the attention mask, L2-normalised.

    Speed (the encoder's matmuls are the cost; bench/n3s.py reports the fraction of the fp32 matmul ceiling):
    texts are tokenised once, ordered by token count and cut into batches of at most `batch_size` texts and
    `max_batch_tokens` padded tokens, each padded to its own longest text (dynamic padding), so almost no work
    is spent on padding and the activations stay cache-sized on CPUs. T5's tanh-GELU runs as PyTorch's fused
    kernel (`GELUTanh`, the same function; transformers' `NewGELUActivation` spells it as six tensor ops).

    `dtype="bfloat16"` runs the encoder under bf16 autocast: about 2x faster on GPUs and on CPUs with bf16 units
    (AMX / AVX512-BF16); much *slower* on CPUs without them (fp32 is the default). Farthest-neighbour ranks barely
    move, but the result is no longer bit-identical to float32.

    T5-family checkpoints load as `T5EncoderModel` (the decoder is never needed), others as `AutoModel`.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    config = AutoConfig.from_pretrained(encoder_name_or_path)
    model_class = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
    tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = _with_fused_gelu(model_class.from_pretrained(encoder_name_or_path)).to(device).eval()
    hidden_size = config.d_model if hasattr(config, "d_model") else config.hidden_size
    embeddings = np.zeros((len(texts), hidden_size), np.float32)
    token_ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"] if texts else []
    batches = length_batches([len(ids) for ids in token_ids], batch_size, max_batch_tokens)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with torch.inference_mode(), autocast:
        for rows in tqdm(batches, desc="embedding reports", unit="batch"):
            encoded = tokenizer.pad({"input_ids": [token_ids[row] for row in rows]}, return_tensors="pt").to(device)
            hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            embeddings[rows] = pooled.cpu().numpy()
    return embeddings


def length_batches(lengths: list[int], batch_size: int, max_batch_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in batches of similar length: ordered by length (stable), at most `batch_size` rows and, when
    given, at most `max_batch_tokens` padded tokens (rows x longest) per batch; a row longer than the budget gets
    a batch of its own."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, current, longest = [], [], 0
    for row in order.tolist():
        grown = max(longest, lengths[row])
        too_many_tokens = max_batch_tokens is not None and current and grown * (len(current) + 1) > max_batch_tokens
        if current and (len(current) == batch_size or too_many_tokens):
            batches.append(np.asarray(current))
            current, grown = [], lengths[row]
        current.append(row)
        longest = grown
    if current:
        batches.append(np.asarray(current))
    return batches


def _with_fused_gelu(model):
    """Swap transformers' `NewGELUActivation` (tanh GELU as six tensor ops) for `GELUTanh` (PyTorch's fused
    kernel of the same function), in place; returns the model."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
    return model


def _effective_k(num_reports: int, k: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_reports - 1 < k:
        warnings.warn(f"N3S: only {num_reports} unique reports, so k is reduced from {k} to {max(num_reports - 1, 0)} "
                      "(a report is never its own negative)", stacklevel=3)
        return max(num_reports - 1, 0)
    return k


def build_index(embeddings: np.ndarray, index_type: str = "flat", use_gpu: bool | None = None):
    """FAISS inner-product index over the embeddings ("flat" = exact; "ivf" = IVF-Flat, approximate, for
    millions of reports); on all GPUs when faiss has them and `use_gpu` is not False."""
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    dimension = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    elif index_type == "ivf":
        lists = max(1, min(int(4 * np.sqrt(len(vectors))), len(vectors) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(lists, 16)
    else:
        raise ValueError(f"index_type must be 'flat' or 'ivf', got {index_type!r}")
    index.add(vectors)
    return _maybe_to_gpu(index, use_gpu)


def _maybe_to_gpu(index, use_gpu: bool | None):
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is True and gpus == 0:
        warnings.warn("N3S: use_gpu=True but faiss sees no GPU; searching on CPU", stacklevel=3)
    if gpus > 0 and use_gpu is not False:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def search_farthest(index, embeddings: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int64 rows of the k reports farthest from each row (self excluded), farthest first."""
    from tqdm.auto import tqdm

    k = _effective_k(len(embeddings), k)
    result = np.empty((len(embeddings), k), dtype=np.int64)
    if k == 0:
        return result
    query_k = min(k + 1, len(embeddings))
    for start in tqdm(range(0, len(embeddings), _SEARCH_BATCH), desc="N3S search", unit="batch"):
        queries = -np.ascontiguousarray(embeddings[start : start + _SEARCH_BATCH], dtype=np.float32)
        _, found = index.search(queries, query_k)
        own = np.arange(start, start + len(queries))[:, None]
        for row, candidates in enumerate(found):
            kept = candidates[(candidates != own[row]) & (candidates >= 0)][:k]
            if len(kept) < k:  # approximate (IVF) search may return too few: fill with the exact farthest
                scores = embeddings @ embeddings[start + row]
                scores[start + row] = np.inf
                kept = np.argsort(scores, kind="stable")[:k]
            result[start + row] = kept
    return result


def farthest_reports(embeddings: np.ndarray, k: int = 64, use_gpu: bool | None = None, index_type: str = "flat") -> np.ndarray:
    """(num_unique, k') int64: for every row of `embeddings` (L2-normalised) the rows of its k' farthest rows by
    cosine, farthest first, never itself; k' = min(k, num_unique - 1) (with a warning when reduced)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"expected embeddings of shape (num_reports, dim), got {embeddings.shape}")
    if _effective_k(len(embeddings), k) == 0:
        return np.empty((len(embeddings), 0), dtype=np.int64)
    return search_farthest(build_index(embeddings, index_type, use_gpu), embeddings, k)


# ----------------------------------------------------------------------------------------------------------------
# dataset column


def _splits(dataset) -> dict:
    from datasets import DatasetDict

    return dict(dataset) if isinstance(dataset, DatasetDict) else {None: dataset}


def report_table_of(dataset) -> ReportTable:
    """The unique (report_id, report) pairs of a Dataset / DatasetDict (one text per id, else ValueError)."""
    text_by_id: dict[int, str] = {}
    for split in _splits(dataset).values():
        if "report" not in split.column_names or "report_id" not in split.column_names:
            raise ValueError(f"expected columns 'report' and 'report_id', got {split.column_names}")
        columns = split.select_columns(["report_id", "report"]).to_dict()
        for report_id, text in zip(columns["report_id"], columns["report"]):
            known = text_by_id.setdefault(int(report_id), text)
            if known != text:
                raise ValueError(f"report_id {report_id} has two texts: {known!r} and {text!r}")
    ids = sorted(text_by_id)
    return ReportTable(ids, [text_by_id[report_id] for report_id in ids])


# Files whose content decides the embeddings: weights, config and tokenizer.
_ENCODER_FILE_PATTERNS = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json", "tokenizer*",
                          "spiece.model", "*.model", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json")


def _encoder_key(encoder_name_or_path: str) -> str:
    """Content hash of a local encoder folder (config, weights, tokenizer files); a Hub id is keyed by its name."""
    path = Path(encoder_name_or_path)
    digest = hashlib.sha256()
    if not path.is_dir():
        digest.update(str(encoder_name_or_path).encode())
        return digest.hexdigest()[:16]
    files = sorted({file for pattern in _ENCODER_FILE_PATTERNS for file in path.glob(pattern) if file.is_file()})
    for file in files:
        digest.update(f"{file.name}\x00".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        digest.update(b"\x01")
    return digest.hexdigest()[:16]


def cache_key(table: "ReportTable", encoder_name_or_path: str, max_length: int, dtype: str) -> str:
    """The embeddings' key: report table, encoder content, max length and dtype."""
    return f"{table.fingerprint}-{_encoder_key(encoder_name_or_path)}-L{max_length}-{dtype}"


MANIFEST_FILE = "manifest.json"


def read_manifest(cache_dir: str | os.PathLike) -> dict | None:
    """What `cmelt-n3s` built in `cache_dir` (encoder, k, index type, max length, dtype, split), or None."""
    path = Path(cache_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it and rerun cmelt-n3s") from error


def compute_neighbours(
    table: ReportTable,
    cache_dir: str | os.PathLike,
    encoder_name_or_path: str,
    k: int = 64,
    index_type: str = "flat",
    batch_size: int = 256,
    max_length: int = 256,
    device: str | None = None,
    use_gpu: bool | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """(len(table), k') report ids of each table row's farthest reports, computed once and cached."""
    import faiss

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    saved = cache_dir / ReportTable.FILE_NAME
    if not saved.is_file() or ReportTable.load(cache_dir).fingerprint != table.fingerprint:
        table.save(cache_dir)
    stem = cache_key(table, encoder_name_or_path, max_length, dtype)
    embeddings_path = cache_dir / f"embeddings-{stem}.npy"
    index_path = cache_dir / f"index-{stem}-{index_type}.faiss"
    neighbours_path = cache_dir / f"neighbours-{stem}-{index_type}-k{k}.npy"
    if neighbours_path.is_file():
        return np.load(neighbours_path)
    if embeddings_path.is_file():
        embeddings = np.load(embeddings_path)
    else:
        embeddings = embed_reports(table.all_texts, encoder_name_or_path, batch_size, max_length, device, dtype)
        _save_atomically(embeddings_path, lambda path: np.save(path, embeddings))
    if _effective_k(len(table), k) == 0:
        rows = np.empty((len(table), 0), dtype=np.int64)
    else:
        if index_path.is_file():
            index = _maybe_to_gpu(faiss.read_index(str(index_path)), use_gpu)
        else:
            index = build_index(embeddings, index_type, use_gpu)
            cpu_index = faiss.index_gpu_to_cpu(index) if faiss.get_num_gpus() > 0 and use_gpu is not False else index
            _save_atomically(index_path, lambda path: faiss.write_index(cpu_index, str(path)))
        rows = search_farthest(index, embeddings, k)
    neighbours = table.report_ids[rows]
    _save_atomically(neighbours_path, lambda path: np.save(path, neighbours))
    return neighbours


def _save_atomically(path: Path, write) -> None:
    write_atomically(path, write)


def add_n3s_column(
    dataset,
    cache_dir: str | os.PathLike,
    encoder_name_or_path: str,
    k: int = 64,
    column: str = DEFAULT_COLUMN,
    index_type: str = "flat",
    batch_size: int = 256,
    max_length: int = 256,
    device: str | None = None,
    use_gpu: bool | None = None,
    dtype: str = "float32",
):
    """Add `column` (each row's k candidate negative report ids) to a Dataset or DatasetDict with `report` and
    `report_id` columns; returns the same kind of object. Everything expensive is cached in `cache_dir`;
    `dtype` is the embedding precision (see `embed_reports`)."""
    from datasets import DatasetDict, Sequence, Value, concatenate_datasets

    table = report_table_of(dataset)
    neighbours = compute_neighbours(table, cache_dir, encoder_name_or_path, k, index_type, batch_size, max_length,
                                    device, use_gpu, dtype)
    lookup_ids = table.report_ids
    dense = lookup_ids.min() >= 0 and lookup_ids.max() < 4 * len(lookup_ids) + 1024
    if dense:  # report id -> table row by array indexing
        row_of = np.full(int(lookup_ids.max()) + 1, -1, dtype=np.int64)
        row_of[lookup_ids] = np.arange(len(lookup_ids))

    def lookup(report_ids):
        ids = np.asarray(report_ids, dtype=np.int64)
        rows = row_of[ids] if dense else table.rows(ids)
        return {column: neighbours[rows]}

    from datasets import Features

    key = f"{cache_key(table, encoder_name_or_path, max_length, dtype)}-{index_type}-k{k}"
    features = Features({column: Sequence(Value("int64"), length=neighbours.shape[1] or -1)})  # arrow: no 0-length lists
    result = {}
    for name, split in _splits(dataset).items():
        if column in split.column_names:
            split = split.remove_columns(column)
        cache_file = Path(cache_dir) / f"column-{key}-{name or 'dataset'}-{split._fingerprint}.arrow"
        added = split.select_columns(["report_id"]).map(
            lookup, batched=True, batch_size=10_000, input_columns=["report_id"], remove_columns=["report_id"],
            features=features, cache_file_name=str(cache_file), desc=f"N3S column ({name or 'dataset'})",
        )
        result[name] = concatenate_datasets([split, added], axis=1)
    return DatasetDict(result) if isinstance(dataset, DatasetDict) else result[None]


def main(argv: list[str] | None = None) -> None:
    from datasets import DatasetDict, load_from_disk

    parser = argparse.ArgumentParser(description="Precompute the N3S negatives of a converted corpus (cached).")
    parser.add_argument("dataset_dir", help="a save_to_disk Dataset / DatasetDict with report and report_id columns")
    parser.add_argument("--encoder", required=True, help=f"local HF text encoder (the paper uses {DEFAULT_ENCODER})")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--cache_dir", default=None, help="default: DATASET_DIR/n3s_cache")
    parser.add_argument("--split", default="train",
                        help="split whose reports form the table, as pretraining uses it (default: train); 'all' = "
                             "every split together (then validation reports can be training negatives)")
    parser.add_argument("--index_type", choices=("flat", "ivf"), default="flat")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="embedding precision; bfloat16 is ~2x faster where the hardware has bf16 units")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or os.path.join(args.dataset_dir, "n3s_cache")
    dataset = load_from_disk(args.dataset_dir)
    if isinstance(dataset, DatasetDict) and args.split != "all":
        if args.split not in dataset:
            raise ValueError(f"--split {args.split!r} is not a split of {args.dataset_dir} ({sorted(dataset)}) nor 'all'")
        dataset = dataset[args.split]
    dataset = add_n3s_column(dataset, cache_dir, args.encoder, k=args.k, index_type=args.index_type,
                             batch_size=args.batch_size, max_length=args.max_length, dtype=args.dtype)
    write_json_atomically(Path(cache_dir) / MANIFEST_FILE, {
        "encoder": str(args.encoder), "k": args.k, "index_type": args.index_type, "max_length": args.max_length,
        "dtype": args.dtype, "split": args.split, "report_table": ReportTable.load(cache_dir).fingerprint,
    })
    print(dataset)
    print(f"N3S cache: {cache_dir} (pretraining with --dataset_path {args.dataset_dir} reuses it)")


if __name__ == "__main__":
    main()
