"""C-MELT: an ECG transformer and a text encoder pretrained jointly with MLM, MEM, ETM and Siglep.

Module map (all weights of one checkpoint share these names, so every head class loads the same folder):
    ecg_model      CMELTECGModel: conv feature extractor -> LayerNorm -> projection -> conv positions -> CLS ->
                   post-LN transformer layers (MAE-style token dropping during pretraining)
    text_model     any text encoder built from `config.text_config` (T5: encoder only), always given a mask
    ecg_pooler / ecg_projection, text_pooler / text_projection, logit_scale / logit_bias   (Siglep)
    fusion         bidirectional cross-attention layers (pretraining only)
    mlm_head, mem_decoder, etm_head                                                         (pretraining only)
Attention, feed-forward, fusion, MLM head and MEM decoder are defined in `layers_cmelt.py`.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForTextEncoding, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_cmelt import CMELTConfig, CMELTECGConfig
from .layers_cmelt import CMELTAttention, CMELTFeedForward, CMELTFusion, CMELTMEMDecoder, CMELTMLMHead
from .loss_cmelt import etm_loss, etm_match_probability, mem_loss, mlm_loss, patchify_ecg, siglep_loss


@dataclass
class CMELTECGModelOutput(ModelOutput):
    """Output of the ECG encoder.

    Args:
        last_hidden_state: (batch, 1 + kept tokens, hidden) — token 0 is CLS.
        pooler_output: (batch, hidden) — CLS or mean of the tokens, per `config.pooling`.
        token_mask: (batch, num_tokens), 1 where a token was dropped for MEM (None without masking).
        ids_restore: (batch, num_tokens) permutation that puts kept + dropped tokens back in order.
        hidden_states: per-layer states when asked for.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    token_mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CMELTOutput(ModelOutput):
    """Output of the dual encoder (zero-shot, retrieval).

    Args:
        loss: Siglep loss with the diagonal as positives, when `return_loss=True`.
        logits_per_ecg: (num_ecgs, num_texts) scaled similarities; sigmoid gives match probabilities.
        logits_per_text: the transpose.
        ecg_embeds / text_embeds: the projected (and, if configured, L2-normalised) embeddings.
        ecg_model_output / text_model_output: the towers' outputs.
    """

    loss: torch.FloatTensor | None = None
    logits_per_ecg: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    ecg_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    ecg_model_output: CMELTECGModelOutput | None = None
    text_model_output: BaseModelOutput | None = None

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class CMELTForPreTrainingOutput(ModelOutput):
    """Output of one pretraining forward: the weighted total and each enabled loss, with the logits behind them.

    Args:
        loss: weighted sum of the enabled losses.
        loss_mlm / loss_mem / loss_etm / loss_siglep: each loss (None when switched off).
        mlm_logits: with MLM `labels`, (num_masked_tokens, vocab) logits at the masked positions only (what the
            loss needs); without, (batch, length, vocab) logits at every position.
        mem_predictions: (batch, num_tokens, leads * samples_per_token) reconstructed patches.
        etm_logits: ECG-text matching logits, (batch,) for the binary head or (batch, 2) for the two-class head.
        etm_probs: (batch,) probability that each ECG-text pair matches (either head).
        logits_per_ecg: (batch, batch) Siglep logits of the local batch.
    """

    loss: torch.FloatTensor | None = None
    loss_mlm: torch.FloatTensor | None = None
    loss_mem: torch.FloatTensor | None = None
    loss_etm: torch.FloatTensor | None = None
    loss_siglep: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mem_predictions: torch.FloatTensor | None = None
    etm_logits: torch.FloatTensor | None = None
    etm_probs: torch.FloatTensor | None = None
    logits_per_ecg: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------- ECG encoder


class CMELTConvLayer(nn.Module):
    def __init__(self, config: CMELTECGConfig, layer_id: int):
        super().__init__()
        in_channels = config.num_leads if layer_id == 0 else config.conv_dim[layer_id - 1]
        out_channels = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size=config.conv_kernel[layer_id],
            stride=config.conv_stride[layer_id],
            bias=config.conv_bias,
        )
        if config.feat_extract_norm == "layer":
            self.norm = nn.LayerNorm(out_channels, elementwise_affine=True)
        elif layer_id == 0:
            self.norm = nn.GroupNorm(num_groups=out_channels, num_channels=out_channels, affine=True)
        else:
            self.norm = None
        self.activation = ACT2FN[config.feat_extract_activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states)
        if isinstance(self.norm, nn.LayerNorm):
            hidden_states = self.norm(hidden_states.transpose(-2, -1)).transpose(-2, -1)
        elif self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return self.activation(hidden_states)


