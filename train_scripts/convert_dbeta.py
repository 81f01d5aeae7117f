"""Convert the authors' released C-MELT / D-BETA checkpoint into a C-MELT Hub folder.

    cmelt-convert-dbeta sample.pt converted/ --tokenizer path/to/flan-t5-base
    python -m cmelt.train_scripts.convert_dbeta sample.pt converted/

The official checkpoint (`torch.load(..., weights_only=True)` gives a dict whose "model" entry is the state dict)
comes from the inference-only code of the official repository. The architecture is read from the tensor shapes;
what shapes cannot tell (strides, attention heads, which fusion layer feeds the decoder) defaults to the released
configuration and can be overridden. Every official key is mapped; a key left over or a weight missing stops the
conversion with the list. The folder then loads with `AutoModel.from_pretrained(folder, trust_remote_code=True)`
and serves `pipeline("zero-shot-ecg-classification", ...)`, using the reference options of `CMELTConfig`
(Siglep head on the fusion projection, two-logit ETM, QuickGELU MEM decoder, lower-case prompts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from modeling_cmelt import CMELTConfig, CMELTFeatureExtractor, CMELTForPreTraining, CMELTProcessor
from modeling_cmelt.layers_cmelt import sinusoidal_positions

# what the official repository states for its code and weights (its LICENSE file)
OFFICIAL_LICENSE = "cc-by-nc-4.0"
OFFICIAL_REPOSITORY = "https://github.com/manhph2211/D-BETA"
# the released configuration: strides equal kernels ([(256, 2, 2)] * 4), 64-wide attention heads, 500 Hz x 10 s,
# and the MEM decoder reads the ECG stream that enters fusion layer index 3 (= after 3 layers)
RELEASED_NUM_SAMPLES = 5000
RELEASED_HEAD_DIM = 64
RELEASED_MEM_LAYER = 3

_LAYER = r"(\d+)"
# (official key pattern, our key) in the order they are tried; fusion renames need the most specific first
_RENAMES: list[tuple[str, str]] = [
    (r"class_embedding", "ecg_model.cls_token"),
    (rf"ecg_encoder\.feature_extractor\.conv_layers\.{_LAYER}\.0\.weight", r"ecg_model.feature_encoder.conv_layers.\1.conv.weight"),
    (r"ecg_encoder\.feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"ecg_model.feature_encoder.conv_layers.0.norm.\1"),
    (r"ecg_encoder\.layer_norm\.(weight|bias)", r"ecg_model.feature_projection.layer_norm.\1"),
    (r"ecg_encoder\.post_extract_proj\.(weight|bias)", r"ecg_model.feature_projection.projection.\1"),
    (r"ecg_encoder\.conv_pos\.pos_conv\.0\.weight_g", "ecg_model.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"ecg_encoder\.conv_pos\.pos_conv\.0\.weight_v", "ecg_model.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"ecg_encoder\.conv_pos\.pos_conv\.0\.bias", "ecg_model.pos_conv_embed.conv.bias"),
    (r"ecg_encoder\.encoder\.layer_norm\.(weight|bias)", r"ecg_model.layer_norm.\1"),
    (rf"ecg_encoder\.encoder\.layers\.{_LAYER}\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"ecg_model.layers.\1.attention.\2_proj.\3"),
    (rf"ecg_encoder\.encoder\.layers\.{_LAYER}\.self_attn_layer_norm\.(weight|bias)", r"ecg_model.layers.\1.layer_norm.\2"),
    (rf"ecg_encoder\.encoder\.layers\.{_LAYER}\.fc(1|2)\.(weight|bias)", r"ecg_model.layers.\1.feed_forward.fc\2.\3"),
    (rf"ecg_encoder\.encoder\.layers\.{_LAYER}\.final_layer_norm\.(weight|bias)", r"ecg_model.layers.\1.final_layer_norm.\2"),
    (r"language_encoder\.(.+)", r"text_model.\1"),
    (r"multi_modal_language_proj\.(weight|bias)", r"text_projection.\1"),
    (r"multi_modal_ecg_proj\.(weight|bias)", r"ecg_projection.\1"),
    (r"unimodal_language_pooler\.dense\.(weight|bias)", r"text_pooler.dense.\1"),
    (r"unimodal_ecg_pooler\.dense\.(weight|bias)", r"ecg_pooler.dense.\1"),
    (r"multi_modal_language_pooler\.dense\.(weight|bias)", r"etm_text_pooler.dense.\1"),
    (r"multi_modal_ecg_pooler\.dense\.(weight|bias)", r"etm_ecg_pooler.dense.\1"),
    (r"itm_head\.fc\.(weight|bias)", r"etm_head.\1"),
    (r"modality_type_embeddings\.weight", "fusion.modality_type_embeddings.weight"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.attention\.self\.(query|key|value)\.(weight|bias)", r"fusion.\1_layers.\2.self_attention.\3.\4"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.attention\.output\.dense\.(weight|bias)", r"fusion.\1_layers.\2.self_attention.out_proj.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.attention\.output\.LayerNorm\.(weight|bias)", r"fusion.\1_layers.\2.self_attention_norm.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.crossattention\.self\.(query|key|value)\.(weight|bias)", r"fusion.\1_layers.\2.cross_attention.\3.\4"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.crossattention\.output\.dense\.(weight|bias)", r"fusion.\1_layers.\2.cross_attention.out_proj.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.crossattention\.output\.LayerNorm\.(weight|bias)", r"fusion.\1_layers.\2.cross_attention_norm.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.intermediate\.dense\.(weight|bias)", r"fusion.\1_layers.\2.feed_forward.fc1.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.output\.dense\.(weight|bias)", r"fusion.\1_layers.\2.feed_forward.fc2.\3"),
    (rf"multi_modal_(language|ecg)_layers\.{_LAYER}\.output\.LayerNorm\.(weight|bias)", r"fusion.\1_layers.\2.feed_forward_norm.\3"),
    (r"mlm_head\.transform\.dense\.(weight|bias)", r"mlm_head.dense.\1"),
    (r"mlm_head\.transform\.LayerNorm\.(weight|bias)", r"mlm_head.layer_norm.\1"),
    (r"mlm_head\.decoder\.weight", "mlm_head.decoder.weight"),
    (r"mlm_head\.bias", "mlm_head.decoder.bias"),
    (r"mim_head\.mask_token", "mem_decoder.mask_token"),
    (r"mim_head\.decoder_embed\.(weight|bias)", r"mem_decoder.embed.\1"),
    (rf"mim_head\.decoder\.resblocks\.{_LAYER}\.attn\.out_proj\.(weight|bias)", r"mem_decoder.layers.\1.attention.out_proj.\2"),
    (rf"mim_head\.decoder\.resblocks\.{_LAYER}\.ln_1\.(weight|bias)", r"mem_decoder.layers.\1.attention_norm.\2"),
    (rf"mim_head\.decoder\.resblocks\.{_LAYER}\.ln_2\.(weight|bias)", r"mem_decoder.layers.\1.feed_forward_norm.\2"),
    (rf"mim_head\.decoder\.resblocks\.{_LAYER}\.mlp\.c_fc\.(weight|bias)", r"mem_decoder.layers.\1.feed_forward.fc1.\2"),
    (rf"mim_head\.decoder\.resblocks\.{_LAYER}\.mlp\.c_proj\.(weight|bias)", r"mem_decoder.layers.\1.feed_forward.fc2.\2"),
    (r"mim_head\.decoder_norm\.(weight|bias)", r"mem_decoder.norm.\1"),
    (r"mim_head\.decoder_pred\.(weight|bias)", r"mem_decoder.predictor.\1"),
]
_FUSION_NAMES = {"language": "text", "ecg": "ecg", "query": "q_proj", "key": "k_proj", "value": "v_proj"}
# nn.MultiheadAttention packs q, k, v into one matrix; ours keeps three Linears
_PACKED_QKV = re.compile(rf"mim_head\.decoder\.resblocks\.{_LAYER}\.attn\.in_proj_(weight|bias)")
# keys consumed without a target: the unused wav2vec time-mask embedding and the decoder's fixed sinusoid table
_UNUSED = re.compile(r"ecg_encoder\.mask_emb")
_POSITION_TABLE = re.compile(r"mim_head\.decoder_pos_embed\.pe")


class CMELTConversionError(ValueError):
    """The checkpoint is not in the official format, or its keys do not map one to one."""


def load_official_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint: the "model" entry of the saved dict (or the dict itself)."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state_dict = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CMELTConversionError(
            f"{checkpoint}: expected the official format, a dict whose 'model' entry maps names to tensors"
        )
    if "class_embedding" not in state_dict or not any(key.startswith("ecg_encoder.") for key in state_dict):
        raise CMELTConversionError(f"{checkpoint}: no 'class_embedding' / 'ecg_encoder.*' keys: not a D-BETA checkpoint")
    return dict(state_dict)


def _count(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.fullmatch(pattern, key))}
    return max(indices) + 1 if indices else 0


def _heads(width: int, override: int | None) -> int:
    return override or max(1, width // RELEASED_HEAD_DIM)


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    conv_strides: list[int] | None = None,
    ecg_heads: int | None = None,
    fusion_heads: int | None = None,
    mem_heads: int | None = None,
    text_heads: int | None = None,
    mem_layer: int | None = None,
) -> CMELTConfig:
    """The `CMELTConfig` of an official state dict, from its tensor shapes (see the module docstring)."""
    shape = {key: tuple(value.shape) for key, value in state_dict.items()}
    num_conv = _count(state_dict, r"ecg_encoder\.feature_extractor\.conv_layers\.(\d+)\.0\.weight")
    convs = [shape[f"ecg_encoder.feature_extractor.conv_layers.{i}.0.weight"] for i in range(num_conv)]
    kernels = [kernel for _, _, kernel in convs]
    strides = conv_strides or kernels
    if len(strides) != num_conv:
        raise CMELTConversionError(f"--conv_strides needs {num_conv} values, got {strides}")
    hidden = shape["ecg_encoder.post_extract_proj.weight"][0]
    conv_pos = shape["ecg_encoder.conv_pos.pos_conv.0.weight_v"]
    ecg_config = {
        "num_leads": convs[0][1],
        "num_samples": RELEASED_NUM_SAMPLES,
        "conv_dim": [out for out, _, _ in convs],
        "conv_kernel": kernels,
        "conv_stride": strides,
        "conv_bias": any(key.endswith(".0.bias") and "conv_layers" in key for key in state_dict),
        "feat_extract_norm": "group",
        "hidden_size": hidden,
        "num_hidden_layers": _count(state_dict, r"ecg_encoder\.encoder\.layers\.(\d+)\.fc1\.weight"),
        "num_attention_heads": _heads(hidden, ecg_heads),
        "intermediate_size": shape["ecg_encoder.encoder.layers.0.fc1.weight"][0],
        "num_conv_pos_embeddings": conv_pos[2],
        "num_conv_pos_embedding_groups": hidden // conv_pos[1],
        "pooling": "cls",
    }
    fusion_width = shape["modality_type_embeddings.weight"][1]
    fusion_layers = _count(state_dict, r"multi_modal_language_layers\.(\d+)\.intermediate\.dense\.weight")
    mem_width = shape["mim_head.decoder_embed.weight"][0]
    return CMELTConfig(
        ecg_config=ecg_config,
        text_config=_infer_t5_config(state_dict, text_heads),
        fusion_hidden_size=fusion_width,
        fusion_num_layers=fusion_layers,
        fusion_num_attention_heads=_heads(fusion_width, fusion_heads),
        fusion_intermediate_size=shape["multi_modal_language_layers.0.intermediate.dense.weight"][0],
        mem_decoder_hidden_size=mem_width,
        mem_decoder_num_layers=_count(state_dict, r"mim_head\.decoder\.resblocks\.(\d+)\.ln_1\.weight"),
        mem_decoder_num_attention_heads=_heads(mem_width, mem_heads),
        mem_decoder_intermediate_size=shape["mim_head.decoder.resblocks.0.mlp.c_fc.weight"][0],
        mem_decoder_hidden_act="quick_gelu",
        mem_decoder_layer_norm_eps=1e-5,
        mem_fusion_layer=mem_layer or min(RELEASED_MEM_LAYER, fusion_layers),
        siglep_head="fusion_projection",
        etm_head="two_class" if shape["itm_head.fc.weight"][0] == 2 else "binary",
        text_pooling="first",
        text_cleaning="lowercase",
        siglep_learnable_scale=False,
        siglep_normalize=False,
    )


def _infer_t5_config(state_dict: Mapping[str, torch.Tensor], heads: int | None) -> dict:
    """A T5 encoder config (Flan-T5 family) from the `language_encoder.*` shapes."""
    shape = {key: tuple(value.shape) for key, value in state_dict.items()}
    prefix = "language_encoder.encoder.block"
    vocab, d_model = shape["language_encoder.shared.weight"]
    buckets, num_heads = shape[f"{prefix}.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    num_heads = heads or num_heads
    gated = f"{prefix}.0.layer.1.DenseReluDense.wi_0.weight" in shape
    wi = f"{prefix}.0.layer.1.DenseReluDense.wi_0.weight" if gated else f"{prefix}.0.layer.1.DenseReluDense.wi.weight"
    return {
        "model_type": "t5",
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": shape[f"{prefix}.0.layer.0.SelfAttention.q.weight"][0] // num_heads,
        "d_ff": shape[wi][0],
        "num_layers": _count(state_dict, r"language_encoder\.encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight"),
        "num_heads": num_heads,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


def _target_name(key: str) -> str | None:
    for pattern, replacement in _RENAMES:
        match = re.fullmatch(pattern, key)
        if match:
            name = match.expand(replacement)
            if name.startswith("fusion."):
                name = re.sub(r"(language|query|key|value)(?=[._])", lambda m: _FUSION_NAMES[m.group(1)], name)
            return name
    return None


def map_state_dict(state_dict: Mapping[str, torch.Tensor], config: CMELTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from an official one; raises `CMELTConversionError` listing every key it cannot place."""
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        if _UNUSED.fullmatch(key):
            continue
        if _POSITION_TABLE.fullmatch(key):
            _check_position_table(value)
            continue
        packed = _PACKED_QKV.fullmatch(key)
        if packed:
            layer, kind = packed.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                mapped[f"mem_decoder.layers.{layer}.attention.{name}.{kind}"] = part.clone()
            continue
        name = _target_name(key)
        if name is None:
            unknown.append(key)
        else:
            mapped[name] = value.reshape(1, 1, -1) if name == "ecg_model.cls_token" else value
    if unknown:
        raise CMELTConversionError(f"{len(unknown)} official keys have no place in C-MELT: {sorted(unknown)}")
    return mapped


