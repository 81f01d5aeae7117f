"""Write the Hugging Face Hub model card (README.md) of a saved C-MELT folder with `huggingface_hub`'s `ModelCard`.

    python -m cmelt.model_card MODEL_FOLDER [--results RESULTS.json ...] [--license mit] [--base_model ORG/NAME]
        [--provenance TEXT] [--datasets ID ...] [--figures PNG ...] [--output README.md]

Inputs: the folder's `config.json` (architecture and parameter counts, computed on the meta device without
loading any weights), its `training_summary.json` if pretraining wrote one, and results files in the shared schema
(`model_card.results`, "cmelt-results/1"; one or more files or folders). When no results are given,
`MODEL_FOLDER/results/` is used if it exists.

The YAML header is `ModelCardData` (licence, library, pipeline tag, tags, training datasets, metrics, base model)
with one `EvalResult` per measured result, so `huggingface_hub` writes and validates the `model-index` and
`ModelCard.load` reads it back. The body has usage, input format, model details, provenance and training, an
evaluation table (value, 95 % CI, random-init baseline, paper-reported number in its own column), figures,
limitations and the citation. The paper's numbers appear nowhere else in the card.

Hub tags. The Hub has no ECG or signal-classification pipeline tag (its tasks are text, image, audio, video,
tabular and time-series *forecasting*). `zero-shot-classification` would file the model among text NLI models and
`audio-classification` among speech models, both wrong. The card uses `pipeline_tag: feature-extraction`: the
Auto model of this folder is a dual encoder whose outputs are ECG and text embeddings, and zero-shot labelling
and retrieval are computed from them. `model-index` task types are `other` (the Hub's tag for tasks outside its
list), with task names that say what was measured ("Zero-shot ECG classification", "ECG classification, linear
probe", ...); the real transformers task, `zero-shot-ecg-classification`, is a tag.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from cmelt.model_card.results import lead_names_of, read_results
from modeling_cmelt import CMELTConfig, CMELTForECGClassification, CMELTForPreTraining, CMELTModel
from modeling_cmelt.pipeline_cmelt import TASK as PIPELINE_TASK
from modeling_cmelt.pipeline_cmelt import load_label_descriptions
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS

TEMPLATE = Path(__file__).resolve().parent / "template.md"
TRAINING_SUMMARY_FILE = "training_summary.json"
MISSING = "—"

HUB_PIPELINE_TAG = "feature-extraction"
HUB_TASK_TYPE = "other"
HUB_TAGS = ["ecg", "time-series", PIPELINE_TASK, "custom_code", "medical", "biosignals", "c-melt",
            "ecg-language-pretraining"]
PROTOCOL_NAMES = {  # also the order of the evaluation table
    "zero-shot": "zero-shot",
    "linear-probe": "linear probe",
    "linear-probe-logreg": "linear probe (logistic regression)",
    "fine-tune": "full fine-tune",
    "domain-transfer": "zero-shot domain transfer",
}
TASK_NAMES = {
    "zero-shot": "Zero-shot ECG classification",
    "linear-probe": "ECG classification, linear probe",
    "linear-probe-logreg": "ECG classification, linear probe",
    "fine-tune": "ECG classification, fine-tuned",
    "domain-transfer": "Zero-shot ECG classification, domain transfer",
}
# results metric -> (Hub metric id, readable name); values of these metrics are fractions (shown x 100).
METRICS = {
    "macro_auroc": ("roc_auc", "macro AUROC"),
    "accuracy": ("accuracy", "accuracy"),
    "cinc2021_score": ("cinc2021_challenge_score", "CinC 2021 challenge score"),
}
CODE_LICENSE = "mit"  # this repository's code; a checkpoint's weights may carry another licence (--license)


@dataclass(frozen=True)
class DatasetInfo:
    hub_type: str  # dataset identifier in the card metadata (none of these datasets has an official Hub id)
    pretty_name: str
    source_url: str


DATA_SOURCES = {
    "mimic-iv-ecg": ("MIMIC-IV-ECG v1.0 (pretraining)", "https://physionet.org/content/mimic-iv-ecg/1.0/"),
    "ptb-xl": ("PTB-XL", "https://physionet.org/content/ptb-xl/1.0.3/"),
    "cpsc2018": ("CPSC2018", "http://2018.icbeb.org/"),
    "chapman-shaoxing-ningbo": ("Chapman-Shaoxing-Ningbo (CSN)", "https://physionet.org/content/ecg-arrhythmia/1.0.0/"),
    "code-test": ("CODE-test", "https://doi.org/10.5281/zenodo.3625006"),
    "physionet-challenge-2021": (
        "PhysioNet/CinC Challenge 2021", "https://physionet.org/content/challenge-2021/1.0.3/"
    ),
}
EVALUATION_DATASETS = {
    "ptbxl_super": ("ptb-xl", "PTB-XL diagnostic superclasses (5 labels)"),
    "ptbxl_sub": ("ptb-xl", "PTB-XL diagnostic subclasses (23 labels)"),
    "ptbxl_form": ("ptb-xl", "PTB-XL form statements (19 labels)"),
    "ptbxl_rhythm": ("ptb-xl", "PTB-XL rhythm statements (12 labels)"),
    "cpsc2018": ("cpsc2018", "CPSC2018 (9 labels)"),
    "csn": ("chapman-shaoxing-ningbo", "Chapman-Shaoxing-Ningbo (38 labels)"),
    "code_test": ("code-test", "CODE-test (6 labels)"),
    "physionet2021": ("physionet-challenge-2021", "PhysioNet/CinC Challenge 2021"),
}


def dataset_info(name: str) -> DatasetInfo:
    """Card metadata of a results `dataset` name. "physionet2021_id" resolves via its "physionet2021" prefix; a
    domain-transfer name "source->target" (train_scripts.domain_transfer) is the target dataset."""
    name = name.replace("-", "_") if "->" not in name else name
    source, arrow, target = name.rpartition("->")
    if arrow:
        info = dataset_info(target)
        return DatasetInfo(info.hub_type, f"{info.pretty_name} scored with the {source} labels", info.source_url)
    key = name if name in EVALUATION_DATASETS else next(
        (k for k in EVALUATION_DATASETS if name.startswith(f"{k}_")), None
    )
    if key is None:
        return DatasetInfo(name, name, "")
    hub_type, pretty = EVALUATION_DATASETS[key]
    if key != name:
        pretty = f"{pretty} ({name[len(key) + 1:]})"
    return DatasetInfo(hub_type, pretty, DATA_SOURCES[hub_type][1])


@dataclass(frozen=True)
class PaperResult:
    """One number of the C-MELT paper's result tables, in the paper's units (x 100)."""

    protocol: str
    datasets: tuple[str, ...]
    metric: str
    value: float
    table: str
    label_fraction: float = 1.0
    leads: tuple[str, ...] | None = None  # None = all 12 leads


def _paper(protocol, metric, table, values: dict, **kwargs) -> list[PaperResult]:
    return [PaperResult(protocol, (name,), metric, value, table, **kwargs) for name, value in values.items()]


PAPER_RESULTS: tuple[PaperResult, ...] = (
    *_paper("zero-shot", "macro_auroc", "Tab. 3", {
        "ptbxl_super": 76.2, "ptbxl_sub": 75.9, "ptbxl_form": 66.1, "ptbxl_rhythm": 88.6, "cpsc2018": 80.1,
        "csn": 76.3,
    }),
    *_paper("zero-shot", "macro_auroc", "Tab. 5", {"code_test": 96.79}),
    *_paper("linear-probe", "macro_auroc", "Tab. 2", {
        "csn": 90.71, "ptbxl_rhythm": 96.71, "ptbxl_form": 83.98, "ptbxl_sub": 85.15, "ptbxl_super": 90.11,
        "cpsc2018": 94.92,
    }),
    PaperResult("fine-tune", ("physionet2021", "physionet2021_dx"), "cinc2021_score", 85.7, "Tab. 1"),
    PaperResult("fine-tune", ("physionet2021", "physionet2021_dx"), "cinc2021_score", 76.5, "Tab. 1", leads=("I",)),
    PaperResult("fine-tune", ("physionet2021", "physionet2021_id"), "accuracy", 65.4, "Tab. 1"),
    PaperResult("fine-tune", ("physionet2021", "physionet2021_id"), "accuracy", 41.1, "Tab. 1", leads=("I",)),
)


def task_key(row: dict) -> str:
    """The row's task as this module's dataset keys spell it ("ptbxl-super" -> "ptbxl_super")."""
    return row["task"] if "->" in row["task"] else row["task"].replace("-", "_")


def _leads_key(row: dict) -> tuple[str, ...] | None:
    leads = lead_names_of(row.get("leads") or "12")
    return None if tuple(leads) == tuple(CANONICAL_LEADS) else tuple(leads)


def paper_result_for(row: dict) -> PaperResult | None:
    """The paper's number for the same protocol, task, metric, label fraction and leads (test split only)."""
    if row.get("split", "test") != "test":
        return None
    fraction = row.get("label_fraction") or 1.0
    for paper in PAPER_RESULTS:
        if (paper.protocol == row["protocol"] and task_key(row) in paper.datasets and paper.metric == row["metric"]
                and math.isclose(paper.label_fraction, fraction) and paper.leads == _leads_key(row)):
            return paper
    return None