class CMELTFeatureEncoder(nn.Module):
    """(batch, leads, samples) -> (batch, conv_dim[-1], tokens)."""

    def __init__(self, config: CMELTECGConfig):
        super().__init__()
        self.conv_layers = nn.ModuleList(CMELTConvLayer(config, i) for i in range(len(config.conv_dim)))

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden_states = input_values
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states)
        return hidden_states


class CMELTFeatureProjection(nn.Module):
    def __init__(self, config: CMELTECGConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.projection(self.layer_norm(features)))


class CMELTPositionalConvEmbedding(nn.Module):
    """wav2vec 2.0's convolutional relative positions: grouped, weight-normalised, 'same' length."""

    def __init__(self, config: CMELTECGConfig):
        super().__init__()
        conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=config.num_conv_pos_embeddings,
            padding=config.num_conv_pos_embeddings // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.remove_last = config.num_conv_pos_embeddings % 2 == 0
        self.activation = ACT2FN[config.feat_extract_activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        positions = self.conv(hidden_states.transpose(1, 2))
        if self.remove_last:
            positions = positions[:, :, :-1]
        return self.activation(positions).transpose(1, 2)


class CMELTECGLayer(GradientCheckpointingLayer):
    """Post-LN transformer layer (BERT / wav2vec 2.0 base)."""

    def __init__(self, config: CMELTECGConfig):
        super().__init__()
        self.attention = CMELTAttention(
            config, config.hidden_size, config.num_attention_heads, config.attention_dropout
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = CMELTFeedForward(
            config.hidden_size, config.intermediate_size, config.hidden_act, config.activation_dropout
        )
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm(hidden_states + self.dropout(self.attention(hidden_states)))
        return self.final_layer_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))


def check_ecg_input(input_values: torch.Tensor, config: CMELTECGConfig, lead_mask: torch.Tensor | None = None):
    """Refuse inputs the encoder would silently mis-read (transposed, wrong lead count, too short)."""
    expected = f"(batch, {config.num_leads} leads, samples), e.g. (batch, 12, {config.num_samples}) at 500 Hz"
    if input_values.dim() != 3:
        raise ValueError(f"input_values must be {expected}; got shape {tuple(input_values.shape)}")
    batch, leads, samples = input_values.shape
    if leads != config.num_leads:
        hint = " — it looks transposed: use input_values.transpose(1, 2)" if samples == config.num_leads else ""
        raise ValueError(f"input_values must be {expected}; got shape {tuple(input_values.shape)}{hint}")
    if config.conv_output_length(samples) < 1:
        raise ValueError(
            f"input_values has {samples} samples, too few for the conv stack (kernels {list(config.conv_kernel)}, "
            f"strides {list(config.conv_stride)}); expected {config.num_samples}"
        )
    if lead_mask is not None and tuple(lead_mask.shape) != (batch, leads):
        raise ValueError(f"lead_mask must have shape (batch, {leads}) = {(batch, leads)}; got {tuple(lead_mask.shape)}")


