"""What a run saves and uploads: checkpoints that carry the processor and code, `push_to_hub` uploads of the
complete folder read after the atomic rename (never the staging folder), and the final model folder with its card.
The Hub client is replaced by a recorder (no network)."""

import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTConfig, CMELTForPreTraining
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.processing_cmelt import CMELTProcessor

sys.path.insert(0, str(Path(__file__).parent))
from test_pretraining import REPORTS, lookup, tiny_corpus  # noqa: E402

HUB_FOLDER_FILES = {"config.json", "model.safetensors", "modeling_cmelt.py", "configuration_cmelt.py",
                    "processing_cmelt.py", "feature_extraction_cmelt.py", "pipeline_cmelt.py",
                    "processor_config.json", "tokenizer_config.json"}


class RecordingHub:
    """Stands for `huggingface_hub.HfApi`: records each upload with the files present when it is asked for."""

    def __init__(self):
        self.uploads = []

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": f"someone/{repo_id}"})()

    def upload_folder(self, repo_id, folder_path, path_in_repo=None, ignore_patterns=None, run_as_future=False,
                      **kwargs):
        files = {path.name for path in Path(folder_path).iterdir()}
        self.uploads.append({"folder": Path(folder_path), "files": files, "path_in_repo": path_in_repo,
                             "ignore": ignore_patterns or []})
        done = Future()
        done.set_result(None)
        return done if run_as_future else None


@pytest.mark.slow
def test_push_to_hub_uploads_complete_final_folders(tmp_path, monkeypatch):
    from transformers import trainer as hf_trainer

    from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain

    hub = RecordingHub()
    monkeypatch.setattr(hf_trainer, "hf_api", lambda: hub)
    folder = build_tiny_t5(REPORTS * 5, tmp_path / "t5", vocab_size=64, d_model=32, d_ff=64)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = CMELTProcessor(CMELTFeatureExtractor(num_samples=1000), tokenizer)
    torch.manual_seed(0)
    model = CMELTForPreTraining(CMELTConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)}))
    output_dir = tmp_path / "run"
    args = CMELTTrainingArguments(
        output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, save_steps=2, logging_steps=1,
        report_to="none", dataloader_num_workers=0, push_to_hub=True, hub_model_id="cmelt-test",
        hub_strategy="checkpoint", hub_always_push=True,
    )
    pretrain(CMELTModelArguments(), CMELTDataArguments(), args, train_dataset=tiny_corpus(), report_texts=lookup,
             model=model, processor=processor)

    model_uploads = [u for u in hub.uploads if u["path_in_repo"] is None]
    checkpoint_uploads = [u for u in hub.uploads if u["path_in_repo"] == "last-checkpoint"]
    assert [u["folder"].name for u in model_uploads] == ["checkpoint-2", "checkpoint-4", "model"]
    assert [u["folder"].name for u in checkpoint_uploads] == ["checkpoint-2", "checkpoint-4"]
    for upload in hub.uploads:
        assert ".staging" not in upload["folder"].parts  # read after the rename, so the folder stays there
        assert upload["folder"].is_dir()
        assert HUB_FOLDER_FILES <= upload["files"], HUB_FOLDER_FILES - upload["files"]
    assert "optimizer.pt" in model_uploads[0]["ignore"]  # resume-only files stay out of the model repo
    assert "README.md" in model_uploads[-1]["files"]  # the final folder carries its model card


@pytest.mark.parametrize("world, expected", [(1, (128, 1)), (2, (64, 1)), (8, (16, 1)), (3, None)])
def test_paper_yaml_gives_a_global_batch_of_128_on_any_number_of_processes(world, expected):
    import yaml
    from transformers import HfArgumentParser

    from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, batch_split

    settings = yaml.safe_load((Path(__file__).parent.parent / "configs" / "paper.yaml").read_text())
    assert settings.pop("bf16") is True  # TrainingArguments refuses bf16 on a machine without GPU
    parser = HfArgumentParser((CMELTModelArguments, CMELTDataArguments, CMELTTrainingArguments))
    model_args, data_args, training_args = parser.parse_dict(settings, allow_extra_keys=False)
    assert training_args.global_batch_size == 128 and model_args.model_preset == "paper"
    assert data_args.negatives == "n3s" and training_args.max_steps == 300_000
    if expected is None:
        with pytest.raises(ValueError, match="multiple of the 3 processes"):
            batch_split(128, world, training_args.per_device_train_batch_size)
    else:
        assert batch_split(128, world, training_args.per_device_train_batch_size) == expected
    assert batch_split(128, 2, 16) == (16, 4)  # 16 fit on a device: 16 x 4 accumulation x 2 processes


def test_accelerate_and_deepspeed_configs_are_consistent():
    import json

    import yaml

    configs = Path(__file__).parent.parent / "configs"
    fsdp = yaml.safe_load((configs / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    wrapped = set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","))
    assert wrapped <= set(CMELTForPreTraining._no_split_modules)
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    for stage in (2, 3):
        accelerate_config = yaml.safe_load((configs / "accelerate" / f"deepspeed_zero{stage}.yaml").read_text())
        deepspeed = json.loads((configs.parent / accelerate_config["deepspeed_config"]["deepspeed_config_file"]).read_text())
        assert deepspeed["zero_optimization"]["stage"] == stage
    assert json.loads((configs / "deepspeed" / "zero3.json").read_text())["zero_optimization"][
        "stage3_gather_16bit_weights_on_model_save"]  # the final save_model writes full weights