def setting_text(row: dict) -> str:
    """Protocol with its label fraction, leads and prompt set, e.g. "linear probe, 1 % labels, 12 leads"."""
    parts = [PROTOCOL_NAMES.get(row["protocol"], row["protocol"])]
    if row.get("label_fraction") is not None:
        parts.append(f"{row['label_fraction'] * 100:g} % labels")
    leads = _leads_key(row)
    parts.append("12 leads" if leads is None else f"leads {', '.join(leads)}")
    if row.get("prompt_set"):
        parts.append(f"{row['prompt_set']} prompts")
    if row.get("split_source"):
        parts.append(f"{row['split_source']} split")
    return ", ".join(parts)


def metric_display_name(row: dict) -> str:
    """The model-index metric `name` of a row: readable metric, setting and split."""
    readable = METRICS.get(row["metric"], (None, row["metric"]))[1]
    return f"{readable} ({setting_text(row)}; {row.get('split', 'test')})"


def _scaled(value: float, metric: str) -> str:
    return f"{value * 100:.2f}" if metric in METRICS else f"{value:.4g}"


def format_measured(row: dict) -> str:
    """The value, with its 95 % CI when the row has one: "65.12 [60.10, 70.31]"."""
    if row["value"] is None:
        return "n/a (not computable)"
    text = _scaled(row["value"], row["metric"])
    if row.get("ci95"):
        low, high = row["ci95"]
        text += f" [{_scaled(low, row['metric'])}, {_scaled(high, row['metric'])}]"
    return text