HUB_CUSTOM_PIPELINES = {
    "zero-shot-ecg-classification": {
        "impl": "pipeline_cmelt.ZeroShotECGClassificationPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
}


def copy_hub_code(save_directory: str | Path) -> list[Path]:
    """Copy this folder's code and data files next to saved weights, so the folder is a complete Hub repo:
    the feature extractor, processor and pipeline are not imported by the model, so transformers would skip them."""
    source = Path(__file__).resolve().parent
    copied = []
    for path in sorted(source.glob("*.py")) + sorted(source.glob("*.json")):
        if path.name != "__init__.py":
            target = Path(save_directory) / path.name
            shutil.copyfile(path, target)
            copied.append(target)
    return copied


def _share_token_embedding_module(text_model: nn.Module) -> None:
    """T5 holds its token embedding in two modules (`shared`, `encoder.embed_tokens`) tied by weight. FSDP2 through
    accelerate shards the input embedding as its own unit and then meets the other module's copy of the weight in
    the root unit ("shared with a parameter already managed by another FSDP group"). One module in both places is
    the same weights (same state-dict keys) and shards."""
    shared, encoder = getattr(text_model, "shared", None), getattr(text_model, "encoder", None)
    embed_tokens = getattr(encoder, "embed_tokens", None)
    if isinstance(shared, nn.Embedding) and isinstance(embed_tokens, nn.Embedding):
        if embed_tokens.weight.shape != shared.weight.shape:
            raise ValueError(f"text tower embeddings differ: shared {tuple(shared.weight.shape)} vs encoder "
                             f"{tuple(embed_tokens.weight.shape)}")
        encoder.embed_tokens = shared


def _is_fsdp2_sharded(model: nn.Module) -> bool:
    if not torch.distributed.is_available():  # some builds have no torch.distributed
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _drop_fsdp_class_code(model: PreTrainedModel, save_directory: str | Path) -> None:
    """Under FSDP2 (`fully_shard`) the model's class is torch's `FSDP<class>`, made in a torch module: transformers'
    save copies that module and its relatives into the folder and names `FSDP<class>` in `auto_map`, so
    `AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)` fails. Remove those files and write
    the config back with C-MELT's own `auto_map`."""
    wrapper_file = Path(sys.modules[type(model).__module__].__file__)
    for path in (wrapper_file, *map(Path, get_relative_import_files(str(wrapper_file)))):
        (Path(save_directory) / path.name).unlink(missing_ok=True)
    model.config.auto_map = {**model.config.auto_map, **hub_auto_map()}
    model.config.save_pretrained(save_directory)


class CMELTPreTrainedModel(PreTrainedModel):
    config: CMELTConfig
    config_class = CMELTConfig
    base_model_prefix = "cmelt"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    # Every loss is already a per-batch mean: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["CMELTECGLayer", "CMELTFusionLayer", "CMELTMEMDecoderLayer", "T5Block", "BertLayer"]
    # learned tokens, type embeddings and SigLIP's scale/bias are not weights to shrink (as SigLIP / open_clip);
    # the Trainer leaves parameters whose name matches one of these out of weight decay, besides norms and biases
    no_weight_decay_patterns = (r"cls_token", r"mask_token", r"modality_type_embeddings", r"logit_scale", r"logit_bias")

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        """Save weights (safetensors), the config with the full `auto_map` and the zero-shot pipeline, and every
        code and data file of this folder (feature extractor, processor, pipeline, label descriptions)."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **hub_auto_map()}
        self.config.custom_pipelines = HUB_CUSTOM_PIPELINES
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            if _is_fsdp2_sharded(self):
                _drop_fsdp_class_code(self, save_directory)
            copy_hub_code(save_directory)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CMELTECGModel):
            init.normal_(module.cls_token, std=module.config.initializer_range)
        elif isinstance(module, nn.Conv1d) and nn.utils.parametrize.is_parametrized(module, "weight"):
            # the positional conv itself (it holds the bias directly): transformers 5 skips modules without direct
            # parameters under remote code, so a branch on CMELTPositionalConvEmbedding would never run.
            # wav2vec 2.0 / reference init: v ~ N(0, 4 / (kernel * channels)), g = |v| so that weight = v.
            direction = module.parametrizations.weight.original1
            init.normal_(direction, std=2 * math.sqrt(1 / (module.kernel_size[0] * module.in_channels)))
            init.copy_(module.parametrizations.weight.original0, direction.norm(dim=(0, 1), keepdim=True))
            init.zeros_(module.bias)
        elif isinstance(module, CMELTMEMDecoder):
            init.normal_(module.mask_token, std=self.config.initializer_range)
        elif isinstance(module, CMELTModel) and module.logit_scale is not None:
            init.constant_(module.logit_scale, module.config.logit_scale_init_value)
            init.constant_(module.logit_bias, module.config.logit_bias_init_value)


class CMELTECGModel(CMELTPreTrainedModel):
    """The ECG tower. `mask_ratio > 0` drops that fraction of tokens at random before the transformer (MEM)."""

    config: CMELTECGConfig
    config_class = CMELTECGConfig
    base_model_prefix = "ecg_model"

    def __init__(self, config: CMELTECGConfig):
        super().__init__(config)
        self.feature_encoder = CMELTFeatureEncoder(config)
        self.feature_projection = CMELTFeatureProjection(config)
        self.pos_conv_embed = CMELTPositionalConvEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(CMELTECGLayer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    @staticmethod
    def random_masking(sequence: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Keep a random (1 - mask_ratio) of the tokens of each sample; `noise` (batch, tokens) fixes the draw.

        Returns the kept tokens, a 0/1 mask (1 = dropped) in the original order, and the restoring permutation.
        """
        batch, length, width = sequence.shape
        len_keep = max(1, int(length * (1 - mask_ratio)))
        if noise is None:
            noise = torch.rand(batch, length, device=sequence.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        kept = torch.gather(sequence, 1, ids_keep.unsqueeze(-1).expand(-1, -1, width))
        token_mask = torch.ones(batch, length, device=sequence.device, dtype=sequence.dtype)
        token_mask[:, :len_keep] = 0
        return kept, torch.gather(token_mask, 1, ids_restore), ids_restore

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        mask_ratio: float = 0.0,
        noise: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> CMELTECGModelOutput:
        r"""
        input_values: (batch, 12, samples) float, canonical lead order, mV (see CMELTFeatureExtractor).
        lead_mask: (batch, 12) bool/0-1, False where a lead is absent or masked out; those leads are zeroed.
        mask_ratio: fraction of tokens to drop (pretraining's MEM); 0 at inference.
        noise: (batch, num_tokens) values whose argsort decides which tokens are dropped (tests, reproducibility).
        """
        return self.encode(self.embed(input_values, lead_mask), mask_ratio, noise, output_hidden_states)

    def embed(self, input_values: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, num_tokens, hidden_size) token embeddings: conv stack, projection and positions, before masking
        and the transformer (pretraining encodes them twice with `siglep_clean_ecg`: masked and whole)."""
        check_ecg_input(input_values, self.config, lead_mask)
        if lead_mask is not None:
            input_values = input_values * lead_mask.to(input_values.dtype).unsqueeze(-1)
        features = self.feature_encoder(input_values).transpose(1, 2)
        hidden_states = self.feature_projection(features)
        return hidden_states + self.pos_conv_embed(hidden_states)

    def encode(
        self, hidden_states: torch.Tensor, mask_ratio: float = 0.0, noise: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> CMELTECGModelOutput:
        """The transformer over `embed`'s tokens, after dropping `mask_ratio` of them (MEM)."""
        token_mask = ids_restore = None
        if mask_ratio > 0:
            hidden_states, token_mask, ids_restore = self.random_masking(hidden_states, mask_ratio, noise)
        cls_tokens = self.cls_token.expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        hidden_states = self.dropout(self.layer_norm(torch.cat([cls_tokens, hidden_states], dim=1)))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        pooled = hidden_states[:, 0] if self.config.pooling == "cls" else hidden_states[:, 1:].mean(dim=1)
        return CMELTECGModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            token_mask=token_mask,
            ids_restore=ids_restore,
            hidden_states=all_hidden_states,
        )


# ------------------------------------------------------------------------------------------- dual encoder


class CMELTPooler(nn.Module):
    """dense -> tanh on an already pooled vector (BERT's pooler, applied after `pool_sequence`)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(pooled))


def pool_sequence(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """"first"/"cls": token 0; "mean": mean over positions where `attention_mask` is 1."""
    if mode in ("first", "cls"):
        return hidden_states[:, 0]
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class CMELTModel(CMELTPreTrainedModel):
    """ECG and text towers with Siglep projections: zero-shot labelling and ECG-report retrieval."""

    # A pretraining checkpoint also holds the fusion and pretraining heads; the dual encoder does not need them.
    _keys_to_ignore_on_load_unexpected = [r"^fusion\.", r"^mlm_head\.", r"^mem_decoder\.", r"^etm_"]

    def __init__(self, config: CMELTConfig):
        super().__init__(config)
        self._build_dual_encoder(config)
        self.post_init()

    def _build_dual_encoder(self, config: CMELTConfig) -> None:
        self.ecg_model = CMELTECGModel._from_config(config.ecg_config)
        self.text_model = AutoModelForTextEncoding.from_config(config.text_config)
        _share_token_embedding_module(self.text_model)
        ecg_hidden, text_hidden = config.ecg_config.hidden_size, config.text_hidden_size
        if config.siglep_head == "fusion_projection":
            # projection first (these Linears are also the fusion's input projections), then the pooler
            width = config.fusion_hidden_size
            self.ecg_projection, self.ecg_pooler = nn.Linear(ecg_hidden, width), CMELTPooler(width)
            self.text_projection, self.text_pooler = nn.Linear(text_hidden, width), CMELTPooler(width)
        else:
            self.ecg_pooler = CMELTPooler(ecg_hidden)
            self.ecg_projection = nn.Linear(ecg_hidden, config.projection_dim)
            self.text_pooler = CMELTPooler(text_hidden)
            self.text_projection = nn.Linear(text_hidden, config.projection_dim)
        if config.siglep_learnable_scale:
            self.logit_scale = nn.Parameter(torch.empty(1))
            self.logit_bias = nn.Parameter(torch.empty(1))
        else:
            self.logit_scale = self.logit_bias = None

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.set_input_embeddings(value)

    def logit_scale_and_bias(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        if self.logit_scale is None:
            return 1.0, 0.0
        return self.logit_scale.exp(), self.logit_bias

    def _project(self, pooled: torch.Tensor, pooler: CMELTPooler, projection: nn.Linear) -> torch.Tensor:
        # "fusion_projection" projects each token, then pools; token 0 and the mean commute with a Linear, so
        # projecting the pooled vector gives the same embedding for a fraction of the work
        if self.config.siglep_head == "fusion_projection":
            embeds = pooler(projection(pooled))
        else:
            embeds = projection(pooler(pooled))
        if self.config.siglep_normalize:
            embeds = nn.functional.normalize(embeds, dim=-1)
        return embeds

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the text tower, always with an attention mask (derived from the pad token when not given)."""
        if attention_mask is None:
            pad_token_id = self.config.text_config.pad_token_id
            if pad_token_id is None:
                raise ValueError("attention_mask is required: the text config has no pad_token_id to derive it from")
            attention_mask = (input_ids != pad_token_id).long()
        if self.config.text_length_buckets > 1 and input_ids.shape[0] > 1:
            return self._encode_text_in_length_buckets(input_ids, attention_mask), attention_mask
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True), attention_mask

    def _encode_text_in_length_buckets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        """The text tower on `config.text_length_buckets` groups of rows sorted by length, each cut after its last
        unmasked column. Masked keys add nothing to attention and T5's position bias is relative, so the real tokens'
        states are those of one call; padded positions hold zeros. Padding-free attention (flattened batches) is
        not available for T5's position bias, hence the groups."""
        order = attention_mask.sum(-1).argsort()
        width = input_ids.shape[1]
        states = []
        for rows in order.tensor_split(self.config.text_length_buckets):
            if rows.numel() == 0:
                continue
            used_columns = attention_mask[rows].any(0).nonzero()
            kept = int(used_columns.max()) + 1 if len(used_columns) else 1
            hidden = self.text_model(
                input_ids=input_ids[rows, :kept], attention_mask=attention_mask[rows, :kept], return_dict=True
            ).last_hidden_state
            states.append(nn.functional.pad(hidden, (0, 0, 0, width - kept)))
        return BaseModelOutput(last_hidden_state=torch.cat(states)[order.argsort()])

    def get_ecg_features(
        self, input_values: torch.Tensor, lead_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """ECG embeddings for zero-shot / retrieval in `pooler_output` (batch, projection_dim)."""
        ecg_output = self.ecg_model(input_values, lead_mask=lead_mask, **kwargs)
        embeds = self._project(ecg_output.pooler_output, self.ecg_pooler, self.ecg_projection)
        return BaseModelOutputWithPooling(last_hidden_state=ecg_output.last_hidden_state, pooler_output=embeds)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Text embeddings in `pooler_output` (batch, projection_dim)."""
        text_output, attention_mask = self.encode_text(input_ids, attention_mask)
        pooled = pool_sequence(text_output.last_hidden_state, attention_mask, self.config.text_pooling)
        embeds = self._project(pooled, self.text_pooler, self.text_projection)
        return BaseModelOutputWithPooling(last_hidden_state=text_output.last_hidden_state, pooler_output=embeds)

    def forward(
        self,
        input_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lead_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        **kwargs,
    ) -> CMELTOutput:
        r"""
        Scores every ECG against every text. `return_loss` computes Siglep with the diagonal as positives
        (then the batch sizes must match).
        """
        if return_loss and input_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"return_loss pairs ECG i with text i, so batch sizes must match: {input_values.shape[0]} ECGs, "
                f"{input_ids.shape[0]} texts"
            )
        ecg_output = self.get_ecg_features(input_values, lead_mask=lead_mask)
        text_output = self.get_text_features(input_ids, attention_mask)
        ecg_embeds, text_embeds = ecg_output.pooler_output, text_output.pooler_output
        scale, bias = self.logit_scale_and_bias()
        logits_per_ecg = ecg_embeds @ text_embeds.t() * scale + bias
        loss = siglep_loss(ecg_embeds, text_embeds, scale, bias) if return_loss else None
        return CMELTOutput(
            loss=loss,
            logits_per_ecg=logits_per_ecg,
            logits_per_text=logits_per_ecg.t(),
            ecg_embeds=ecg_embeds,
            text_embeds=text_embeds,
            ecg_model_output=ecg_output,
            text_model_output=text_output,
        )


# ---------------------------------------------------------------------------------------- pretraining


class CMELTForPreTraining(CMELTModel):
    """C-MELT pretraining: one forward computes MLM, MEM, ETM and Siglep (any of them can be switched off).

    The ECG tower sees only the tokens kept by MAE-style masking. Fusion and MLM see the MLM-masked report actually
    paired with the ECG (a negative when `is_aligned` is 0); Siglep sees that report unmasked
    (`siglep_clean_text`), as zero-shot scoring does, or the ECG's own report (`siglep_own_report`).
    """

    _keys_to_ignore_on_load_unexpected = None

    def __init__(self, config: CMELTConfig):
        CMELTPreTrainedModel.__init__(self, config)
        self._build_dual_encoder(config)
        needs_fusion = config.use_mlm or config.use_mem or config.use_etm
        shared_projections = config.siglep_head == "fusion_projection"
        self.fusion = CMELTFusion(config, project_inputs=not shared_projections) if needs_fusion else None
        self.mlm_head = CMELTMLMHead(config) if config.use_mlm else None
        self.mem_decoder = CMELTMEMDecoder(config) if config.use_mem else None
        if config.use_etm:
            self.etm_text_pooler = CMELTPooler(config.fusion_hidden_size)
            self.etm_ecg_pooler = CMELTPooler(config.fusion_hidden_size)
            self.etm_head = nn.Linear(2 * config.fusion_hidden_size, 2 if config.etm_head == "two_class" else 1)
        self.post_init()

    def _fusion_inputs(self, text_states: torch.Tensor, ecg_states: torch.Tensor):
        """With the reference head, the Siglep projections are the fusion's input projections."""
        if self.config.siglep_head == "fusion_projection":
            return self.text_projection(text_states), self.ecg_projection(ecg_states)
        return text_states, ecg_states

    def _siglep_text_states(self, input_ids, attention_mask, labels, masked_states):
        """Text states for Siglep: of the report before MLM masking (restored from `labels`) when
        `siglep_clean_text`, else the masked report's own states."""
        if not self.config.siglep_clean_text or labels is None or not (labels != -100).any():
            return masked_states
        clean_ids = torch.where(labels != -100, labels, input_ids)
        return self.encode_text(clean_ids, attention_mask)[0].last_hidden_state

    def _siglep_texts(self, masked_states, input_ids, attention_mask, labels, is_aligned, own_ids, own_mask):
        """(text states, their attention mask, Siglep's diagonal targets). With `siglep_own_report`: the own reports
        (`own_ids`), every row a positive; a batch without negatives needs none, its fed texts are the own reports.
        Otherwise the text fed to fusion, unmasked when `siglep_clean_text`."""
        if self.config.siglep_own_report and own_ids is not None:
            output, own_mask = self.encode_text(own_ids, own_mask)
            return output.last_hidden_state, own_mask, torch.ones_like(is_aligned)
        if self.config.siglep_own_report and not bool(is_aligned.all()):
            raise ValueError(
                "siglep_own_report needs siglep_input_ids (the ECGs' own reports, tokenised) when the batch holds "
                "negatives (is_aligned 0); CMELTPretrainingCollator supplies them"
            )
        states = self._siglep_text_states(input_ids, attention_mask, labels, masked_states)
        return states, attention_mask, is_aligned

    def forward(
        self,
        input_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lead_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        is_aligned: torch.Tensor | None = None,
        ecg_report_ids: torch.Tensor | None = None,
        text_report_ids: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        siglep_input_ids: torch.Tensor | None = None,
        siglep_attention_mask: torch.Tensor | None = None,
        data_parallel_rank: int = 0,
        data_parallel_world_size: int = 1,
        **kwargs,
    ) -> CMELTForPreTrainingOutput:
        r"""
        input_values (batch, 12, samples), lead_mask (batch, 12): the ECGs (lead masking already applied).
        input_ids, attention_mask (batch, length): the reports fed to the model, MLM-masked.
        labels (batch, length): MLM targets, -100 where a token was not masked. Without labels no MLM loss is
            computed and `mlm_logits` covers every position.
        is_aligned (batch,): 1 if the report belongs to the ECG, 0 for a negative (ETM target, Siglep diagonal).
        ecg_report_ids / text_report_ids (batch,): report ids of the ECG's own report and of the text fed; used by
            duplicate-aware Siglep (identical reports are positives).
        noise (batch, num_tokens): fixes which ECG tokens MEM drops.
        siglep_input_ids, siglep_attention_mask (batch, length): each ECG's own report, unmasked, for Siglep when
            `config.siglep_own_report` (needed when the batch holds negatives).
        data_parallel_rank / data_parallel_world_size: this process's place in data-parallel training, so Siglep
            scores local ECGs against the global batch's texts (the Trainer passes its accelerator's).
        """
        config = self.config
        batch = input_values.shape[0]
        if input_ids.shape[0] != batch:
            raise ValueError(f"ECG batch ({batch}) and text batch ({input_ids.shape[0]}) must have the same size")
        if is_aligned is None:
            is_aligned = torch.ones(batch, device=input_values.device)
        elif tuple(is_aligned.shape) != (batch,):
            raise ValueError(f"is_aligned must have shape ({batch},); got {tuple(is_aligned.shape)}")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(labels.shape)}")
        if config.siglep_duplicate_aware and (ecg_report_ids is None or text_report_ids is None):
            raise ValueError("siglep_duplicate_aware needs ecg_report_ids and text_report_ids (batch,)")

        mask_ratio = config.mem_mask_ratio if config.use_mem else 0.0
        ecg_tokens = self.ecg_model.embed(input_values, lead_mask)
        ecg_output = self.ecg_model.encode(ecg_tokens, mask_ratio, noise)
        text_output, attention_mask = self.encode_text(input_ids, attention_mask)
        losses, outputs = {}, {}

        if config.use_siglep:
            ecg_pooled = ecg_output.pooler_output
            if config.siglep_clean_ecg and mask_ratio > 0:
                ecg_pooled = self.ecg_model.encode(ecg_tokens).pooler_output
            ecg_embeds = self._project(ecg_pooled, self.ecg_pooler, self.ecg_projection)
            text_states, text_mask, siglep_aligned = self._siglep_texts(
                text_output.last_hidden_state, input_ids, attention_mask, labels, is_aligned,
                siglep_input_ids, siglep_attention_mask,
            )
            text_pooled = pool_sequence(text_states, text_mask, config.text_pooling)
            text_embeds = self._project(text_pooled, self.text_pooler, self.text_projection)
            scale, bias = self.logit_scale_and_bias()
            text_ids = ecg_report_ids if config.siglep_own_report else text_report_ids
            ids = (ecg_report_ids, text_ids) if config.siglep_duplicate_aware else (None, None)
            losses["siglep"] = siglep_loss(
                ecg_embeds, text_embeds, scale, bias, siglep_aligned, *ids, data_parallel_rank, data_parallel_world_size
            )
            outputs["logits_per_ecg"] = ecg_embeds @ text_embeds.t() * scale + bias

        if self.fusion is not None:
            text_states, ecg_states = self._fusion_inputs(text_output.last_hidden_state, ecg_output.last_hidden_state)
            text_fused, ecg_stream = self.fusion(text_states, attention_mask, ecg_states)
            if config.use_mlm:
                losses_mlm, outputs["mlm_logits"] = self._mlm(text_fused, labels)
                if losses_mlm is not None:
                    losses["mlm"] = losses_mlm
            if config.use_mem:
                ecg_config = config.ecg_config
                predictions = self.mem_decoder(ecg_stream[config.mem_fusion_layer - 1], ecg_output.ids_restore)
                seen = input_values if lead_mask is None else input_values * lead_mask.to(input_values.dtype)[..., None]
                targets = patchify_ecg(seen, predictions.shape[1], ecg_config.samples_per_token, config.mem_norm_target)
                losses["mem"] = mem_loss(predictions, targets, ecg_output.token_mask)
                outputs["mem_predictions"] = predictions
            if config.use_etm:
                pooled = torch.cat(
                    [self.etm_text_pooler(text_fused[:, 0]), self.etm_ecg_pooler(ecg_stream[-1][:, 0])], dim=-1
                )
                etm_logits = self.etm_head(pooled)
                outputs["etm_logits"] = etm_logits if config.etm_head == "two_class" else etm_logits.squeeze(-1)
                outputs["etm_probs"] = etm_match_probability(outputs["etm_logits"])
                losses["etm"] = etm_loss(outputs["etm_logits"], is_aligned)

        weights = {
            "mlm": config.mlm_loss_weight,
            "mem": config.mem_loss_weight,
            "etm": config.etm_loss_weight,
            "siglep": config.siglep_loss_weight,
        }
        total = sum(weights[name] * value for name, value in losses.items()) if losses else None
        return CMELTForPreTrainingOutput(
            loss=total, **{f"loss_{name}": value for name, value in losses.items()}, **outputs
        )

    def _mlm(self, text_fused: torch.Tensor, labels: torch.Tensor | None):
        """(loss, logits): logits at the masked positions only when training, at every position without labels."""
        if labels is None:
            return None, self.mlm_head(text_fused)
        masked_positions = labels != -100
        logits = self.mlm_head(text_fused[masked_positions])
        if not masked_positions.any():  # short reports can leave a batch with nothing masked; keep DDP's graph whole
            return logits.sum() * 0.0, logits
        return mlm_loss(logits, labels[masked_positions]), logits


