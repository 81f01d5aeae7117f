"""The embedded default: C-MELT end to end on the built-in demo corpus, on a CPU, with nothing downloaded.

    python train_scripts/demo.py                 # or: cmelt-demo
    python train_scripts/demo.py --ablation      # also -N3S and -Siglep on the same budget, side by side

1. write a synthetic corpus as a MIMIC-IV-ECG v1.0 tree (record_list.csv, machine_measurements.csv, WFDB files)
2. convert it with the real converter (data.mimic_iv_ecg) and add the N3S column (data.n3s)
3. build a small T5 tokenizer + encoder from the reports (data.text_tower)
4. pretrain a small C-MELT (all four losses) with the real Trainer, checkpointing as it goes
5. save a Hub-ready model folder, and print the held-out zero-shot AUC per label (validation patients)

Each stage is reused only when it completed with the same parameters: a stage writes a completion marker
(`.demo_stage.json`, written atomically, recording its parameters and those of the stages it was built from) when it
finishes; a stage without a matching marker (interrupted, or run with other `--num_subjects`, seed, ...) is deleted
and run again, and so is everything built from it. Training resumes from its last checkpoint only when it was
started with the same parameters. The run ends with a stage-time table (also `<output_dir>/demo_profile.json`),
the training steps/s and this machine's fp32 matmul ceiling, so times can be compared across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import DatasetDict, Sequence, Value, load_from_disk

from cmelt.data.ecg_store import write_json_atomically
from cmelt.data.mimic_iv_ecg import convert_mimic_iv_ecg
from cmelt.data.n3s import ReportTable, add_n3s_column
from cmelt.data.synthetic import DEMO_LABEL_PROMPTS, DEMO_LABELS, GENERATOR_VERSION, write_mimic_tree
from cmelt.data.text_tower import build_tiny_t5
from cmelt.model_card.generate import write_model_card
from cmelt.train_scripts.evaluation import current_commit, result_row, write_rows
from cmelt.train_scripts.figures import save_evaluation_figures
from cmelt.train_scripts.out_of_generator import format_out_of_generator, out_of_generator_check
from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain
from cmelt.train_scripts.profiling import StageTimer, fastest_thread_count, matmul_ceiling, random_pretraining_batch
from cmelt.train_scripts.scoring import ecg_embeddings, evaluate_zero_shot
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor

VARIANTS = {
    "C-MELT": {},
    "-N3S": {"negatives": "random"},  # the paper's -N3S: random negatives instead of the farthest reports
    "-Siglep": {"use_siglep": False},
    # design comparisons behind the demo preset's choices (README, "The model")
    "reference-head": {"config": {"siglep_head": "fusion_projection", "projection_dim": None}},
    "siglep-masked-text": {"config": {"siglep_clean_text": False}},
    "siglep-masked-ecg": {"config": {"siglep_clean_ecg": False}},
    "siglep-fed-report": {"config": {"siglep_own_report": False}},  # the paper: a swapped row has no positive
}
ABLATION = ("C-MELT", "-N3S", "-Siglep")  # the paper's Tab. 6 shape


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/cmelt-demo", help="everything the demo writes")
    parser.add_argument("--num_subjects", type=int, default=3000, help="synthetic patients (1-4 ECGs each)")
    parser.add_argument("--max_steps", type=int, default=500, help="optimisation steps per model")
    parser.add_argument("--batch_size", type=int, default=64, help="ECG-report pairs per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate (tri-stage)")
    parser.add_argument("--n3s_k", type=int, default=64, help="N3S candidates per report")
    parser.add_argument("--eval_every", type=int, default=600, help="held-out zero-shot AUC every N steps")
    parser.add_argument("--num_proc", type=int, default=2, help="processes for conversion")
    parser.add_argument("--mask_ratio", type=float, default=None, help="MEM token-drop ratio (default: the preset's)")
    parser.add_argument("--lead_mask_prob", type=float, default=None,
                        help="random lead masking probability (default: the preset's, 0.1; paper: 0.5)")
    parser.add_argument("--duplicate_aware", action=argparse.BooleanOptionalAction, default=False,
                        help="Siglep counts identical reports in a batch as positives")
    parser.add_argument("--losses", nargs="+", default=["mlm", "mem", "etm", "siglep"],
                        choices=["mlm", "mem", "etm", "siglep"], help="pretraining losses to use")
    parser.add_argument("--run_name", default="run", help="sub-folder of output_dir for checkpoints and the model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config_overrides", type=json.loads, default=None,
                        help='JSON of CMELTConfig keywords merged into the demo preset, e.g. '
                             '\'{"siglep_own_report": false}\' (as --overrides in bench.pretrain_step)')
    parser.add_argument("--ablation", action="store_true", help="also train -N3S and -Siglep and compare")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                        help="train these variants on the same corpus and budget (default: C-MELT, or the ablation)")
    parser.add_argument("--torch_threads", type=int, default=0,
                        help="CPU threads for training (0: measure 1 vs all cores on a few steps and take the faster)")
    parser.add_argument("--real_data_dir", default=None,
                        help="folder with wfdb/100 and wfdb/s0010_re for the out-of-generator check "
                             "(default: ../shared/data beside the repository; skipped with a note when absent)")
    return parser.parse_args(argv)


STAGE_MARKER = ".demo_stage.json"
# the tower `build_tiny_t5` makes: the demo preset's text shape (its one home)
TEXT_TOWER_SHAPE = {key: CMELTConfig.from_preset("demo").text_config.to_dict()[key]
                    for key in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff")}


def _normalised(parameters: dict) -> dict:
    """The parameters as they read back from JSON (tuples become lists), so a comparison is exact."""
    return json.loads(json.dumps(parameters, sort_keys=True))


def stage_completed(folder: Path, parameters: dict) -> bool:
    """True when `folder` holds a completion marker recording exactly these parameters."""
    try:
        marker = json.loads((Path(folder) / STAGE_MARKER).read_text())
    except (OSError, ValueError):  # absent, unreadable or truncated: not complete
        return False
    return isinstance(marker, dict) and marker.get("parameters") == _normalised(parameters)


def mark_stage_completed(folder: Path, parameters: dict) -> None:
    """Write the completion marker atomically (a temporary file renamed into place): present means complete."""
    write_json_atomically(Path(folder) / STAGE_MARKER, {"parameters": _normalised(parameters), "completed": time.time()})


def run_stage(timer: StageTimer, name: str, folder: Path, parameters: dict, build) -> bool:
    """Run `build()` into a fresh `folder` unless it completed with these parameters; returns True if reused."""
    if stage_completed(folder, parameters):
        with timer.stage(name):
            pass
        timer.note(name, "reused")
        print(f"  {name}: reusing {folder} (completed with the same parameters)")
        return True
    if folder.exists():
        print(f"  {name}: {folder} is incomplete or was made with other parameters; rebuilding it")
        shutil.rmtree(folder)
    with timer.stage(name):
        build()
    mark_stage_completed(folder, parameters)
    return False


def prepare_corpus(args: argparse.Namespace, out: Path, timer: StageTimer | None = None):
    """Corpus tree, conversion, text tower and N3S; returns (corpus with the N3S column, report table, text tower
    folder, the parameters every later stage depends on)."""
    timer = timer or StageTimer()
    root = out / "mimic-iv-ecg-demo"
    tree = {"num_subjects": args.num_subjects, "seed": args.seed, "generator": GENERATOR_VERSION}
    print(f"[1/5] the demo corpus as a MIMIC-IV-ECG tree: {root}")
    run_stage(timer, "corpus tree", root, tree,
              lambda: write_mimic_tree(root, num_subjects=args.num_subjects, seed=args.seed))
    corpus_dir = out / "corpus"
    converted = {"tree": tree, "valid_fraction": 0.1}
    print(f"[2/5] converting {root} -> {corpus_dir}")
    run_stage(timer, "conversion", corpus_dir, converted,
              lambda: convert_mimic_iv_ecg(root, corpus_dir, num_proc=args.num_proc, valid_fraction=0.1, seed=args.seed))
    corpus = load_from_disk(str(corpus_dir))
    text_dir = out / "text-tower"
    prompts = [text for texts in DEMO_LABEL_PROMPTS.values() for text in texts]
    tower = {"corpus": converted, "shape": TEXT_TOWER_SHAPE, "prompts": prompts}
    print(f"[3/5] a small T5 tokenizer and encoder from the reports: {text_dir}")
    run_stage(timer, "text tower", text_dir, tower,
              lambda: build_tiny_t5(sorted(set(corpus["train"]["report"])) + prompts, text_dir, **TEXT_TOWER_SHAPE))
    print("[4/5] N3S: embedding each unique report once, FAISS search for the farthest reports")
    n3s_dir = out / "n3s"
    n3s = {"tower": tower, "k": args.n3s_k}
    with timer.stage("N3S"):
        if not stage_completed(n3s_dir, n3s) and n3s_dir.exists():
            shutil.rmtree(n3s_dir)
        corpus = add_n3s_column(corpus, cache_dir=n3s_dir, encoder_name_or_path=str(text_dir), k=args.n3s_k)
        mark_stage_completed(n3s_dir, n3s)
    return corpus, ReportTable.load(n3s_dir), text_dir, n3s


def labelled_validation(corpus: DatasetDict, root: Path):
    """The validation patients' ECGs with their ground-truth demo labels (multi-hot, in DEMO_LABELS order)."""
    truth = pd.read_csv(root / "demo_labels.csv").set_index("study_id")
    validation = corpus["validation"]
    labels = truth.loc[validation["study_id"], list(DEMO_LABELS)].to_numpy(dtype=np.float32)
    return validation.add_column("labels", list(labels), feature=Sequence(Value("float32"), length=len(DEMO_LABELS)))


