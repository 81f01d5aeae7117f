"""The embedded default: C-MELT end to end on the built-in demo corpus, on a CPU, with nothing downloaded.

    python train_scripts/pretrain.py                 # or: cmelt-pretrain
    python train_scripts/pretrain.py --ablation      # also -N3S and -Siglep on the same budget, side by side

1. write a synthetic corpus as a MIMIC-IV-ECG v1.0 tree (record_list.csv, machine_measurements.csv, WFDB files)
2. convert it with the real converter (data.mimic_iv_ecg) and add the N3S column (data.n3s)
3. build a small T5 tokenizer + encoder from the reports (data.text_tower)
4. pretrain a small C-MELT (all four losses) with the real Trainer, checkpointing as it goes
5. save a Hub-ready model folder, and print the held-out zero-shot AUC per label (validation patients)

Every stage reuses what an earlier (interrupted) run finished.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import DatasetDict, Sequence, Value

from data.collator import CMELTPretrainingCollator  # noqa: F401  (re-exported for users reading this file)
from data.mimic_iv_ecg import convert_mimic_iv_ecg
from data.n3s import ReportTable, add_n3s_column
from data.synthetic import DEMO_LABEL_PROMPTS, DEMO_LABELS, write_mimic_tree
from data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor
from model_card.generate import write_model_card
from train_scripts.evaluation import write_results
from train_scripts.pretrain import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain
from train_scripts.zero_shot import ecg_embeddings, evaluate_zero_shot, save_evaluation_figures

VARIANTS = {
    "C-MELT": {},
    "-N3S": {"negatives": "random"},  # the paper's -N3S: random negatives instead of the farthest reports
    "-Siglep": {"use_siglep": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/cmelt-demo", help="everything the demo writes")
    parser.add_argument("--num_subjects", type=int, default=3000, help="synthetic patients (1-4 ECGs each)")
    parser.add_argument("--max_steps", type=int, default=1800, help="optimisation steps per model")
    parser.add_argument("--batch_size", type=int, default=64, help="ECG-report pairs per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate (tri-stage)")
    parser.add_argument("--n3s_k", type=int, default=64, help="N3S candidates per report")
    parser.add_argument("--eval_every", type=int, default=600, help="held-out zero-shot AUC every N steps")
    parser.add_argument("--num_proc", type=int, default=2, help="processes for conversion")
    parser.add_argument("--mask_ratio", type=float, default=None, help="MEM token-drop ratio (default: the preset's)")
    parser.add_argument("--lead_mask_prob", type=float, default=0.1, help="random lead masking probability (paper: 0.5)")
    parser.add_argument("--duplicate_aware", action=argparse.BooleanOptionalAction, default=False,
                        help="Siglep counts identical reports in a batch as positives")
    parser.add_argument("--losses", nargs="+", default=["mlm", "mem", "etm", "siglep"],
                        choices=["mlm", "mem", "etm", "siglep"], help="pretraining losses to use")
    parser.add_argument("--run_name", default="run", help="sub-folder of output_dir for checkpoints and the model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation", action="store_true", help="also train -N3S and -Siglep and compare")
    return parser.parse_args(argv)


def prepare_corpus(args: argparse.Namespace, out: Path) -> tuple[DatasetDict, ReportTable, Path]:
    root = out / "mimic-iv-ecg-demo"
    if not (root / "record_list.csv").is_file():
        print(f"[1/5] writing the demo corpus as a MIMIC-IV-ECG tree: {root}")
        write_mimic_tree(root, num_subjects=args.num_subjects, seed=args.seed)
    corpus_dir = out / "corpus"
    print(f"[2/5] converting {root} -> {corpus_dir}")
    corpus = convert_mimic_iv_ecg(root, corpus_dir, num_proc=args.num_proc, valid_fraction=0.1, seed=args.seed)
    text_dir = out / "text-tower"
    if not (text_dir / "config.json").is_file():
        print(f"[3/5] building a small T5 tokenizer and encoder from the reports: {text_dir}")
        prompts = [text for texts in DEMO_LABEL_PROMPTS.values() for text in texts]
        reports = sorted(set(corpus["train"]["report"]))
        build_tiny_t5(reports + prompts, text_dir, vocab_size=600, d_model=128, num_layers=2, num_heads=4, d_ff=256)
    print("[4/5] N3S: embedding each unique report once, FAISS search for the farthest reports")
    n3s_dir = corpus_dir / "n3s"
    corpus = add_n3s_column(corpus, cache_dir=n3s_dir, encoder_name_or_path=str(text_dir), k=args.n3s_k)
    return corpus, ReportTable.load(n3s_dir), text_dir


def labelled_validation(corpus: DatasetDict, root: Path):
    """The validation patients' ECGs with their ground-truth demo labels (multi-hot, in DEMO_LABELS order)."""
    truth = pd.read_csv(root / "demo_labels.csv").set_index("study_id")
    validation = corpus["validation"]
    labels = truth.loc[validation["study_id"], list(DEMO_LABELS)].to_numpy(dtype=np.float32)
    return validation.add_column("labels", list(labels), feature=Sequence(Value("float32"), length=len(DEMO_LABELS)))