# ------------------------------------------------------------------------------------------ classification


class CMELTForECGClassification(CMELTPreTrainedModel):
    """ECG tower + linear head. `problem_type` "multi_label_classification" (BCE, default for several labels
    given as multi-hot floats) or "single_label_classification" (CE). `freeze_ecg_encoder()` = linear probing."""

    _keys_to_ignore_on_load_unexpected = [
        r"^text_model\.",
        r"^text_pooler\.",
        r"^text_projection\.",
        r"^ecg_pooler\.",
        r"^ecg_projection\.",
        r"^logit_",
        r"^fusion\.",
        r"^mlm_head\.",
        r"^mem_decoder\.",
        r"^etm_",
    ]

    def __init__(self, config: CMELTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ecg_model = CMELTECGModel._from_config(config.ecg_config)
        self.classifier = nn.Linear(config.ecg_config.hidden_size, config.num_labels)
        self.encoder_frozen = False
        self.post_init()

    def freeze_ecg_encoder(self, frozen: bool = True) -> None:
        """Linear probing: no gradient to the encoder, which then also runs without dropout."""
        self.encoder_frozen = frozen
        self.ecg_model.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        """A frozen encoder stays in eval mode (no dropout) while the head trains."""
        super().train(mode)
        if self.encoder_frozen:
            self.ecg_model.eval()
        return self

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if self.encoder_frozen:
            with torch.no_grad():
                pooled = self.ecg_model(input_values, lead_mask=lead_mask).pooler_output
        else:
            pooled = self.ecg_model(input_values, lead_mask=lead_mask).pooler_output
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                multi_label = self.num_labels > 1 and labels.dim() == 2 and labels.is_floating_point()
                self.config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
            if self.config.problem_type == "multi_label_classification":
                if tuple(labels.shape) != tuple(logits.shape):
                    raise ValueError(f"multi-label `labels` must be multi-hot of shape {tuple(logits.shape)}")
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
            elif self.config.problem_type == "single_label_classification":
                loss = nn.functional.cross_entropy(logits.float(), labels.reshape(-1).long())
            else:
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits)


CMELTModel.register_for_auto_class("AutoModel")
CMELTForPreTraining.register_for_auto_class("AutoModelForPreTraining")
CMELTForECGClassification.register_for_auto_class("AutoModelForAudioClassification")


def hub_auto_map() -> dict[str, str]:
    """Every Auto class a saved C-MELT folder answers to (one checkpoint serves them all), from the
    `register_for_auto_class` calls: transformers itself writes only the saved class's entry."""
    classes = (CMELTConfig, CMELTModel, CMELTForPreTraining, CMELTForECGClassification)
    return {cls._auto_class: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for cls in classes}

__all__ = [
    "CMELTPreTrainedModel",
    "CMELTECGModel",
    "CMELTModel",
    "CMELTForPreTraining",
    "CMELTForECGClassification",
]
