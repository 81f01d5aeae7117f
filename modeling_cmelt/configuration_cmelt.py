"""C-MELT configuration: an ECG tower, a text tower (any encoder config; Flan-T5-base shape by default), and the
fusion / pretraining heads on top.

`CMELTConfig()` with no arguments is the paper's configuration. `CMELTConfig.from_preset("tiny")`
is a small model for tests and demos.
"""

from __future__ import annotations

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Flan-T5-base encoder shape (google/flan-t5-base config.json); only the encoder half is instantiated.
FLAN_T5_BASE_SHAPE = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 2048,
    "num_layers": 12,
    "num_heads": 12,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "is_encoder_decoder": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}


@strict
class CMELTECGConfig(PreTrainedConfig):
    r"""
    Configuration of the C-MELT ECG encoder: a wav2vec 2.0-style convolutional feature extractor, a convolutional
    positional embedding, a learned CLS token and post-LN transformer layers.

    Args:
        num_leads (`int`): number of input leads (canonical order I, II, III, aVR, aVL, aVF, V1-V6).
        sampling_rate (`int`): sampling rate in Hz the encoder was trained on.
        num_samples (`int`): samples per recording the encoder was trained on (10 s at 500 Hz).
        conv_dim (`list[int]`): output channels of each convolutional feature-extractor layer.
        conv_kernel (`list[int]`): kernel size of each convolutional layer.
        conv_stride (`list[int]`): stride of each convolutional layer; their product is the samples per token.
        conv_bias (`bool`): whether the convolutions have a bias.
        feat_extract_norm (`str`): "group" = GroupNorm (one group per channel) after the first conv only (reference);
            "layer" = LayerNorm after every conv.
        feat_extract_activation (`str`): activation after each convolution.
        feat_proj_dropout (`float`): dropout after projecting conv features to `hidden_size`.
        hidden_size (`int`): width of the transformer.
        num_hidden_layers (`int`): number of transformer layers (paper ablation: 1 / 4 / 8).
        num_attention_heads (`int`): attention heads per layer.
        intermediate_size (`int`): feed-forward width.
        hidden_act (`str`): feed-forward activation.
        hidden_dropout (`float`): dropout on residual branches.
        attention_dropout (`float`): dropout on attention probabilities.
        activation_dropout (`float`): dropout inside the feed-forward block.
        layer_norm_eps (`float`): epsilon of every LayerNorm.
        num_conv_pos_embeddings (`int`): kernel size of the convolutional positional embedding.
        num_conv_pos_embedding_groups (`int`): groups of the convolutional positional embedding.
        lead_mask_prob (`float`): probability of hiding each lead of a pretraining input (random lead masking); the
            pretraining collator reads it from here, so the saved config and model card state what was trained.
        pooling (`str`): how `get_ecg_features` pools the sequence: "cls" (token 0) or "mean" (over real tokens).
        initializer_range (`float`): std of the normal initialiser.
    """

    model_type = "cmelt_ecg"
    base_config_key = "ecg_config"

    num_leads: int = 12
    sampling_rate: int = 500
    num_samples: int = 5000
    conv_dim: list[int] | tuple[int, ...] = (256, 256, 256, 256)
    conv_kernel: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    conv_stride: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: Literal["group", "layer"] = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_dropout: float = 0.1
    hidden_size: int = 768
    num_hidden_layers: int = 8
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    lead_mask_prob: float = 0.5
    pooling: Literal["cls", "mean"] = "cls"
    initializer_range: float = 0.02

    def validate_architecture(self):
        """Part of `@strict` validation: shapes that would otherwise fail deep inside the forward."""
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(
                "conv_dim, conv_kernel and conv_stride must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError("hidden_size must be divisible by num_conv_pos_embedding_groups")
        if not 0.0 <= self.lead_mask_prob <= 1.0:
            raise ValueError(f"lead_mask_prob must be in [0, 1], got {self.lead_mask_prob}")
        if self.num_tokens < 1:
            raise ValueError(f"num_samples={self.num_samples} is too short for the conv stack {self.conv_kernel}")

    @property
    def samples_per_token(self) -> int:
        return math.prod(self.conv_stride)

    @property
    def num_tokens(self) -> int:
        return self.conv_output_length(self.num_samples)

    def conv_output_length(self, num_samples: int) -> int:
        """Tokens the conv stack makes from `num_samples` samples (0 or less: too short)."""
        length = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            length = (length - kernel) // stride + 1
        return length


@strict
class CMELTConfig(PreTrainedConfig):
    r"""
    Configuration of C-MELT: ECG tower, text tower, cross-modal fusion and the four pretraining objectives
    (MLM, MEM, ETM, Siglep). The defaults reproduce the paper / reference code.

    Args:
        ecg_config (`CMELTECGConfig` or `dict`): the ECG tower.
        text_config (`PreTrainedConfig` or `dict`): the text tower; any encoder config with a `model_type`
            (T5 family: only the encoder is built). Defaults to the Flan-T5-base shape.
        max_text_length (`int`): tokens per report the tokenizer keeps (pretraining collator, processor, pipeline).
        text_length_buckets (`int`): the text tower runs on this many groups of rows of similar length, each trimmed
            to its own longest row. The states of the real tokens are the same; padding costs less when reports
            vary in length (demo corpus: 17 tokens on average, ~44 the longest of 64). 1 = one call (GPUs).
        fusion_hidden_size (`int`): width of the cross-modal fusion layers.
        fusion_num_layers (`int`): fusion layers per modality (each: self-attn, cross-attn, feed-forward).
        fusion_num_attention_heads (`int`): heads of each fusion attention.
        fusion_intermediate_size (`int`): feed-forward width of the fusion layers.
        fusion_hidden_act (`str`): activation of the fusion feed-forward and of the MLM head transform.
        fusion_dropout (`float`): dropout in the fusion layers.
        fusion_layer_norm_eps (`float`): epsilon of the fusion LayerNorms (BERT-style post-LN).
        mem_decoder_hidden_size (`int`): width of the masked-ECG-modelling decoder.
        mem_decoder_num_layers (`int`): pre-LN transformer blocks in the MEM decoder.
        mem_decoder_num_attention_heads (`int`): heads in the MEM decoder.
        mem_decoder_intermediate_size (`int`): feed-forward width of the MEM decoder.
        mem_decoder_hidden_act (`str`): activation of the MEM decoder's feed-forward ("quick_gelu" in the
            reference code).
        mem_decoder_layer_norm_eps (`float`): epsilon of the MEM decoder's LayerNorms (reference: 1e-5).
        mem_fusion_layer (`int`): which fusion layer's ECG stream feeds the MEM decoder (1-based).
        mem_mask_ratio (`float`): fraction of ECG tokens dropped before the transformer for masked ECG modelling
            (MAE-style). Configs written before it moved here carry it as `ecg_config.mask_ratio`; that is read.
        mem_norm_target (`bool`): z-score each lead of the (cut) input record over its whole length, unbiased
            variance, before cutting it into target patches (the reference code's rule).
        mlm_probability (`float`): fraction of report tokens masked for MLM (the pretraining collator reads it).
        mlm_mask_token (`str`): token that replaces masked text tokens when the tokenizer has no mask token (T5; the
            pretraining collator reads it).
        projection_dim (`int`, *optional*): size of the Siglep projections; defaults to `fusion_hidden_size`.
        siglep_head (`str`): how the Siglep embeddings are made from each tower's sequence. "fusion_projection"
            (reference code): the fusion's input projection (the same weights that feed fusion), then token 0
            (or the mean) -> dense -> tanh; the embedding size is `fusion_hidden_size`. "pool_project": pool ->
            dense -> tanh -> a separate Linear to `projection_dim`.
        siglep_clean_text (`bool`): compute Siglep's text embedding from the report *before* MLM masking (the text
            that zero-shot scores is never masked); the masked report still feeds fusion and MLM.
        siglep_clean_ecg (`bool`): compute Siglep's ECG embedding from every token, not only those MEM keeps (the
            ECG that zero-shot scores is never masked; a dropped token can hold the one beat a report names); the
            conv features are shared, the transformer runs a second time. The masked ECG still feeds fusion and MEM.
        siglep_own_report (`bool`): Siglep pairs every ECG with its own report, so each row of the batch is a
            positive; the negatives swapped in for ETM (N3S) then feed only fusion, MLM and ETM. False (paper and
            reference): Siglep scores the text fed to fusion, so a swapped row's diagonal is a negative and half of
            the batch has no positive. The pretraining collator supplies the own reports as `siglep_input_ids`.
        text_cleaning (`str`): how label prompts are normalised before zero-shot scoring: "report" (`clean_report`,
            as the pretraining reports) or "lowercase" (lower case only, as the reference code's zero-shot).
        etm_head (`str`): "binary" = Linear(2 * fusion width, 1) + BCE; "two_class" = Linear(2 * fusion width, 2)
            + cross-entropy (reference code). The match probability is the same function of the weights.
        text_pooling (`str`): how the unimodal text sequence is pooled for Siglep: "first" (token 0, reference)
            or "mean" (over the attention mask).
        siglep_learnable_scale (`bool`): learn SigLIP's logit scale and bias; False = fixed scale 1, no bias
            (reference code).
        logit_scale_init_value (`float`): initial log logit scale when learnable (SigLIP: log 10).
        logit_bias_init_value (`float`): initial logit bias when learnable (SigLIP: -10).
        siglep_normalize (`bool`): L2-normalise the projections before the dot product (SigLIP); reference: False.
        siglep_duplicate_aware (`bool`): count pairs whose reports are identical as positives (needs report ids).
        use_mlm (`bool`): compute the masked language modelling loss.
        use_mem (`bool`): compute the masked ECG modelling loss.
        use_etm (`bool`): compute the ECG-text matching loss.
        use_siglep (`bool`): compute the Siglep contrastive loss.
        mlm_loss_weight (`float`): weight of the MLM loss in the total.
        mem_loss_weight (`float`): weight of the MEM loss in the total.
        etm_loss_weight (`float`): weight of the ETM loss in the total.
        siglep_loss_weight (`float`): weight of the Siglep loss in the total.
        initializer_range (`float`): std of the normal initialiser of the C-MELT-owned layers.
    """

    model_type = "cmelt"
    sub_configs_defaults = {
        "ecg_config": CMELTECGConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="t5", init_kwargs=FLAN_T5_BASE_SHAPE),
    }

    ecg_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    max_text_length: int = 256
    text_length_buckets: int = 1
    fusion_hidden_size: int = 768
    fusion_num_layers: int = 6
    fusion_num_attention_heads: int = 12
    fusion_intermediate_size: int = 3072
    fusion_hidden_act: str = "gelu"
    fusion_dropout: float = 0.1
    fusion_layer_norm_eps: float = 1e-12
    mem_decoder_hidden_size: int = 384
    mem_decoder_num_layers: int = 4
    mem_decoder_num_attention_heads: int = 6
    mem_decoder_intermediate_size: int = 1536
    mem_decoder_hidden_act: str = "quick_gelu"
    mem_decoder_layer_norm_eps: float = 1e-5
    mem_fusion_layer: int = 3
    mem_mask_ratio: float = 0.75
    mem_norm_target: bool = True
    mlm_probability: float = 0.25
    mlm_mask_token: str = "<extra_id_0>"
    projection_dim: int | None = None
    siglep_head: Literal["fusion_projection", "pool_project"] = "fusion_projection"
    siglep_clean_text: bool = True
    siglep_clean_ecg: bool = False
    siglep_own_report: bool = False
    text_cleaning: Literal["report", "lowercase"] = "report"
    etm_head: Literal["binary", "two_class"] = "two_class"
    text_pooling: Literal["first", "mean"] = "first"
    siglep_learnable_scale: bool = False
    logit_scale_init_value: float = math.log(10.0)
    logit_bias_init_value: float = -10.0
    siglep_normalize: bool = False
    siglep_duplicate_aware: bool = False
    use_mlm: bool = True
    use_mem: bool = True
    use_etm: bool = True
    use_siglep: bool = True
    mlm_loss_weight: float = 1.0
    mem_loss_weight: float = 1.0
    etm_loss_weight: float = 1.0
    siglep_loss_weight: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.projection_dim = self.projection_dim or self.fusion_hidden_size
        self._read_legacy_mask_ratio()
        super().__post_init__(**kwargs)
        self._read_legacy_mask_ratio()

    def _read_legacy_mask_ratio(self) -> None:
        """Configs saved before `mem_mask_ratio` moved to the top level carry it as `ecg_config.mask_ratio`
        (a dict key before the sub-config is built, an extra attribute after): move it here."""
        if isinstance(self.ecg_config, dict) and "mask_ratio" in self.ecg_config:
            self.ecg_config = dict(self.ecg_config)
            self.mem_mask_ratio = float(self.ecg_config.pop("mask_ratio"))
        elif isinstance(self.ecg_config, PreTrainedConfig) and "mask_ratio" in vars(self.ecg_config):
            self.mem_mask_ratio = float(vars(self.ecg_config).pop("mask_ratio"))

    def validate_architecture(self):
        """Part of `@strict` validation."""
        if self.fusion_hidden_size % self.fusion_num_attention_heads:
            raise ValueError("fusion_hidden_size must be divisible by fusion_num_attention_heads")
        if self.mem_decoder_hidden_size % self.mem_decoder_num_attention_heads:
            raise ValueError("mem_decoder_hidden_size must be divisible by mem_decoder_num_attention_heads")
        if self.use_mem and not 1 <= self.mem_fusion_layer <= self.fusion_num_layers:
            raise ValueError(f"mem_fusion_layer must be in 1..{self.fusion_num_layers}, got {self.mem_fusion_layer}")
        if not 0.0 <= self.mem_mask_ratio < 1.0:
            raise ValueError(f"mem_mask_ratio must be in [0, 1), got {self.mem_mask_ratio}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.text_length_buckets < 1:
            raise ValueError(f"text_length_buckets must be >= 1, got {self.text_length_buckets}")
        if self.siglep_head == "fusion_projection" and self.projection_dim != self.fusion_hidden_size:
            raise ValueError(
                f'siglep_head="fusion_projection" embeds at the fusion width ({self.fusion_hidden_size}); got '
                f'projection_dim={self.projection_dim} (leave it unset, or use siglep_head="pool_project")'
            )

    @property
    def text_hidden_size(self) -> int:
        """Width of the text tower's output (`d_model` for T5, `hidden_size` for BERT-like encoders)."""
        return self.text_config.hidden_size

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CMELTConfig":
        """A named configuration: "paper" (= `CMELTConfig()`), "tiny" (tests), "demo" (the embedded CPU run).

        `overrides` go to the top-level config; sub-config overrides are passed as `ecg_config={...}` /
        `text_config={...}` and merged into the preset's.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(_PRESETS)}")
        preset = {key: dict(value) if isinstance(value, dict) else value for key, value in _PRESETS[name].items()}
        for key in ("ecg_config", "text_config"):
            if key in overrides:
                preset[key] = {**preset.get(key, {}), **overrides.pop(key)}
        if "text_config" in preset and "model_type" not in preset["text_config"]:
            preset["text_config"] = {**FLAN_T5_BASE_SHAPE, "model_type": "t5", **preset["text_config"]}
        return cls(**{**preset, **overrides})


_TINY_ECG = {
    "conv_dim": [16, 16],
    "conv_kernel": [4, 4],
    "conv_stride": [4, 4],
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "num_samples": 1000,
}
_TINY_TEXT = {
    "vocab_size": 128,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
}
_PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": {
        "ecg_config": _TINY_ECG,
        "text_config": _TINY_TEXT,
        "max_text_length": 32,
        "fusion_hidden_size": 32,
        "fusion_num_layers": 2,
        "fusion_num_attention_heads": 4,
        "fusion_intermediate_size": 64,
        "mem_decoder_hidden_size": 16,
        "mem_decoder_num_layers": 1,
        "mem_decoder_num_attention_heads": 2,
        "mem_decoder_intermediate_size": 32,
        "mem_fusion_layer": 1,
        "projection_dim": 16,
        "siglep_head": "pool_project",
        "etm_head": "binary",
    },
    # The embedded CPU demo: stride-128 conv stack (39 tokens for 10 s), width 128, 2 + 1 layers. At the same wall
    # time, fewer tokens buy more steps: held-out zero-shot AUC 0.864 (stride 32, 400 steps), 0.889 (stride 64,
    # 700 steps), 0.905 (stride 128, 900 steps) on the demo corpus (README, "The embedded default").
    "demo": {
        "ecg_config": {
            "conv_dim": [64, 64, 128],
            "conv_kernel": [4, 4, 8],
            "conv_stride": [4, 4, 8],
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 256,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 8,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
            "feat_proj_dropout": 0.0,
            "pooling": "mean",
            "lead_mask_prob": 0.1,
        },
        "text_config": {
            "vocab_size": 600,  # SentencePiece pieces of the demo's tokenizer (data.text_tower.build_tiny_t5)
            "d_model": 128,
            "d_kv": 32,
            "d_ff": 256,
            "num_layers": 2,
            "num_heads": 4,
            "dropout_rate": 0.0,
        },
        "max_text_length": 64,
        # demo reports average 17 tokens while a batch's longest is ~44: four length groups skip most of the padding
        "text_length_buckets": 4,
        "fusion_hidden_size": 128,
        "fusion_num_layers": 1,
        "fusion_num_attention_heads": 4,
        "fusion_intermediate_size": 256,
        "fusion_dropout": 0.0,
        "mem_decoder_hidden_size": 64,
        "mem_decoder_num_layers": 1,
        "mem_decoder_num_attention_heads": 4,
        "mem_decoder_intermediate_size": 128,
        "mem_fusion_layer": 1,
        # MEM drops half the tokens, not the paper's 75 %: on the demo corpus it reached 0.814 held-out zero-shot
        # AUC at 300 steps against 0.776, for about 15 % more time per step (README, "The embedded default").
        "mem_mask_ratio": 0.5,
        # Siglep scores the whole ECG, as zero-shot does: 0.926 held-out zero-shot AUC against 0.905 at 900 steps
        # (1AVB 0.82 against 0.70), for about 35 % more time per step.
        "siglep_clean_ecg": True,
        # Siglep pairs every ECG with its own report (the N3S negatives feed only fusion, MLM and ETM): every row is a
        # positive, not half, at the same step time (the own reports replace the re-encoded clean fed reports).
        "siglep_own_report": True,
        "projection_dim": 128,
        "siglep_head": "pool_project",
        "etm_head": "binary",
        "text_pooling": "mean",
        "siglep_learnable_scale": True,
        # SigLIP's bias init (-10) suits its 32k-pair batches; at 64 pairs, one positive per row, the prior log-odds
        # of a positive is log(1/63) = -4.1. From -10 the bias did not move in 500 steps (-10.02 at the end).
        # Held-out zero-shot AUC at 500 steps (README, "How the recipe was chosen"): 0.874 (fed report, -10),
        # 0.905 (own report, -10), 0.946 (own report, -5).
        "logit_bias_init_value": -5.0,
        # The learnable scale moves little in 500 steps either (10 -> 9.75), so its start matters too: held-out
        # zero-shot AUC 0.917 from 20, 0.946 from 10 (SigLIP's), 0.957 from 5 (README, "How the recipe was chosen").
        "logit_scale_init_value": math.log(5.0),
        "siglep_normalize": True,
    },
}

CMELTConfig.register_for_auto_class("AutoConfig")

__all__ = ["CMELTConfig", "CMELTECGConfig"]