def format_baseline(row: dict) -> str:
    baseline = row.get("baseline")
    if not baseline or baseline.get("value") is None:
        return MISSING
    text = f"{_scaled(baseline['value'], row['metric'])} ({baseline.get('kind', 'baseline')})"
    delta = row.get("delta_vs_baseline")
    if delta and delta.get("value") is not None:
        text += f"; Δ {_scaled(delta['value'], row['metric'])}"
    return text


# ------------------------------------------------------------------------------------------ config facts


ARCHITECTURES = {cls.__name__: cls for cls in (CMELTModel, CMELTForPreTraining, CMELTForECGClassification)}


def saved_architecture(config: CMELTConfig) -> str:
    """The C-MELT class the folder was saved from (`config.architectures`); CMELTForPreTraining if unrecorded."""
    return next((name for name in (config.architectures or []) if name in ARCHITECTURES), "CMELTForPreTraining")


def count_parameters(config: CMELTConfig) -> dict[str, int]:
    """Parameters per part of the saved architecture, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = ARCHITECTURES[saved_architecture(config)](config)
    parts = {
        "ecg_model": "ECG encoder",
        "text_model": "text encoder",
        "ecg_pooler": "Siglep poolers and projections",
        "ecg_projection": "Siglep poolers and projections",
        "text_pooler": "Siglep poolers and projections",
        "text_projection": "Siglep poolers and projections",
        "logit_scale": "Siglep poolers and projections",
        "logit_bias": "Siglep poolers and projections",
        "fusion": "cross-modal fusion",
        "mlm_head": "pretraining heads (MLM, MEM decoder, ETM)",
        "mem_decoder": "pretraining heads (MLM, MEM decoder, ETM)",
        "etm_text_pooler": "pretraining heads (MLM, MEM decoder, ETM)",
        "etm_ecg_pooler": "pretraining heads (MLM, MEM decoder, ETM)",
        "etm_head": "pretraining heads (MLM, MEM decoder, ETM)",
        "classifier": "classification head",
    }
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        part = parts.get(name.split(".")[0], "other")
        counts[part] = counts.get(part, 0) + parameter.numel()
    order = list(dict.fromkeys([*parts.values(), "other"]))
    return {part: counts[part] for part in order if part in counts}


def matching_preset(config: CMELTConfig) -> str | None:
    """Name of the `CMELTConfig.from_preset` architecture this config has (vocabulary size aside), if any."""

    def shape(cfg: CMELTConfig) -> tuple:
        ecg, text = cfg.ecg_config, cfg.text_config
        return (
            tuple(ecg.conv_dim), tuple(ecg.conv_stride), ecg.hidden_size, ecg.num_hidden_layers,
            text.model_type, text.hidden_size, text.num_hidden_layers,
            cfg.fusion_hidden_size, cfg.fusion_num_layers, cfg.projection_dim,
        )

    for name in ("paper", "demo", "tiny"):
        if shape(CMELTConfig.from_preset(name)) == shape(config):
            return name
    return None


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count:,}"


def model_details_section(config: CMELTConfig, architecture: str, preset: str | None) -> str:
    ecg, text = config.ecg_config, config.text_config
    seconds = ecg.num_samples / ecg.sampling_rate
    lines = [
        f"- **Architecture class:** `{architecture}`"
        + (f" (matches the `{preset}` preset of `CMELTConfig.from_preset`)." if preset else "."),
        f"- **ECG encoder:** {len(ecg.conv_dim)} convolutions (channels {list(ecg.conv_dim)}, kernels "
        f"{list(ecg.conv_kernel)}, strides {list(ecg.conv_stride)}) turn {ecg.num_samples} samples ({seconds:g} s at "
        f"{ecg.sampling_rate} Hz) into {ecg.num_tokens} tokens. A convolutional positional embedding and a CLS token "
        f"follow, then {ecg.num_hidden_layers} post-LN transformer layers (width {ecg.hidden_size}, "
        f"{ecg.num_attention_heads} heads, feed-forward {ecg.intermediate_size}). Pooling: {ecg.pooling}.",
        f"- **Text encoder:** {text.model_type} encoder, {text.num_hidden_layers} layers, width {text.hidden_size}, "
        f"vocabulary {text.vocab_size}, reports truncated to {config.max_text_length} tokens.",
        f"- **Shared embedding space (Siglep):** projection size {config.projection_dim}; "
        f"{'L2-normalised' if config.siglep_normalize else 'not normalised'}; "
        + (
            f"learned logit scale and bias (initial scale {math.exp(config.logit_scale_init_value):.3g}, bias "
            f"{config.logit_bias_init_value:g})."
            if config.siglep_learnable_scale
            else "fixed logit scale 1, no bias."
        )
        + (
            " Pretraining paired every ECG with its own report; the swapped-in negatives fed only fusion, MLM and ETM."
            if config.siglep_own_report
            else " Pretraining scored the text fed to fusion, so a swapped-in negative's pair was a negative."
        ),
    ]
    if architecture == "CMELTForPreTraining":
        lines.append(
            f"- **Fusion (pretraining only):** {config.fusion_num_layers} cross-attention layers per modality, width "
            f"{config.fusion_hidden_size}, {config.fusion_num_attention_heads} heads."
        )
        objectives = [
            f"{name} (weight {weight:g})"
            for name, used, weight in (
                ("MLM", config.use_mlm, config.mlm_loss_weight),
                ("MEM", config.use_mem, config.mem_loss_weight),
                ("ETM", config.use_etm, config.etm_loss_weight),
                ("Siglep", config.use_siglep, config.siglep_loss_weight),
            )
            if used
        ]
        lines.append(
            f"- **Pretraining objectives:** {', '.join(objectives) or 'none'}. MEM drops {config.mem_mask_ratio:.0%} of "
            f"the ECG tokens, MLM masks {config.mlm_probability:.0%} of the report tokens, and random lead masking "
            f"uses p = {ecg.lead_mask_prob:g}."
        )
    return "\n".join(lines)


def parameters_section(counts: dict[str, int]) -> str:
    rows = [f"| {part} | {_millions(count)} |" for part, count in counts.items()]
    inference = sum(counts.get(part, 0) for part in ("ECG encoder", "text encoder", "Siglep poolers and projections"))
    rows.append(f"| **total** | **{_millions(sum(counts.values()))}** |")
    text = "| part | parameters |\n|---|---|\n" + "\n".join(rows)
    if "text encoder" in counts:
        text += (
            f"\n\nZero-shot inference (`AutoModel`, the pipeline) loads only the ECG encoder, the text encoder and the "
            f"Siglep projections: {_millions(inference)} parameters."
        )
    return text


# ------------------------------------------------------------------------------------------ training


PAPER_RECIPE = """\
What the C-MELT paper trained on. These are paper facts, not facts about this checkpoint:

