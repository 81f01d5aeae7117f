"""Converting the authors' checkpoint format (issue 11): a synthetic checkpoint with the official key names and
shapes at tiny sizes, checked against a functional re-statement of the reference forward written from its facts."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import T5EncoderModel

from cmelt.data.text_tower import build_tiny_t5
from modeling_cmelt import CMELTModel
from cmelt.train_scripts.convert_dbeta import CMELTConversionError, infer_config, load_converted

H, FUSION, MEM, K_POS, GROUPS = 32, 32, 16, 16, 4
CONVS = [(16, 12, 4), (16, 16, 4)]  # (out, in, kernel); stride = kernel -> 312 tokens of 16 samples
HEADS = {"ecg_heads": 4, "fusion_heads": 4, "mem_heads": 2, "mem_layer": 1}


def _fusion_layer(prefix: str, generator) -> dict:
    keys = {}
    for block in ("attention", "crossattention"):
        for part in ("query", "key", "value"):
            keys[f"{prefix}.{block}.self.{part}.weight"] = (FUSION, FUSION)
            keys[f"{prefix}.{block}.self.{part}.bias"] = (FUSION,)
        keys[f"{prefix}.{block}.output.dense.weight"] = (FUSION, FUSION)
        keys[f"{prefix}.{block}.output.dense.bias"] = (FUSION,)
        keys[f"{prefix}.{block}.output.LayerNorm.weight"] = (FUSION,)
        keys[f"{prefix}.{block}.output.LayerNorm.bias"] = (FUSION,)
    keys.update({f"{prefix}.intermediate.dense.weight": (4 * FUSION, FUSION), f"{prefix}.intermediate.dense.bias": (4 * FUSION,)})
    keys.update({f"{prefix}.output.dense.weight": (FUSION, 4 * FUSION), f"{prefix}.output.dense.bias": (FUSION,)})
    keys.update({f"{prefix}.output.LayerNorm.weight": (FUSION,), f"{prefix}.output.LayerNorm.bias": (FUSION,)})
    return keys


def official_shapes(vocab: int) -> dict[str, tuple]:
    """Every key of the official model (reference code's module names) at tiny sizes, except the T5 tower."""
    shapes = {"class_embedding": (H,), "ecg_encoder.mask_emb": (H,)}
    for i, (out, inp, kernel) in enumerate(CONVS):
        shapes[f"ecg_encoder.feature_extractor.conv_layers.{i}.0.weight"] = (out, inp, kernel)
    shapes.update({"ecg_encoder.feature_extractor.conv_layers.0.2.weight": (16,), "ecg_encoder.feature_extractor.conv_layers.0.2.bias": (16,)})
    shapes.update({"ecg_encoder.layer_norm.weight": (16,), "ecg_encoder.layer_norm.bias": (16,)})
    shapes.update({"ecg_encoder.post_extract_proj.weight": (H, 16), "ecg_encoder.post_extract_proj.bias": (H,)})
    shapes.update({"ecg_encoder.conv_pos.pos_conv.0.weight_g": (1, 1, K_POS), "ecg_encoder.conv_pos.pos_conv.0.weight_v": (H, H // GROUPS, K_POS)})
    shapes.update({"ecg_encoder.conv_pos.pos_conv.0.bias": (H,), "ecg_encoder.encoder.layer_norm.weight": (H,), "ecg_encoder.encoder.layer_norm.bias": (H,)})
    for layer in range(2):
        prefix = f"ecg_encoder.encoder.layers.{layer}"
        for proj in ("q", "k", "v", "out"):
            shapes.update({f"{prefix}.self_attn.{proj}_proj.weight": (H, H), f"{prefix}.self_attn.{proj}_proj.bias": (H,)})
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes.update({f"{prefix}.{norm}.weight": (H,), f"{prefix}.{norm}.bias": (H,)})
        shapes.update({f"{prefix}.fc1.weight": (2 * H, H), f"{prefix}.fc1.bias": (2 * H,), f"{prefix}.fc2.weight": (H, 2 * H), f"{prefix}.fc2.bias": (H,)})
    for name in ("language", "ecg"):
        shapes.update({f"multi_modal_{name}_proj.weight": (FUSION, H), f"multi_modal_{name}_proj.bias": (FUSION,)})
        for layer in range(2):
            shapes.update(_fusion_layer(f"multi_modal_{name}_layers.{layer}", None))
        for pooler in (f"multi_modal_{name}_pooler", f"unimodal_{name}_pooler"):
            shapes.update({f"{pooler}.dense.weight": (FUSION, FUSION), f"{pooler}.dense.bias": (FUSION,)})
    shapes["modality_type_embeddings.weight"] = (2, FUSION)
    shapes.update({"mlm_head.bias": (vocab,), "mlm_head.transform.dense.weight": (FUSION, FUSION), "mlm_head.transform.dense.bias": (FUSION,)})
    shapes.update({"mlm_head.transform.LayerNorm.weight": (FUSION,), "mlm_head.transform.LayerNorm.bias": (FUSION,), "mlm_head.decoder.weight": (vocab, FUSION)})
    shapes.update({"mim_head.mask_token": (1, 1, MEM), "mim_head.decoder_embed.weight": (MEM, FUSION), "mim_head.decoder_embed.bias": (MEM,)})
    block = "mim_head.decoder.resblocks.0"
    shapes.update({f"{block}.attn.in_proj_weight": (3 * MEM, MEM), f"{block}.attn.in_proj_bias": (3 * MEM,)})
    shapes.update({f"{block}.attn.out_proj.weight": (MEM, MEM), f"{block}.attn.out_proj.bias": (MEM,)})
    shapes.update({f"{block}.mlp.c_fc.weight": (4 * MEM, MEM), f"{block}.mlp.c_fc.bias": (4 * MEM,)})
    shapes.update({f"{block}.mlp.c_proj.weight": (MEM, 4 * MEM), f"{block}.mlp.c_proj.bias": (MEM,)})
    for norm in (f"{block}.ln_1", f"{block}.ln_2", "mim_head.decoder_norm"):
        shapes.update({f"{norm}.weight": (MEM,), f"{norm}.bias": (MEM,)})
    shapes.update({"mim_head.decoder_pred.weight": (12 * 16, MEM), "mim_head.decoder_pred.bias": (12 * 16,)})
    shapes.update({"itm_head.fc.weight": (2, 2 * FUSION), "itm_head.fc.bias": (2,)})
    return shapes


def sinusoid(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, width, 2) * (-torch.log(torch.tensor(10000.0)) / width))
    table = torch.zeros(1, length, width)
    table[0, :, 0::2], table[0, :, 1::2] = torch.sin(position * frequencies), torch.cos(position * frequencies)
    return table


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(checkpoint path, state dict, tokenizer folder): random weights under the official names."""
    folder = tmp_path_factory.mktemp("dbeta")
    t5_folder = build_tiny_t5(["sinus rhythm", "atrial fibrillation", "left bundle branch block"] * 5, folder / "t5", vocab_size=64, d_model=H, d_ff=64)
    t5 = T5EncoderModel.from_pretrained(t5_folder)
    vocab = t5.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=generator) * 0.3 for name, shape in official_shapes(vocab).items()}
    for name in state:
        if name.endswith(("LayerNorm.weight", "layer_norm.weight", "ln_1.weight", "ln_2.weight", "decoder_norm.weight", "2.weight")):
            state[name] = 1.0 + state[name]
    state.update({f"language_encoder.{name}": value for name, value in t5.state_dict().items()})
    state["mim_head.decoder_pos_embed.pe"] = sinusoid(512, MEM)
    checkpoint = folder / "sample.pt"
    torch.save({"model": state, "args": None}, checkpoint)
    return checkpoint, state, t5_folder


def reference_ecg_features(state: dict, ecg: torch.Tensor) -> torch.Tensor:
    """The reference code's ECG embedding, restated with torch.nn.functional on the official names."""
    prefix = "ecg_encoder."
    x = F.conv1d(ecg, state[prefix + "feature_extractor.conv_layers.0.0.weight"], stride=4)
    x = F.gelu(F.group_norm(x, 16, state[prefix + "feature_extractor.conv_layers.0.2.weight"], state[prefix + "feature_extractor.conv_layers.0.2.bias"]))
    x = F.gelu(F.conv1d(x, state[prefix + "feature_extractor.conv_layers.1.0.weight"], stride=4)).transpose(1, 2)
    x = F.layer_norm(x, (16,), state[prefix + "layer_norm.weight"], state[prefix + "layer_norm.bias"])
    x = F.linear(x, state[prefix + "post_extract_proj.weight"], state[prefix + "post_extract_proj.bias"])
    v, g = state[prefix + "conv_pos.pos_conv.0.weight_v"], state[prefix + "conv_pos.pos_conv.0.weight_g"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)
    positions = F.conv1d(x.transpose(1, 2), weight, state[prefix + "conv_pos.pos_conv.0.bias"], padding=K_POS // 2, groups=GROUPS)
    x = x + F.gelu(positions[:, :, :-1]).transpose(1, 2)
    x = torch.cat([state["class_embedding"].expand(len(x), 1, -1), x], dim=1)
    x = F.layer_norm(x, (H,), state[prefix + "encoder.layer_norm.weight"], state[prefix + "encoder.layer_norm.bias"])
    for layer in range(2):
        p = f"{prefix}encoder.layers.{layer}."
        q, k, v = (F.linear(x, state[p + f"self_attn.{n}_proj.weight"], state[p + f"self_attn.{n}_proj.bias"]) for n in "qkv")
        q, k, v = (t.reshape(len(x), -1, 4, H // 4).transpose(1, 2) for t in (q, k, v))
        attended = (torch.softmax(q @ k.transpose(-1, -2) / (H // 4) ** 0.5, -1) @ v).transpose(1, 2).reshape(len(x), -1, H)
        x = F.layer_norm(x + F.linear(attended, state[p + "self_attn.out_proj.weight"], state[p + "self_attn.out_proj.bias"]), (H,), state[p + "self_attn_layer_norm.weight"], state[p + "self_attn_layer_norm.bias"])
        hidden = F.linear(F.gelu(F.linear(x, state[p + "fc1.weight"], state[p + "fc1.bias"])), state[p + "fc2.weight"], state[p + "fc2.bias"])
        x = F.layer_norm(x + hidden, (H,), state[p + "final_layer_norm.weight"], state[p + "final_layer_norm.bias"])
    projected = F.linear(x, state["multi_modal_ecg_proj.weight"], state["multi_modal_ecg_proj.bias"])
    return torch.tanh(F.linear(projected[:, 0], state["unimodal_ecg_pooler.dense.weight"], state["unimodal_ecg_pooler.dense.bias"]))


def reference_mem_head(state: dict, states: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """The reference MEM head (pre-LN blocks with packed q/k/v, QuickGELU, LayerNorm eps 1e-5)."""
    x = F.linear(states, state["mim_head.decoder_embed.weight"], state["mim_head.decoder_embed.bias"])
    masks = state["mim_head.mask_token"].expand(len(x), ids_restore.shape[1] + 1 - x.shape[1], -1)
    tokens = torch.gather(torch.cat([x[:, 1:], masks], 1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, MEM))
    x = torch.cat([x[:, :1], tokens], 1) + state["mim_head.decoder_pos_embed.pe"][:, : ids_restore.shape[1] + 1]
    p = "mim_head.decoder.resblocks.0."
    normed = F.layer_norm(x, (MEM,), state[p + "ln_1.weight"], state[p + "ln_1.bias"], eps=1e-5)
    q, k, v = F.linear(normed, state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]).chunk(3, -1)
    q, k, v = (t.reshape(len(x), -1, 2, MEM // 2).transpose(1, 2) for t in (q, k, v))
    attended = (torch.softmax(q @ k.transpose(-1, -2) / (MEM // 2) ** 0.5, -1) @ v).transpose(1, 2).reshape(len(x), -1, MEM)
    x = x + F.linear(attended, state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"])
    hidden = F.linear(F.layer_norm(x, (MEM,), state[p + "ln_2.weight"], state[p + "ln_2.bias"], eps=1e-5), state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"])
    x = x + F.linear(hidden * torch.sigmoid(1.702 * hidden), state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (MEM,), state["mim_head.decoder_norm.weight"], state["mim_head.decoder_norm.bias"], eps=1e-5)
    return F.linear(x, state["mim_head.decoder_pred.weight"], state["mim_head.decoder_pred.bias"])[:, 1:]


def test_shapes_give_the_reference_configuration(official):
    _, state, _ = official
    config = infer_config(state, **HEADS)
    ecg = config.ecg_config
    assert (list(ecg.conv_dim), list(ecg.conv_kernel), list(ecg.conv_stride)) == ([16, 16], [4, 4], [4, 4])
    assert (ecg.hidden_size, ecg.num_hidden_layers, ecg.intermediate_size, ecg.num_tokens) == (H, 2, 2 * H, 312)
    assert (config.siglep_head, config.etm_head, config.mem_decoder_hidden_act, config.text_cleaning) == (
        "fusion_projection", "two_class", "quick_gelu", "lowercase"
    )
    assert (config.fusion_num_layers, config.mem_decoder_num_layers, config.text_config.num_layers) == (2, 1, 2)
    # released widths: heads of 64 channels
    assert infer_config(state).fusion_num_attention_heads == 1


def test_every_key_is_consumed_and_outputs_match_the_reference(official):
    _, state, _ = official
    model = load_converted(state, infer_config(state, **HEADS))
    ecg = torch.randn(3, 12, 5000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.get_ecg_features(ecg).pooler_output
        torch.testing.assert_close(ours, reference_ecg_features(state, ecg), rtol=1e-4, atol=1e-5)
        text = torch.tensor([[5, 9, 12, 1], [7, 3, 1, 0]])
        mask = (text != 0).long()
        t5_states = model.text_model(input_ids=text, attention_mask=mask).last_hidden_state
        projected = F.linear(t5_states, state["multi_modal_language_proj.weight"], state["multi_modal_language_proj.bias"])
        expected = torch.tanh(F.linear(projected[:, 0], state["unimodal_language_pooler.dense.weight"], state["unimodal_language_pooler.dense.bias"]))
        torch.testing.assert_close(model.get_text_features(text, mask).pooler_output, expected, rtol=1e-4, atol=1e-5)
        states = torch.randn(2, 1 + 78, FUSION)
        ids_restore = torch.argsort(torch.rand(2, 312), dim=1)
        torch.testing.assert_close(model.mem_decoder(states, ids_restore), reference_mem_head(state, states, ids_restore), rtol=1e-4, atol=1e-5)
        fused = torch.randn(2, FUSION)
        transform = F.layer_norm(F.gelu(F.linear(fused, state["mlm_head.transform.dense.weight"], state["mlm_head.transform.dense.bias"])), (FUSION,), state["mlm_head.transform.LayerNorm.weight"], state["mlm_head.transform.LayerNorm.bias"], eps=1e-12)
        torch.testing.assert_close(model.mlm_head(fused), F.linear(transform, state["mlm_head.decoder.weight"]) + state["mlm_head.bias"])


def test_missing_or_extra_keys_are_clear_errors(official):
    _, state, _ = official
    config = infer_config(state, **HEADS)
    with pytest.raises(CMELTConversionError, match="no place in C-MELT.*multi_modal_ecg_extra"):
        load_converted({**state, "multi_modal_ecg_extra.weight": torch.zeros(1)}, config)
    without = {key: value for key, value in state.items() if key != "unimodal_ecg_pooler.dense.bias"}
    with pytest.raises(CMELTConversionError, match=r"missing \['ecg_pooler.dense.bias'\]"):
        load_converted(without, config)
    with pytest.raises(CMELTConversionError, match="not a D-BETA checkpoint"):
        from cmelt.train_scripts.convert_dbeta import load_official_state_dict

        torch.save({"model": {"weight": torch.zeros(1)}}, official[0].parent / "other.pt")
        load_official_state_dict(official[0].parent / "other.pt")


CONVERTED_PIPELINE = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_cmelt"] = None
    sys.modules["data"] = None
    import torch
    from transformers import AutoModel, pipeline
    folder, record = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert "transformers_modules" in type(model).__module__
    classifier = pipeline("zero-shot-ecg-classification", model=folder, trust_remote_code=True)
    result = classifier(record, candidate_labels=["AFIB", "NORM", "STE"], label_set="cpsc2018")
    print(sorted(entry["label"] for entry in result))
    """
)


@pytest.mark.slow
def test_cli_writes_a_hub_folder_that_serves_the_pipeline_without_the_package(official, shared_data, tmp_path):
    checkpoint, state, t5_folder = official
    output = tmp_path / "converted"
    flags = ["--ecg_heads", "4", "--fusion_heads", "4", "--mem_heads", "2", "--mem_layer", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "cmelt.train_scripts.convert_dbeta", str(checkpoint), str(output), "--tokenizer", str(t5_folder), *flags],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = {path.name for path in output.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_cmelt.py", "README.md", "conversion.json"} <= saved
    assert saved & {"preprocessor_config.json", "processor_config.json"}
    assert any(name.startswith("tokenizer") or name == "spiece.model" for name in saved)
    card = (output / "README.md").read_text()
    assert "cc-by-nc-4.0" in card and "manhph2211/D-BETA" in card
    model = CMELTModel.from_pretrained(output).eval()
    ecg = torch.randn(2, 12, 5000)
    with torch.no_grad():
        torch.testing.assert_close(model.get_ecg_features(ecg).pooler_output, reference_ecg_features(state, ecg), rtol=1e-4, atol=1e-5)
    script = tmp_path / "run.py"
    script.write_text(CONVERTED_PIPELINE)
    served = subprocess.run(
        [sys.executable, str(script), str(output), str(shared_data / "wfdb" / "s0010_re")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout.strip().splitlines()[-1] == "['AFIB', 'NORM', 'STE']"


def test_without_a_tokenizer_the_cli_says_how_to_add_one(official, tmp_path):
    checkpoint, _, _ = official
    result = subprocess.run(
        [sys.executable, "-m", "cmelt.train_scripts.convert_dbeta", str(checkpoint), str(tmp_path / "out"), "--ecg_heads", "4", "--fusion_heads", "4", "--mem_heads", "2", "--mem_layer", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds no tokenizer" in result.stdout and "--tokenizer" in result.stdout
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
