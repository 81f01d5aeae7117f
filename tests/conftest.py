"""Shared test fixtures: the real reference records (../shared/data beside the repository), a tiny saved C-MELT
(`model_folder`, `dual_encoder_folder`, `build_tiny_model_folder`), a tiny labelled evaluation dataset
(`dataset_path`) and a Hub cache populated offline (`hub_cache_with`)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference records not found at {SHARED_DATA} (the ../shared/data folder beside the repo)")
    return SHARED_DATA


# ---------------------------------------------------------------------------------------------------------------
# a tiny saved model


def build_tiny_model_folder(root: Path, name: str = "cmelt-tiny", model_class=None, extra_texts=(),
                            **config_overrides) -> Path:
    """`root/name`: a "tiny"-preset model (`CMELTForPreTraining` unless `model_class`), seeded weights, saved with a
    processor whose small T5 tokenizer was trained on the shipped label prompts (plus `extra_texts`)."""
    import torch
    from transformers import AutoTokenizer

    from cmelt.data.text_tower import build_tiny_t5
    from modeling_cmelt import CMELTConfig, CMELTFeatureExtractor, CMELTForPreTraining, CMELTProcessor
    from modeling_cmelt.pipeline_cmelt import load_label_descriptions

    texts = [text for label_set in load_label_descriptions().values() for text in label_set.values()]
    build_tiny_t5(texts + list(extra_texts), root / "t5", vocab_size=200, d_model=32, d_ff=64)
    tokenizer = AutoTokenizer.from_pretrained(root / "t5")
    torch.manual_seed(0)
    config = CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)}, **config_overrides)
    (model_class or CMELTForPreTraining)(config).save_pretrained(root / name)
    CMELTProcessor(CMELTFeatureExtractor(), tokenizer).save_pretrained(root / name)
    return root / name


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny saved `CMELTForPreTraining` with its processor (one per test module: modules may write into it)."""
    return build_tiny_model_folder(tmp_path_factory.mktemp("cmelt-tiny"))


@pytest.fixture(scope="module")
def dual_encoder_folder(tmp_path_factory) -> Path:
    """A tiny saved `CMELTModel` (the dual encoder the pipeline loads) with a learned SigLIP scale and bias."""
    from modeling_cmelt import CMELTModel

    return build_tiny_model_folder(tmp_path_factory.mktemp("cmelt-zero-shot"), name="model", model_class=CMELTModel,
                                   siglep_learnable_scale=True)


HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_with(model_folder, cache, repo_id: str) -> None:
    """The layout `huggingface_hub` downloads into (`models--org--name/snapshots/<rev>/`, `refs/main`), populated
    offline from a saved folder: loading `repo_id` from it is what a user of a Hub model gets."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_folder, repo / "snapshots" / HUB_REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HUB_REVISION)


# ---------------------------------------------------------------------------------------------------------------
# a tiny labelled evaluation dataset (CPSC2018 codes, learnable rhythms)

EVALUATION_CODES = ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]  # label_codes("cpsc2018")
EVALUATION_SIZES = {"train": 36, "validation": 12, "test": 18}


def labelled_rows(count: int, seed: int) -> dict:
    """Rows like the downstream loaders': class c has a c-dependent rhythm so the labels are learnable."""
    from cmelt.data.ecg_store import encode_ecg

    codes = EVALUATION_CODES
    rng = np.random.default_rng(seed)
    time = np.arange(5000) / 500.0
    rows = {"record_id": [], "ecg": [], "lead_mask": [], "label_ids": [], "labels": []}
    for index in range(count):
        positives = sorted({index % len(codes), *rng.choice(len(codes), rng.integers(0, 2), replace=False).tolist()})
        frequency = 0.8 + 0.25 * positives[0]
        signal = np.sin(2 * np.pi * frequency * time)[None] * rng.uniform(0.5, 1.5, (12, 1))
        signal = signal + rng.normal(0, 0.05, (12, 5000))
        rows["record_id"].append(f"r{seed}_{index}")
        rows["ecg"].append(encode_ecg(signal))
        rows["lead_mask"].append([True] * 12)
        rows["label_ids"].append(positives)
        rows["labels"].append([1.0 if c in positives else 0.0 for c in range(len(codes))])
    return rows


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    """A saved DatasetDict (train / validation / test) of `labelled_rows`, named like a CPSC2018 dataset."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    from cmelt.data.ecg_store import ECG_FEATURE, LEAD_MASK_FEATURE

    codes = EVALUATION_CODES
    features = Features({
        "record_id": Value("string"), "ecg": ECG_FEATURE, "lead_mask": LEAD_MASK_FEATURE,
        "label_ids": Sequence(ClassLabel(names=codes)), "labels": Sequence(Value("float32"), length=len(codes)),
    })
    dataset_dict = DatasetDict({
        split: Dataset.from_dict(labelled_rows(size, seed), features=features)
        for seed, (split, size) in enumerate(EVALUATION_SIZES.items())
    })
    path = tmp_path_factory.mktemp("data") / "cpsc2018_tiny"
    dataset_dict.save_to_disk(str(path))
    return path