- **Data:** MIMIC-IV-ECG v1.0, 800,035 records of 161,352 subjects, of which 779,891 remain after cleaning.
  All machine-measurement report statements of a record are merged into one text, lower-cased, with
  punctuation removed. There are about 180k unique reports.
- **Objectives:** MLM, MEM, ETM and Siglep, summed. ETM negatives come from N3S, which embeds every report with
  Flan-T5-small and, for half of the batch, picks one of the 64 most distant reports.
- **Optimisation:** Adam, learning rate 5e-5, betas (0.9, 0.98), epsilon 1e-6, weight decay 0.01. The
  tri-stage schedule splits training 0.1 / 0.4 / 0.5 into warm-up, hold and decay. 300k steps, batch 128,
  one H100 GPU."""


def preprocessing_settings(folder: Path, config: CMELTConfig) -> dict:
    """The folder's feature-extractor settings (what the pipeline and processor really do), else the ECG config's."""
    settings = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            document = json.loads(path.read_text(encoding="utf-8"))
            settings = document.get("feature_extractor", document) if isinstance(document, dict) else {}
            break
    ecg = config.ecg_config
    rate = settings.get("sampling_rate", ecg.sampling_rate)
    samples = settings.get("num_samples", ecg.num_samples)
    normalization = settings.get("normalization", "none")
    return {
        "sampling_rate": rate,
        "num_samples": samples,
        "seconds": f"{samples / rate:g}",
        "kept_window": "the middle" if settings.get("length_policy") == "center" else "the start",
        "normalisation": (
            "Raw values, with no normalisation and no filtering, the same as in pretraining."
            if normalization == "none"
            else f"The feature extractor of this folder normalises each lead (`normalization={normalization!r}`)."
        ),
    }


def load_training_summary(folder: Path) -> dict | None:
    path = folder / TRAINING_SUMMARY_FILE
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    return summary


def is_synthetic(summary: dict | None) -> bool:
    return summary is not None and any(
        isinstance(value, str) and "synthetic" in value.lower() for value in summary.values()
    )


def training_section(summary: dict | None, provenance: str | None) -> str:
    lines = [f"**Provenance:** {provenance}"] if provenance else []
    if summary is None:
        lines.append(
            f"The folder has no `{TRAINING_SUMMARY_FILE}`, so this card cannot say what this checkpoint was "
            "trained on or for how long" + (" beyond its provenance above." if provenance else ", or whether it was "
            "trained at all.") + " Do not assume it follows the paper recipe below."
        )
    else:
        rows = "\n".join(
            f"| {key} | {json.dumps(value) if isinstance(value, (dict, list)) else value} |"
            for key, value in summary.items()
        )
        lines.append(
            f"From the `{TRAINING_SUMMARY_FILE}` the pretraining run wrote into this folder:\n\n"
            f"| field | value |\n|---|---|\n{rows}"
        )
    return "### This checkpoint\n\n" + "\n\n".join(lines) + f"\n\n### Paper recipe\n\n{PAPER_RECIPE}"


# ------------------------------------------------------------------------------------------ results


def select_results(rows: list[dict], result_model: str | None) -> list[dict]:
    """Rows of one model: `result_model` if given; results naming several models without it are an error."""
    if result_model is not None:
        return [row for row in rows if row["model"] == result_model]
    models = sorted({row["model"] for row in rows})
    if len(models) > 1:
        raise ValueError(
            f"the results describe {len(models)} models {models}; pass result_model (--result_model) to pick the "
            "one this card is about, so no other model's numbers end up in it"
        )
    return rows


def eval_results(rows: list[dict]) -> list[EvalResult]:
    """One `EvalResult` per row with a numeric value (rows stored as null are left out of the model-index)."""
    results = []
    for row in rows:
        if row["value"] is None:
            continue
        info = dataset_info(task_key(row))
        results.append(EvalResult(
            task_type=HUB_TASK_TYPE,
            task_name=TASK_NAMES.get(row["protocol"], row["protocol"]),
            dataset_type=info.hub_type,
            dataset_name=info.pretty_name,
            dataset_config=row["task"],
            dataset_split=row.get("split", "test"),
            metric_type=METRICS.get(row["metric"], (row["metric"],))[0],
            metric_value=float(row["value"]),
            metric_name=metric_display_name(row),
        ))
    return results


def evaluation_section(rows: list[dict]) -> str:
    if not rows:
        return (
            "No evaluation results were given for this checkpoint (`python -m cmelt.model_card FOLDER --results "
            "RESULTS.json` adds them). Numbers in the C-MELT paper were measured on the paper's own model, not this "
            "one."
        )
    header = (
        "| dataset | setting | split | metric | measured (this model) [95 % CI] | baseline | paper-reported |\n"
        "|---|---|---|---|---|---|---|"
    )
    table, details = [], []
    protocol_order = list(PROTOCOL_NAMES)
    for row in sorted(rows, key=lambda r: (
        protocol_order.index(r["protocol"]) if r["protocol"] in protocol_order else len(protocol_order),
        r["task"], r.get("label_fraction") or 1.0, -len(lead_names_of(r.get("leads") or "12")),
    )):
        paper = paper_result_for(row)
        paper_cell = f"{paper.value:g} ({paper.table})" if paper else MISSING
        readable = METRICS.get(row["metric"], (None, row["metric"]))[1]
        name = dataset_info(task_key(row)).pretty_name
        table.append(
            f"| {name} | {setting_text(row)} | {row.get('split', 'test')} | {readable} | {format_measured(row)} | "
            f"{format_baseline(row)} | {paper_cell} |"
        )
        if row.get("per_label"):
            per_label = ", ".join(
                f"{label} {'n/a' if value is None else f'{value * 100:.1f}'}" for label, value in row["per_label"].items()
            )
            details.append(f"- {name}, {setting_text(row)}: {per_label}")
    text = (
        "Two kinds of numbers, kept in separate columns. **measured (this model)** was computed on this checkpoint "
        "by this repository's evaluation scripts, with its bootstrap 95 % confidence interval when the run computed "
        "one; **baseline** is the same protocol on a randomly initialised model of the same architecture, when run. "
        "**paper-reported** is what the C-MELT paper reports for its own model under the same protocol "
        "(the result tables of Pham et al., arXiv:2410.02131; see Citation). It is shown for orientation only and was "
        "not measured here. \"—\" means there is no "
        "number for that setting. All columns are × 100 for AUROC, accuracy and the CinC score.\n\n"
        + header + "\n" + "\n".join(table)
    )
    if details:
        text += (
            "\n\n<details><summary>Per-class measured values (× 100)</summary>\n\n"
            + "\n".join(details) + "\n\n</details>"
        )
    commands = sorted({" ".join(row["command"]) for row in rows if row.get("command")} - {"", "-", "-c"})
    if commands:
        text += "\n\nProduced by:\n\n```bash\n" + "\n".join(commands) + "\n```"
    return text


# ------------------------------------------------------------------------------------------ figures


def collect_figures(results_paths: list[Path], figures: list[Path]) -> list[Path]:
    """PNGs passed in, plus those beside each results file (or anywhere under a results folder)."""
    found = [Path(path) for path in figures]
    for path in results_paths:
        found += sorted(path.rglob("*.png")) if path.is_dir() else sorted(path.parent.glob("*.png"))
    unique = list(dict.fromkeys(path.resolve() for path in found))
    missing = [str(path) for path in unique if not path.is_file()]
    if missing:
        raise ValueError(f"figure files not found: {missing}")
    return unique


def figures_section(figure_paths: list[Path], card_dir: Path) -> str:
    """Markdown image links relative to the card. Figures outside the folder are copied into `figures/` first,
    so the folder uploads as a self-contained repo."""
    if not figure_paths:
        return ""
    lines = ["### Figures", ""]
    target_dir = card_dir / "figures"
    for path in figure_paths:
        try:
            relative = path.relative_to(card_dir.resolve())
        except ValueError:
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / path.name
            if target.exists() and target.resolve() != path:
                target = target_dir / f"{path.parent.name}_{path.name}"
            shutil.copyfile(path, target)
            relative = target.relative_to(card_dir)
        caption = re.sub(r"[_-]+", " ", path.stem)
        lines += [f"![{caption}]({relative.as_posix()})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the card


def _hub_id_or_none(value) -> str | None:
    """`value` if it looks like a Hub model id ("owner/name") rather than a local path."""
    if isinstance(value, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not Path(value).exists():
        return value
    return None


def card_data(
    model_name: str, rows: list[dict], *, license: str, base_model: str | None, datasets: list[str]
) -> ModelCardData:
    """The card's metadata. `datasets` lists what the weights were *trained* on (the Hub's meaning of the key);
    evaluation datasets are named in the model-index."""
    metrics = [METRICS.get(row["metric"], (row["metric"],))[0] for row in rows]
    results = eval_results(rows)
    return ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=HUB_PIPELINE_TAG,
        tags=list(HUB_TAGS),
        datasets=list(dict.fromkeys(datasets)) or None,
        metrics=list(dict.fromkeys(metrics)) or None,
        base_model=base_model,
        model_name=model_name if results else None,
        eval_results=results or None,
    )


def default_license(summary: dict | None) -> str:
    """MIT for weights this repository's code trained on its own synthetic corpus (nothing else went in);
    otherwise "unknown": the weights' licence follows their data and source, which only the caller knows."""
    return CODE_LICENSE if is_synthetic(summary) else "unknown"