def _check_position_table(table: torch.Tensor) -> None:
    """The decoder's stored sinusoid table must be the one we compute (we do not store it)."""
    length, width = table.shape[-2:]
    expected = sinusoidal_positions(length, width)
    if not torch.allclose(table.reshape(length, width).float(), expected, atol=1e-5):
        raise CMELTConversionError("mim_head.decoder_pos_embed.pe is not the standard sinusoid table")


def load_converted(state_dict: Mapping[str, torch.Tensor], config: CMELTConfig) -> CMELTForPreTraining:
    """`CMELTForPreTraining` holding the official weights; every weight of both sides must be used."""
    model = CMELTForPreTraining(config)
    mapped = map_state_dict(state_dict, config)
    expected = model.state_dict()
    wrong_shape = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in mapped.items() if k in expected and v.shape != expected[k].shape]
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected or wrong_shape:
        raise CMELTConversionError(
            f"official weights do not fill C-MELT one to one: missing {missing}, unexpected {unexpected}, "
            f"wrong shape {wrong_shape}"
        )
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    tokenizer: str | Path | None = None,
    license: str = OFFICIAL_LICENSE,
    **shape_overrides,
) -> Path:
    """Convert and save a complete Hub folder; returns it."""
    state_dict = load_official_state_dict(checkpoint)
    config = infer_config(state_dict, **shape_overrides)
    model = load_converted(state_dict, config)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    feature_extractor = CMELTFeatureExtractor(
        sampling_rate=config.ecg_config.sampling_rate, num_samples=config.ecg_config.num_samples
    )
    if tokenizer is not None:
        from transformers import AutoTokenizer

        CMELTProcessor(feature_extractor, AutoTokenizer.from_pretrained(tokenizer)).save_pretrained(output_dir)
    else:
        feature_extractor.save_pretrained(output_dir)
    provenance = {
        "source": OFFICIAL_REPOSITORY,
        "checkpoint_file": Path(checkpoint).name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "official_keys": len(state_dict),
        "license": license,
        "converted_by": "cmelt-convert-dbeta",
    }
    (output_dir / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
    _write_card(output_dir, provenance)
    return output_dir


def _write_card(output_dir: Path, provenance: dict) -> None:
    from cmelt.model_card.generate import write_model_card

    write_model_card(
        output_dir,
        model_name=output_dir.resolve().name,
        license=provenance["license"],
        provenance=(
            f"Converted with `cmelt-convert-dbeta` from the authors' released checkpoint `{provenance['checkpoint_file']}` "
            f"(SHA-256 `{provenance['checkpoint_sha256'][:16]}…`) of the official repository {provenance['source']}, "
            f"pretrained by the authors on MIMIC-IV-ECG. Licence of the weights as the authors state it: "
            f"{provenance['license']} (non-commercial)."
        ),
        datasets=["mimic-iv-ecg"],
    )


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the official checkpoint (e.g. sample.pt)")
    parser.add_argument("output_dir", help="the Hub folder to write")
    parser.add_argument("--tokenizer", help="a local Flan-T5-base folder whose tokenizer the folder should carry")
    parser.add_argument("--license", default=OFFICIAL_LICENSE, help=f"licence of the weights (default: {OFFICIAL_LICENSE}, as the authors state)")
    parser.add_argument("--conv_strides", type=_int_list, help="comma-separated conv strides (default: = kernels)")
    parser.add_argument("--ecg_heads", type=int, help=f"ECG attention heads (default: width / {RELEASED_HEAD_DIM})")
    parser.add_argument("--fusion_heads", type=int, help=f"fusion attention heads (default: width / {RELEASED_HEAD_DIM})")
    parser.add_argument("--mem_heads", type=int, help=f"MEM decoder heads (default: width / {RELEASED_HEAD_DIM})")
    parser.add_argument("--text_heads", type=int, help="T5 heads (default: from the relative attention table)")
    parser.add_argument("--mem_layer", type=int, help=f"fusion layers before the MEM decoder (default {RELEASED_MEM_LAYER})")
    args = parser.parse_args(argv)
    folder = convert(
        args.checkpoint,
        args.output_dir,
        tokenizer=args.tokenizer,
        license=args.license,
        conv_strides=args.conv_strides,
        ecg_heads=args.ecg_heads,
        fusion_heads=args.fusion_heads,
        mem_heads=args.mem_heads,
        text_heads=args.text_heads,
        mem_layer=args.mem_layer,
    )
    print(f"converted {args.checkpoint} -> {folder}")
    if args.tokenizer is None:
        print(
            "the folder holds no tokenizer: add one with\n"
            f"  python -c \"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('google/flan-t5-base')"
            f".save_pretrained('{folder}')\"\nor re-run with --tokenizer path/to/flan-t5-base"
        )


if __name__ == "__main__":
    main()