def train_variant(name, overrides, args, out, corpus, table, text_dir, evaluation_set, upstream: dict,
                  timer: StageTimer | None = None) -> dict:
    from transformers import AutoTokenizer, T5EncoderModel

    timer = timer or StageTimer()
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
        # the config is the home of both: the collator and the model card read them there
        **({"ecg_config": {"lead_mask_prob": args.lead_mask_prob}} if args.lead_mask_prob is not None else {}),
        **({"mem_mask_ratio": args.mask_ratio} if args.mask_ratio is not None else {}),
        **overrides.get("config", {}),
        **(args.config_overrides or {}),
    )
    run_dir = out / (args.run_name if not overrides else args.run_name + name.lower().replace("-", "_"))
    parameters = {"upstream": upstream, "variant": overrides, "config": config.to_diff_dict(),
                  **{key: getattr(args, key) for key in TRAINING_FLAGS}}
    evaluation_subset = evaluation_set.select(range(min(1000, len(evaluation_set))))
    evaluation_seconds = [0.0]

    def evaluator(model):
        started = time.perf_counter()
        result = evaluate_zero_shot(model, tokenizer, evaluation_subset, DEMO_LABEL_PROMPTS, DEMO_LABELS, progress=False)
        evaluation_seconds[0] += time.perf_counter() - started
        return {"zero_shot_macro_auc": round(result["macro_auroc"], 4)}

    stage = f"training ({name})"
    model_dir = run_dir / "model"
    if stage_completed(run_dir, parameters) and (model_dir / "config.json").is_file():
        print(f"  {stage}: reusing {model_dir} (completed with the same parameters)")
        with timer.stage(stage):
            pass
        timer.note(stage, "reused")
        model, steps_per_second = CMELTForPreTraining.from_pretrained(model_dir), None
    else:
        if _started_with(run_dir) not in (None, _normalised(parameters)):
            print(f"  {stage}: {run_dir} was started with other parameters; starting afresh")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(run_dir / STARTED_MARKER, {"parameters": _normalised(parameters)})
        with timer.stage("thread calibration"):
            choose_torch_threads(config, args.batch_size, args.torch_threads)
        torch.manual_seed(args.seed)
        model = CMELTForPreTraining(config)
        model.text_model.load_state_dict(text_tower.state_dict())
        started = time.perf_counter()
        with timer.stage(stage):
            trainer, resumed_step = _train(model, tokenizer, args, overrides, run_dir, corpus, table, evaluator)
        training_seconds = time.perf_counter() - started - evaluation_seconds[0]
        steps_done = trainer.state.global_step - resumed_step
        steps_per_second = steps_done / training_seconds if steps_done > 0 else None
        timer.note(stage, f"{steps_done} steps, {evaluation_seconds[0]:.0f} s of it periodic evaluation")
        model = trainer.model
        mark_stage_completed(run_dir, parameters)
    model = model.eval()
    with timer.stage("evaluation"):
        embeddings = ecg_embeddings(model, evaluation_set, progress=False)
        final = evaluate_zero_shot(model, tokenizer, evaluation_set, DEMO_LABEL_PROMPTS, DEMO_LABELS,
                                   embeddings=embeddings, progress=False)
        probe = linear_probe_auc(embeddings, evaluation_set)
    return {
        "name": name,
        "model_dir": model_dir,
        "model": model,
        "tokenizer": tokenizer,
        "zero_shot": final,
        "embeddings": embeddings,
        "linear_probe": probe,
        "steps_per_second": steps_per_second,
        "minutes": timer.seconds.get(stage, 0.0) / 60,
    }