def train_variant(name, overrides, args, out, corpus, table, text_dir, evaluation_set) -> dict:
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    text_tower = T5EncoderModel.from_pretrained(text_dir)
    config = CMELTConfig.from_preset(
        "demo",
        text_config={**text_tower.config.to_dict(), "dropout_rate": 0.0},
        use_siglep=overrides.get("use_siglep", "siglep" in args.losses),
        use_mlm="mlm" in args.losses,
        use_mem="mem" in args.losses,
        use_etm="etm" in args.losses,
        siglep_duplicate_aware=args.duplicate_aware,
        **({"ecg_config": {"mask_ratio": args.mask_ratio}} if args.mask_ratio is not None else {}),
    )
    torch.manual_seed(args.seed)
    model = CMELTForPreTraining(config)
    model.text_model.load_state_dict(text_tower.state_dict())
    processor = CMELTProcessor(CMELTFeatureExtractor(), tokenizer)
    run_dir = out / (args.run_name if not overrides else args.run_name + name.lower().replace("-", "_"))
    training_args = CMELTTrainingArguments(
        output_dir=str(run_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        logging_steps=50,
        save_steps=250,
        save_total_limit=2,
        seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="tensorboard",
        disable_tqdm=False,
    )
    data_args = CMELTDataArguments(negatives=overrides.get("negatives", "n3s"), lead_mask_prob=args.lead_mask_prob)
    evaluation_subset = evaluation_set.select(range(min(1000, len(evaluation_set))))

    def evaluator(model):
        result = evaluate_zero_shot(model, tokenizer, evaluation_subset, DEMO_LABEL_PROMPTS, DEMO_LABELS, progress=False)
        return {"zero_shot_macro_auc": round(result["macro_auroc"], 4)}

    started = time.time()
    trainer = pretrain(
        CMELTModelArguments(model_preset="demo"),
        data_args,
        training_args,
        train_dataset=corpus["train"],
        report_texts=table.texts,
        model=model,
        processor=processor,
        zero_shot_evaluator=evaluator,
        zero_shot_eval_steps=args.eval_every,
    )
    minutes = (time.time() - started) / 60
    model = trainer.model.eval()
    final = evaluate_zero_shot(model, tokenizer, evaluation_set, DEMO_LABEL_PROMPTS, DEMO_LABELS)
    return {
        "name": name,
        "model_dir": run_dir / "model",
        "model": model,
        "tokenizer": tokenizer,
        "zero_shot": final,
        "linear_probe": linear_probe_auc(model, evaluation_set),
        "minutes": minutes,
    }


def linear_probe_auc(model, dataset, seed: int = 0) -> float:
    """Quick frozen-feature probe: logistic regression on half of the held-out ECGs, macro AUC on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    features = torch.nn.functional.normalize(ecg_embeddings(model, dataset, progress=False), dim=-1).numpy()
    labels = np.asarray(dataset.with_format("numpy")["labels"])
    order = np.random.default_rng(seed).permutation(len(features))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    aucs = []
    for column in range(labels.shape[1]):
        if len(set(labels[train, column])) < 2 or len(set(labels[test, column])) < 2:
            continue
        probe = LogisticRegression(max_iter=1000, C=10.0).fit(features[train], labels[train, column])
        aucs.append(roc_auc_score(labels[test, column], probe.predict_proba(features[test])[:, 1]))
    return float(np.mean(aucs))


def write_figures(result: dict, evaluation_set) -> list[Path]:
    """ROC curves per label, a t-SNE of the held-out ECG embeddings, and one ECG with its top labels."""
    folder = result["model_dir"]
    labels = np.asarray(evaluation_set.with_format("numpy")["labels"], dtype=np.float32)
    embeddings = ecg_embeddings(result["model"], evaluation_set, progress=False).numpy()
    written = save_evaluation_figures(
        folder / "figures", "demo", evaluation_set, DEMO_LABELS, result["zero_shot"]["scores"], labels, embeddings
    )
    return [folder / "figures" / name for name in written.values()]


def print_table(result: dict) -> None:
    per_class = result["zero_shot"]["per_class"]
    print(f"\nheld-out zero-shot AUC per label ({result['name']}):")
    print(f"  {'label':<8}{'AUC':>8}   prompt")
    for label in DEMO_LABELS:
        value = per_class.get(label)
        shown = f"{value:.3f}" if value is not None else "  n/a"
        print(f"  {label:<8}{shown:>8}   {DEMO_LABEL_PROMPTS[label][0]}")
    print(f"  {'macro':<8}{result['zero_shot']['macro_auroc']:>8.3f}")


# ---- example record for the README quick start (kept apart from the training code above)

EXAMPLE_RECORD_DIR = "example-ecg"


def write_example_record(root: Path, study_id: int, out: Path) -> Path:
    """Copies one held-out record of the demo corpus to `OUT/example-ecg/example.{hea,dat}` (WFDB, samples
    unchanged) so a bare clone has a real file to label: `cmelt-label OUT/example-ecg --model ...`."""
    import wfdb

    table = pd.read_csv(root / "record_list.csv")
    source = root / table.loc[table["study_id"] == study_id, "path"].iloc[0]
    record = wfdb.rdrecord(str(source), physical=False)
    record.record_name = "example"
    record.file_name = ["example.dat"] * record.n_sig
    target = out / EXAMPLE_RECORD_DIR
    target.mkdir(parents=True, exist_ok=True)
    record.wrsamp(write_dir=str(target), expanded=False)
    return target / "example"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.output_dir)
    started = time.time()
    corpus, table, text_dir = prepare_corpus(args, out)
    evaluation_set = labelled_validation(corpus, out / "mimic-iv-ecg-demo")
    example = write_example_record(out / "mimic-iv-ecg-demo", int(evaluation_set[0]["study_id"]), out)
    print(f"example record (held-out patient) to label: {example}")
    print(f"corpus: {len(corpus['train'])} training ECGs, {len(evaluation_set)} held-out (validation patients); "
          f"{len(table)} unique reports ({time.time() - started:.0f} s)")
    variants = VARIANTS if args.ablation else {"C-MELT": {}}
    results = []
    for name, overrides in variants.items():
        print(f"[5/5] pretraining {name}: {args.max_steps} steps of {args.batch_size}")
        result = train_variant(name, overrides, args, out, corpus, table, text_dir, evaluation_set)
        print_table(result)
        write_results(
            result["model_dir"] / "results.json",
            model=f"cmelt-demo{'' if name == 'C-MELT' else name.lower()}",
            dataset="cmelt_demo",
            task="classification",
            protocol="zero_shot",
            metric_name="macro_auroc",
            value=result["zero_shot"]["macro_auroc"],
            per_class=result["zero_shot"]["per_class"],
            split="validation",
            extra={"minutes": round(result["minutes"], 2), "linear_probe_macro_auroc": result["linear_probe"]},
        )
        (result["model_dir"] / "training_summary.json").write_text(
            json.dumps(
                {
                    "corpus": "built-in synthetic demo corpus written as a MIMIC-IV-ECG tree",
                    "train_records": len(corpus["train"]),
                    "held_out_records": len(evaluation_set),
                    "steps": args.max_steps,
                    "batch_size": args.batch_size,
                    "learning_rate": args.learning_rate,
                    "preset": "demo",
                    "variant": name,
                    "minutes": round(result["minutes"], 2),
                },
                indent=2,
            )
        )
        write_model_card(
            result["model_dir"],
            results_paths=[result["model_dir"] / "results.json"],
            figures=write_figures(result, evaluation_set),
            model_name="C-MELT demo" + ("" if name == "C-MELT" else f" ({name})"),
            repo_id="your-username/cmelt-demo",
        )
        results.append(result)
    if args.ablation:
        print("\nablation (paper Tab. 6 shape), same budget:")
        print(f"  {'variant':<10}{'zero-shot AUC':>15}{'linear-probe AUC':>18}{'minutes':>9}")
        for result in results:
            print(f"  {result['name']:<10}{result['zero_shot']['macro_auroc']:>15.3f}{result['linear_probe']:>18.3f}"
                  f"{result['minutes']:>9.1f}")
    print(f"\nmodel folder: {results[0]['model_dir']}  (total {(time.time() - started) / 60:.1f} min)")
    return results


if __name__ == "__main__":
    main()
