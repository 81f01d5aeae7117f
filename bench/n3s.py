"""N3S column: our way (unique reports, one search each, map by report_id) vs the naive `datasets` way.

    python -m bench.n3s [--rows 200000] [--unique 45000] [--k 64] [--naive_sample 2000]

Corpus: `--rows` report rows over `--unique` distinct MIMIC-style reports with a Zipf-like skew (every distinct
report appears once, the remaining rows are drawn with p ~ 1 / rank^1.1). Encoder: a tiny random T5
(data.text_tower.build_tiny_t5) for the comparison, so the benchmark runs in minutes on 2 cores.

- ours: `add_n3s_column` from an empty cache (embed the unique reports, flat FAISS IP index, search the negated
  queries, `map` the column over all rows), timed end to end.
- naive: embed every row's report, `Dataset.add_faiss_index` over all rows, then `get_nearest_examples_batch`
  with each row's negated embedding. The per-row embedding and the search are timed on `--naive_sample` rows and
  extrapolated linearly to all rows (said so in the table); building the index is timed in full.
Also measures the embedding rate of a Flan-T5-small-shaped encoder (d_model 512, 8 layers, 6 heads, d_ff 1024,
gated-gelu, random init) and extrapolates to 800k rows (naive) and 180k unique reports (ours) of MIMIC-IV-ECG:
`embed_reports` (token-length batches with dynamic padding, fused GELU) against the previous loop (batches of 256
texts ordered by characters, transformers' GELU), the fraction of the fp32 matmul ceiling (model FLOPs of the
tokens present / time, over the GEMM rate measured in the same run before and after), whether both give the
same farthest neighbours, and bf16 autocast when this machine's bf16 matmul is faster than fp32.
`--encoder_only` runs this part alone (a minute or two). Prints a table and writes bench/results/n3s.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import machine_info, write_result

RESULTS = Path(__file__).resolve().parent / "results"

_RHYTHMS = ["Sinus rhythm", "Sinus bradycardia", "Marked sinus bradycardia", "Sinus tachycardia", "Atrial fibrillation",
            "Atrial fibrillation with rapid ventricular response", "Atrial flutter with 2:1 A-V conduction",
            "Sinus rhythm with PVC(s)", "Sinus rhythm with 1st degree A-V block", "Ectopic atrial rhythm",
            "Junctional rhythm", "Atrial paced rhythm", "Ventricular paced rhythm", "Sinus arrhythmia"]
_FINDINGS = ["Left axis deviation", "Right axis deviation", "Left bundle branch block", "Right bundle branch block",
             "Left anterior fascicular block", "Incomplete right bundle branch block", "Left ventricular hypertrophy",
             "Low QRS voltages in limb leads", "Low QRS voltages in precordial leads", "Poor R wave progression",
             "Inferior infarct - age undetermined", "Anterior infarct - age undetermined",
             "Septal infarct - age undetermined", "Lateral ST-T changes may be due to myocardial ischemia",
             "Inferior ST elevation - probably acute infarct", "Anterior ST elevation - possible acute infarct",
             "Diffuse ST depression", "Nonspecific T wave abnormality", "Lateral T wave inversion",
             "Prolonged QT interval", "Possible left atrial abnormality", "Possible right atrial abnormality",
             "Ventricular premature complex", "Atrial premature complex", "Early repolarization",
             "Extensive T wave changes may be due to hypertrophy and/or ischemia", "RSR' in V1 or V2",
             "Abnormal Q waves in inferior leads", "Pulmonary disease pattern", "Consider right ventricular hypertrophy"]
_SUMMARIES = ["Abnormal ECG", "Borderline ECG", "Normal ECG", "Normal ECG except for rate"]


def make_reports(rows: int, unique: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """`rows` texts over `unique` distinct reports (Zipf-like), and their report ids (rank order)."""
    from cmelt.data.mimic_iv_ecg import merge_reports

    rng = np.random.default_rng(seed)
    texts = ["sinus rhythm normal ecg"]
    seen = set(texts)
    while len(texts) < unique:
        statements = [_RHYTHMS[rng.integers(len(_RHYTHMS))]]
        statements += list(rng.choice(_FINDINGS, size=rng.integers(1, 6), replace=False))
        statements.append(_SUMMARIES[rng.integers(len(_SUMMARIES))])
        if rng.random() < 0.3:
            statements.append(f"Compared to the previous ECG the rate is {rng.integers(40, 160)} bpm")
        text = merge_reports(statements)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    ranks = np.arange(1, unique + 1, dtype=np.float64)
    weights = ranks ** -1.1
    extra = rng.choice(unique, size=rows - unique, p=weights / weights.sum())
    report_ids = np.concatenate([np.arange(unique), extra])
    rng.shuffle(report_ids)
    return [texts[i] for i in report_ids], report_ids.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--unique", type=int, default=45_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--naive_sample", type=int, default=2000)
    parser.add_argument("--t5_small_sample", type=int, default=1024)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="precision of OUR embedding pass (the naive way always runs float32)")
    parser.add_argument("--encoder_only", action="store_true", help="only the Flan-T5-small-shaped encoder part")
    args = parser.parse_args()
    if args.encoder_only:
        encoder_benchmark(args)
        return
    torch.set_num_threads(2)

    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    from cmelt.data.n3s import add_n3s_column, embed_reports
    from cmelt.data.text_tower import build_tiny_t5

    disable_progress_bar()
    texts, report_ids = make_reports(args.rows, args.unique)
    results: dict = {"rows": args.rows, "unique_reports": args.unique, "k": args.k, "cores": os.cpu_count(),
                     "ours_dtype": args.dtype, "naive_dtype": "float32"}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        encoder = str(build_tiny_t5(sorted(set(texts))[:5000], scratch / "tiny_t5", vocab_size=800))
        dataset = Dataset.from_dict({"report": texts, "report_id": report_ids})

        start = time.perf_counter()
        with_column = add_n3s_column(dataset, scratch / "cache", encoder, k=args.k, dtype=args.dtype)
        ours = time.perf_counter() - start
        assert len(with_column[0]["n3s_negatives"]) == args.k
        for stale in [*(scratch / "cache").glob("index-*"), *(scratch / "cache").glob("neighbours-*"),
                      *(scratch / "cache").glob("column-*")]:
            stale.unlink()  # keep only the embeddings: the rerun times index + search + column alone
        start = time.perf_counter()
        add_n3s_column(dataset, scratch / "cache", encoder, k=args.k, dtype=args.dtype)
        ours_rest = time.perf_counter() - start

        sample = np.random.default_rng(1).choice(args.rows, size=args.naive_sample, replace=False)
        start = time.perf_counter()
        sample_embeddings = embed_reports([texts[i] for i in sample], encoder)
        naive_embed = (time.perf_counter() - start) * args.rows / args.naive_sample
        unique_embeddings = np.load(next((scratch / "cache").glob("embeddings-*.npy")))
        row_embeddings = unique_embeddings[np.asarray(report_ids)]  # identical to embedding each row, already paid above
        indexed = dataset.add_column("embeddings", list(row_embeddings))
        start = time.perf_counter()
        indexed.add_faiss_index(column="embeddings", metric_type=__import__("faiss").METRIC_INNER_PRODUCT)
        naive_index = time.perf_counter() - start
        start = time.perf_counter()
        for chunk in np.array_split(-sample_embeddings, max(1, args.naive_sample // 256)):
            indexed.get_nearest_examples_batch("embeddings", np.ascontiguousarray(chunk), k=args.k + 1)
        naive_search = (time.perf_counter() - start) * args.rows / args.naive_sample
        naive = naive_embed + naive_index + naive_search
        results.update({
            "ours_seconds": ours,
            "naive_seconds_extrapolated": naive,
            "naive_parts": {"embed_every_row_extrapolated": naive_embed, "add_faiss_index": naive_index,
                            "get_nearest_examples_batch_extrapolated": naive_search},
            "naive_sample_rows": args.naive_sample,
            "speedup": naive / ours,
            "ours_parts": {"embed_unique_reports": ours - ours_rest, "index_search_and_column": ours_rest},
            "speedup_without_embedding": (naive_index + naive_search) / ours_rest,
            "speedup_of_embedding": naive_embed / max(ours - ours_rest, 1e-9),
        })

        # Flan-T5-small-shaped encoder: embedding rate.
        from transformers import AutoTokenizer, T5Config, T5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(encoder)
        small = scratch / "t5_small_shaped"
        config = T5Config(vocab_size=32128, d_model=512, d_kv=64, num_layers=8, num_heads=6, d_ff=1024,
                          feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1)
        T5EncoderModel(config).save_pretrained(small)
        tokenizer.save_pretrained(small)
        probe = [texts[i] for i in sample[: args.t5_small_sample]]
        start = time.perf_counter()
        embed_reports(probe, str(small), batch_size=256)
        rate = len(probe) / (time.perf_counter() - start)
        results["flan_t5_small_shaped"] = {
            "reports_per_second": rate,
            "mean_tokens_per_report": float(np.mean([len(tokenizer(text)["input_ids"]) for text in probe])),
            "extrapolated_minutes_800k_rows_naive": 800_000 / rate / 60,
            "extrapolated_minutes_180k_unique_ours": 180_000 / rate / 60,
        }

    print(f"{'method':<48} {'seconds':>10}")
    print(f"{'ours (add_n3s_column, end to end)':<48} {ours:>10.1f}")
    for part, seconds in results["ours_parts"].items():
        print(f"{'  ' + part:<48} {seconds:>10.1f}")
    print(f"{'naive (extrapolated from ' + str(args.naive_sample) + ' rows)':<48} {naive:>10.1f}")
    for part, seconds in results["naive_parts"].items():
        print(f"{'  ' + part:<48} {seconds:>10.1f}")
    print(f"speed-up: {results['speedup']:.1f}x end to end (goal >= 10x); embedding {results['speedup_of_embedding']:.1f}x, "
          f"index + search + column {results['speedup_without_embedding']:.1f}x")
    small = results["flan_t5_small_shaped"]
    print(f"Flan-T5-small-shaped encoder: {small['reports_per_second']:.0f} reports/s "
          f"({small['mean_tokens_per_report']:.0f} tokens each with the tiny tokenizer) -> "
          f"800k rows {small['extrapolated_minutes_800k_rows_naive']:.0f} min, "
          f"180k unique {small['extrapolated_minutes_180k_unique_ours']:.0f} min")
    summary = {
        "name": "n3s",
        "command": "python -m bench.n3s " + " ".join(sys.argv[1:]),
        "goal": {"metric": "speedup", "op": ">=", "value": 10},
        "ours_dtype": args.dtype,
        "results": {
            "speedup": round(results["speedup"], 2),
            "speedup_of_embedding": round(results["speedup_of_embedding"], 2),
            "speedup_without_embedding": round(results["speedup_without_embedding"], 2),
            "ours_seconds": round(ours, 1),
            "naive_seconds_extrapolated": round(naive, 1),
            "flan_t5_small_reports_per_second": round(small["reports_per_second"], 1),
            "minutes_800k_rows_naive": round(small["extrapolated_minutes_800k_rows_naive"], 1),
            "minutes_180k_unique_ours": round(small["extrapolated_minutes_180k_unique_ours"], 1),
        },
        "details": results,
        "machine": machine_info(),
    }
    write_result(RESULTS / "n3s.json", summary)


def gemm_gflops(dtype, size: int = 1024, repeats: int = 10) -> float:
    """Matmul rate of this machine now (GFLOP/s), square `size` matrices, best of three timings."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def previous_embed_reports(texts, encoder, batch_size=256, max_length=256) -> np.ndarray:
    """The embedding loop before this change (fixed batches of texts ordered by characters, transformers' GELU)."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = T5EncoderModel.from_pretrained(encoder).eval()
    order = np.argsort([len(text) for text in texts], kind="stable")
    out = np.zeros((len(texts), model.config.d_model), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = tokenizer([texts[r] for r in rows], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            out[rows] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    return out


def encoder_flops_per_token(config, tokens_in_sequence: float) -> float:
    """Forward FLOPs per token of a T5 encoder: 2 x matmul weights + attention scores and mixing."""
    inner = config.num_heads * config.d_kv
    attention = 4 * config.d_model * inner
    feed_forward = (3 if config.is_gated_act else 2) * config.d_model * config.d_ff
    return config.num_layers * (2 * (attention + feed_forward) + 4 * tokens_in_sequence * inner)


def encoder_benchmark(args) -> dict:
    """Flan-T5-small-shaped embedding rate: previous loop vs `embed_reports`, fraction of the matmul ceiling,
    neighbour agreement, bf16 where faster. Writes bench/results/n3s_encoder.json."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from cmelt.data.n3s import embed_reports, farthest_reports
    from cmelt.data.text_tower import build_tiny_t5

    torch.set_num_threads(2)
    texts, _ = make_reports(max(args.t5_small_sample * 3, 3000), max(args.t5_small_sample * 3, 3000))
    probe = texts[: args.t5_small_sample]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_t5(texts[-2000:], scratch / "tok", vocab_size=800))
        config = T5Config(vocab_size=32128, d_model=512, d_kv=64, num_layers=8, num_heads=6, d_ff=1024,
                          feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1)
        torch.manual_seed(0)
        small = scratch / "t5_small_shaped"
        T5EncoderModel(config).save_pretrained(small)
        tokenizer.save_pretrained(small)
        lengths = np.array([len(ids) for ids in tokenizer(probe)["input_ids"]])
        model_flops = float(sum(n * encoder_flops_per_token(config, n) for n in lengths))
        ceiling_before = gemm_gflops(torch.float32)
        start = time.perf_counter()
        previous = previous_embed_reports(probe, str(small))
        previous_seconds = time.perf_counter() - start
        start = time.perf_counter()
        current = embed_reports(probe, str(small))
        current_seconds = time.perf_counter() - start
        ceiling_after = gemm_gflops(torch.float32)
        ceiling = max(ceiling_before, ceiling_after)
        k = min(args.k, len(probe) - 1)
        same = farthest_reports(previous, k) == farthest_reports(current, k)
        bf16_gemm = gemm_gflops(torch.bfloat16, size=512, repeats=2)
        bf16 = None
        if bf16_gemm > gemm_gflops(torch.float32, size=512, repeats=2):
            start = time.perf_counter()
            half = embed_reports(probe, str(small), dtype="bfloat16")
            bf16_seconds = time.perf_counter() - start
            bf16 = {"reports_per_second": len(probe) / bf16_seconds,
                    "neighbour_overlap": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(
                        farthest_reports(current, k), farthest_reports(half, k))]))}
    result = {
        "reports": len(probe), "mean_tokens": float(lengths.mean()), "k": k,
        "previous_reports_per_second": len(probe) / previous_seconds,
        "reports_per_second": len(probe) / current_seconds,
        "speedup": previous_seconds / current_seconds,
        "fp32_gemm_gflops_before_after": [ceiling_before, ceiling_after],
        "fraction_of_fp32_matmul_ceiling": model_flops / current_seconds / 1e9 / ceiling,
        "previous_fraction_of_fp32_matmul_ceiling": model_flops / previous_seconds / 1e9 / ceiling,
        "same_neighbours_fraction_of_rows": float(same.all(axis=1).mean()),
        "max_abs_embedding_difference": float(np.abs(previous - current).max()),
        "bf16_gemm_gflops": bf16_gemm, "bf16": bf16,
        "minutes_180k_unique": 180_000 / (len(probe) / current_seconds) / 60,
    }
    print(f"Flan-T5-small-shaped encoder, {len(probe)} reports ({result['mean_tokens']:.0f} tokens each):")
    print(f"  previous loop   {result['previous_reports_per_second']:8.1f} reports/s  "
          f"{100 * result['previous_fraction_of_fp32_matmul_ceiling']:5.1f} % of the fp32 matmul ceiling")
    print(f"  embed_reports   {result['reports_per_second']:8.1f} reports/s  "
          f"{100 * result['fraction_of_fp32_matmul_ceiling']:5.1f} % of the fp32 matmul ceiling "
          f"({ceiling:.0f} GFLOP/s)  speed-up {result['speedup']:.2f}x (goals: >= 60 %, >= 2x)")
    print(f"  same {k} farthest neighbours for {100 * result['same_neighbours_fraction_of_rows']:.1f} % of reports; "
          f"max |embedding difference| {result['max_abs_embedding_difference']:.1e}")
    print(f"  bf16 matmul {bf16_gemm:.1f} GFLOP/s: " + ("bf16 autocast not faster here, not used" if bf16 is None else
          f"bf16 autocast {bf16['reports_per_second']:.1f} reports/s, neighbour overlap {bf16['neighbour_overlap']:.3f}"))
    print(f"  180k unique MIMIC reports: {result['minutes_180k_unique']:.0f} min on this machine")
    write_result(RESULTS / "n3s_encoder.json", {"name": "n3s_encoder", "command": "python -m bench.n3s " + " ".join(sys.argv[1:]),
                                                "results": result, "machine": machine_info()})
    return result


if __name__ == "__main__":
    main()