def default_provenance(summary: dict | None) -> str | None:
    if is_synthetic(summary):
        return "trained from scratch by this repository's demo (`train_scripts/demo.py`) on its synthetic corpus."
    return None


def license_note(license: str) -> str:
    if license == "unknown":
        return ("The code in this folder is MIT-licensed. The licence of these weights was not stated when this card "
                "was written; ask whoever published them before you use or redistribute them.")
    return f"The code in this folder is MIT-licensed; this card gives `{license}` as the licence of the weights."


def write_model_card(
    model_folder,
    results=None,
    output=None,
    figures=None,
    *,
    license: str | None = None,
    base_model: str | None = None,
    provenance: str | None = None,
    datasets: list[str] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    result_model: str | None = None,
    results_paths=None,
) -> Path:
    """Write the Hub README.md of a saved C-MELT folder and return its path (see the module docstring).

    results: results files / folders in the shared schema (or rows already read); None = `MODEL_FOLDER/results/`
        if present. `results_paths` is the same argument under its earlier name.
    output: default `MODEL_FOLDER/README.md`. figures: extra PNGs to embed.
    license: licence of the weights (Hub licence id, e.g. "mit", "cc-by-nc-4.0", "other"); default: "mit" for a
        checkpoint trained on this repository's synthetic corpus, else "unknown".
    base_model: Hub id of the model these weights were derived from (fine-tuned from, converted from); default: the
        text tower's source from `training_summary.json` when that is a Hub id.
    provenance: one sentence on where the weights come from (e.g. "converted from the authors' checkpoint
        <url> with convert_checkpoint.py at commit abc123"); shown at the top of the Training section.
    datasets: Hub ids of the datasets the weights were trained on (e.g. ["mimic-iv-ecg"]); default: the
        `datasets` list of `training_summary.json`, else none. Synthetic training data is never listed.
    model_name: name in `model-index` (default: the folder name). repo_id: id used in the usage snippets (default:
        `your-username/<model_name>`). result_model: keep only results whose "model" equals this.
    """
    folder = Path(model_folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a saved model folder: no config.json")
    config = CMELTConfig.from_pretrained(folder)
    output = Path(output) if output is not None else folder / "README.md"
    model_name = model_name or folder.resolve().name
    repo_id = repo_id or (model_name if "/" in model_name else f"your-username/{model_name}")
    summary = load_training_summary(folder)

    results = results if results is not None else results_paths
    if results is None:
        results = [folder / "results"] if (folder / "results").is_dir() else []
    given_rows = [item for item in results if isinstance(item, dict)]
    results_paths = [Path(item) for item in results if not isinstance(item, dict)]
    rows = select_results(given_rows + (read_results(results_paths) if results_paths else []), result_model)

    if base_model is None:
        base_model = _hub_id_or_none((summary or {}).get("text_encoder_name_or_path")) or _hub_id_or_none(
            getattr(config.text_config, "_name_or_path", None)
        )
    license = license or default_license(summary)
    provenance = provenance or default_provenance(summary)
    if datasets is None:
        datasets = [] if is_synthetic(summary) else list((summary or {}).get("datasets") or [])
    architecture = saved_architecture(config)
    preset = matching_preset(config)
    warnings = []
    if is_synthetic(summary):
        warnings.append(
            "> **Demo checkpoint trained on synthetic data.** Use it only to test the pipeline end to end. Its "
            "scores mean nothing for real ECGs."
        )
    if preset in ("tiny", "demo"):
        warnings.append(
            f"> **Small `{preset}` architecture.** This configuration is meant for tests and CPU demos, not the "
            "paper's model size."
        )
    data_sources = sorted(set(datasets) | {dataset_info(task_key(row)).hub_type for row in rows})
    source_lines = "\n".join(
        f"  - [{DATA_SOURCES[key][0]}]({DATA_SOURCES[key][1]})" for key in data_sources if key in DATA_SOURCES
    ) or "  - (no public dataset named in this card)"
    figure_paths = collect_figures(results_paths, [Path(path) for path in figures or []])
    output.parent.mkdir(parents=True, exist_ok=True)
    metadata = card_data(model_name, rows, license=license, base_model=base_model, datasets=datasets)
    fields = {
        "yaml_header": metadata.to_yaml(),
        "title": model_name,
        "warnings": "\n>\n".join(warnings) + "\n" if warnings else "",
        "repo_id": repo_id,
        "label_sets": ", ".join(f"`{name}`" for name in load_label_descriptions(folder=folder)),
        **preprocessing_settings(folder, config),
        "model_details": model_details_section(config, architecture, preset),
        "parameters": parameters_section(count_parameters(config)),
        "training": training_section(summary, provenance),
        "evaluation": evaluation_section(rows),
        "figures": figures_section(figure_paths, output.parent),
        "data_sources": source_lines,
        "license_note": license_note(license),
        "generated_from": (" and " + ", ".join(f"`{path.name}`" for path in results_paths)) if results_paths else "",
    }
    card = ModelCard(string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(fields))
    card.save(output)
    return output
