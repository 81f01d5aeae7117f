"""What a run saves and uploads: checkpoints that carry the processor and code, `push_to_hub` uploads of the
complete folder read after the atomic rename (never the staging folder), and the final model folder with its card.
The Hub client is replaced by a recorder (no network)."""

import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from data.text_tower import build_tiny_t5
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

    from train_scripts.pretrain import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain

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