# Flags whose change makes an earlier training run stale (the demo then trains afresh instead of resuming).
TRAINING_FLAGS = ("max_steps", "batch_size", "learning_rate", "lead_mask_prob", "mask_ratio", "duplicate_aware",
                  "losses", "seed", "eval_every")  # --config_overrides reaches the config, which is compared whole
STARTED_MARKER = ".demo_started.json"


def _started_with(run_dir: Path) -> dict | None:
    """Parameters a training run in `run_dir` was started with; None when none was started there."""
    if not run_dir.exists():
        return None
    try:
        return json.loads((run_dir / STARTED_MARKER).read_text()).get("parameters")
    except (OSError, ValueError, AttributeError):
        return {}  # a folder without a readable record of its parameters: not reusable


def choose_torch_threads(config: CMELTConfig, batch_size: int, requested: int = 0) -> int:
    """Set torch's CPU thread count: `requested` if > 0, else whichever of 1 or all usable cores runs a
    forward + backward of this model faster (measured on an eighth of a batch of random inputs, seconds)."""
    if requested > 0 or torch.cuda.is_available():
        torch.set_num_threads(requested or torch.get_num_threads())
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores == 1:
        return torch.get_num_threads()
    batch = random_pretraining_batch(config, max(4, batch_size // 8), 32)
    model = CMELTForPreTraining(config).train()

    def step():
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    best, seconds = fastest_thread_count(step, [1, cores], repeats=1)
    torch.set_num_threads(best)
    print(f"  torch threads: {best} (seconds per 1/8-batch step: "
          + ", ".join(f"{count} thread(s) {value:.2f}" for count, value in seconds.items()) + ")")
    return best


def _train(model, tokenizer, args, overrides, run_dir, corpus, table, evaluator):
    """The trainer after `pretrain`, and the step it resumed from (0 for a fresh run)."""
    from transformers.trainer_utils import get_last_checkpoint

    last_checkpoint = get_last_checkpoint(str(run_dir))
    resumed_step = int(last_checkpoint.rsplit("-", 1)[1]) if last_checkpoint else 0
    processor = CMELTProcessor(CMELTFeatureExtractor(), tokenizer)
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
    data_args = CMELTDataArguments(negatives=overrides.get("negatives", "n3s"))
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
    return trainer, resumed_step


def linear_probe_auc(embeddings: torch.Tensor, dataset, seed: int = 0) -> float:
    """Quick frozen-feature probe: logistic regression on half of the held-out ECGs, macro AUC on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    features = torch.nn.functional.normalize(embeddings, dim=-1).numpy()
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
    embeddings = result["embeddings"].numpy()
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


def default_real_data_dir() -> Path:
    """`../shared/data` beside the repository: real records for the out-of-generator check, when present."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_outputs(result: dict, args, corpus, evaluation_set) -> None:
    """results.json, training_summary.json, figures and the model card of one trained variant."""
    name = result["name"]
    write_rows(result["model_dir"] / "results.json", [result_row(
        task="cmelt-demo", dataset="synthetic demo corpus (validation patients)", split_source="seeded",
        prompt_set="demo", protocol="zero-shot", metric="macro_auroc", value=result["zero_shot"]["macro_auroc"],
        per_label=result["zero_shot"]["per_class"], n_test=len(evaluation_set), seed=args.seed,
        model=f"cmelt-demo{'' if name == 'C-MELT' else name.lower()}", commit=current_commit(),
        details={"minutes": round(result["minutes"], 2), "linear_probe_macro_auroc": result["linear_probe"],
                 "out_of_generator": result["out_of_generator"]["summary"]},
    )])
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
                "steps_per_second": result["steps_per_second"],
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


def print_profile(timer: StageTimer, results: list[dict], out: Path, ceiling: float, ceiling_threads: int) -> dict:
    """The stage-time table, steps/s and the matmul ceiling; also written to <output_dir>/demo_profile.json."""
    steps = {result["name"]: result["steps_per_second"] for result in results}
    print("\nwhere the time went:")
    print(timer.table())
    for name, value in steps.items():
        shown = f"{value:.2f}" if value else "n/a (reused)"
        print(f"  training steps/s ({name}, periodic evaluation excluded): {shown}")
    print(f"  this machine's fp32 matmul ceiling: {ceiling:.0f} GFLOP/s with {ceiling_threads} torch threads "
          f"(compare times across machines with it); trained with {torch.get_num_threads()} thread(s)")
    profile = {"steps_per_second": steps, "matmul_ceiling_gflops_per_second": round(ceiling, 1),
               "matmul_ceiling_threads": ceiling_threads, "torch_threads": torch.get_num_threads(),
               "held_out_zero_shot_macro_auc": {r["name"]: r["zero_shot"]["macro_auroc"] for r in results},
               "out_of_generator": {r["name"]: r["out_of_generator"]["summary"] for r in results}}
    timer.write_json(out / "demo_profile.json", **profile)
    return profile


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
    timer = StageTimer()
    with timer.stage("matmul ceiling"):
        ceiling, ceiling_threads = matmul_ceiling(repetitions=5) / 1e9, torch.get_num_threads()
    corpus, table, text_dir, upstream = prepare_corpus(args, out, timer)
    evaluation_set = labelled_validation(corpus, out / "mimic-iv-ecg-demo")
    example = write_example_record(out / "mimic-iv-ecg-demo", int(evaluation_set[0]["study_id"]), out)
    print(f"example record (held-out patient) to label: {example}")
    print(f"corpus: {len(corpus['train'])} training ECGs, {len(evaluation_set)} held-out (validation patients); "
          f"{len(table)} unique reports ({timer.total:.0f} s)")
    names = args.variants or (ABLATION if args.ablation else ("C-MELT",))
    variants = {name: VARIANTS[name] for name in names}
    real_data_dir = Path(args.real_data_dir) if args.real_data_dir else default_real_data_dir()
    results = []
    for name, overrides in variants.items():
        print(f"[5/5] pretraining {name}: {args.max_steps} steps of {args.batch_size}")
        result = train_variant(name, overrides, args, out, corpus, table, text_dir, evaluation_set, upstream, timer)
        with timer.stage("out-of-generator check"):
            result["out_of_generator"] = out_of_generator_check(
                result["model"], result["tokenizer"], real_data_dir if real_data_dir.is_dir() else None, seed=args.seed
            )
        print_table(result)
        print(format_out_of_generator(result["out_of_generator"], result["zero_shot"]["macro_auroc"]))
        with timer.stage("results, figures, card"):
            write_outputs(result, args, corpus, evaluation_set)
        results.append(result)
    if len(results) > 1:
        print("\nvariants, same corpus and budget:")
        print(f"  {'variant':<20}{'zero-shot AUC':>15}{'linear-probe AUC':>18}{'out-of-gen. AUC':>17}{'minutes':>9}")
        for result in results:
            outside = result["out_of_generator"]["summary"]["pooled"]["macro_auroc"]
            print(f"  {result['name']:<20}{result['zero_shot']['macro_auroc']:>15.3f}{result['linear_probe']:>18.3f}"
                  f"{outside:>17.3f}{result['minutes']:>9.1f}")
    print_profile(timer, results, out, ceiling, ceiling_threads)
    print(f"\nmodel folder: {results[0]['model_dir']}  (total {timer.total / 60:.1f} min)")
    return results


if __name__ == "__main__":
    main()
