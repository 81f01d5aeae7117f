"""Building blocks of C-MELT and its pretraining-only modules: attention, feed-forward, the cross-modal fusion, the
MLM head and the MAE-style MEM decoder (`modeling_cmelt.py` assembles them into the models)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_cmelt import CMELTConfig


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class CMELTAttention(nn.Module):
    """Multi-head attention; cross-attention when `key_value_states` is given."""

    def __init__(self, config, hidden_size: int, num_heads: int, dropout: float, key_value_size: int | None = None):
        super().__init__()
        self.config = config
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.is_causal = False
        key_value_size = key_value_size or hidden_size
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(key_value_size, hidden_size)
        self.v_proj = nn.Linear(key_value_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        key_value_states = hidden_states if key_value_states is None else key_value_states
        batch, query_len, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch, query_len, -1, self.head_dim).transpose(1, 2)
        key = self.k_proj(key_value_states).view(batch, key_value_states.shape[1], -1, self.head_dim).transpose(1, 2)
        value = self.v_proj(key_value_states).view(batch, key_value_states.shape[1], -1, self.head_dim).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, _ = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=False,
        )
        return self.out_proj(output.reshape(batch, query_len, -1))


class CMELTFeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACT2FN[activation]
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(hidden_states))))


# ------------------------------------------------------------------------------ fusion and pretraining heads


class CMELTFusionLayer(GradientCheckpointingLayer):
    """One stream of the fusion: self-attention, cross-attention to the other modality, feed-forward (post-LN)."""

    def __init__(self, config: CMELTConfig):
        super().__init__()
        width, heads, dropout = config.fusion_hidden_size, config.fusion_num_attention_heads, config.fusion_dropout
        eps = config.fusion_layer_norm_eps
        self.self_attention = CMELTAttention(config, width, heads, dropout)
        self.self_attention_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attention = CMELTAttention(config, width, heads, dropout)
        self.cross_attention_norm = nn.LayerNorm(width, eps=eps)
        self.feed_forward = CMELTFeedForward(width, config.fusion_intermediate_size, config.fusion_hidden_act, 0.0)
        self.feed_forward_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        other_states: torch.Tensor,
        self_attention_mask: torch.Tensor | None = None,
        cross_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.self_attention(hidden_states, self_attention_mask)
        hidden_states = self.self_attention_norm(hidden_states + self.dropout(attended))
        attended = self.cross_attention(hidden_states, cross_attention_mask, key_value_states=other_states)
        hidden_states = self.cross_attention_norm(hidden_states + self.dropout(attended))
        return self.feed_forward_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))


class CMELTFusion(nn.Module):
    """Projects both towers to the fusion width, adds modality-type embeddings (text 0, ECG 1), and runs
    `fusion_num_layers` layers per modality, each stream attending to the other's previous-layer states."""

    def __init__(self, config: CMELTConfig, project_inputs: bool = True):
        super().__init__()
        self.config = config
        # without its own input projections, the fusion takes states already at its width (the Siglep head's
        # projections when `siglep_head="fusion_projection"`, as in the reference code)
        if project_inputs:
            self.text_input_projection = nn.Linear(config.text_hidden_size, config.fusion_hidden_size)
            self.ecg_input_projection = nn.Linear(config.ecg_config.hidden_size, config.fusion_hidden_size)
        else:
            self.text_input_projection = self.ecg_input_projection = nn.Identity()
        self.modality_type_embeddings = nn.Embedding(2, config.fusion_hidden_size)
        self.text_layers = nn.ModuleList(CMELTFusionLayer(config) for _ in range(config.fusion_num_layers))
        self.ecg_layers = nn.ModuleList(CMELTFusionLayer(config) for _ in range(config.fusion_num_layers))

    def forward(self, text_states, text_attention_mask, ecg_states) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the final text stream and the ECG stream after every layer."""
        text_states = self.text_input_projection(text_states) + self.modality_type_embeddings.weight[0]
        ecg_states = self.ecg_input_projection(ecg_states) + self.modality_type_embeddings.weight[1]
        text_self_mask = create_bidirectional_mask(self.config, text_states, text_attention_mask)
        ecg_to_text_mask = create_bidirectional_mask(
            self.config, ecg_states, text_attention_mask, encoder_hidden_states=text_states
        )
        ecg_stream = []
        for text_layer, ecg_layer in zip(self.text_layers, self.ecg_layers):
            text_states, ecg_states = (
                text_layer(text_states, ecg_states, text_self_mask, None),
                ecg_layer(ecg_states, text_states, None, ecg_to_text_mask),
            )
            ecg_stream.append(ecg_states)
        return text_states, ecg_stream


class CMELTMLMHead(nn.Module):
    """BERT prediction head: dense -> activation -> LayerNorm -> vocabulary logits."""

    def __init__(self, config: CMELTConfig):
        super().__init__()
        self.dense = nn.Linear(config.fusion_hidden_size, config.fusion_hidden_size)
        self.activation = ACT2FN[config.fusion_hidden_act]
        self.layer_norm = nn.LayerNorm(config.fusion_hidden_size, eps=config.fusion_layer_norm_eps)
        self.decoder = nn.Linear(config.fusion_hidden_size, config.text_config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


class CMELTMEMDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN transformer block of the MAE-style decoder."""

    def __init__(self, config: CMELTConfig):
        super().__init__()
        width, eps = config.mem_decoder_hidden_size, config.mem_decoder_layer_norm_eps
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.attention = CMELTAttention(config, width, config.mem_decoder_num_attention_heads, 0.0)
        self.feed_forward_norm = nn.LayerNorm(width, eps=eps)
        self.feed_forward = CMELTFeedForward(
            width, config.mem_decoder_intermediate_size, config.mem_decoder_hidden_act, 0.0
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attention(self.attention_norm(hidden_states))
        return hidden_states + self.feed_forward(self.feed_forward_norm(hidden_states))


def sinusoidal_positions(length: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed sine/cosine position table (length, width) of "Attention is all you need"."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies[: width // 2])
    return table.to(dtype)


class CMELTMEMDecoder(nn.Module):
    """MAE decoder: re-inserts a learned mask token at every dropped position, adds sinusoidal positions, and
    predicts each token's patch (leads x samples_per_token)."""

    def __init__(self, config: CMELTConfig):
        super().__init__()
        width = config.mem_decoder_hidden_size
        self.embed = nn.Linear(config.fusion_hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.layers = nn.ModuleList(CMELTMEMDecoderLayer(config) for _ in range(config.mem_decoder_num_layers))
        self.norm = nn.LayerNorm(width, eps=config.mem_decoder_layer_norm_eps)
        ecg_config = config.ecg_config
        self.predictor = nn.Linear(width, ecg_config.num_leads * ecg_config.samples_per_token)

    def forward(self, ecg_states: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """ecg_states (batch, 1 + kept, fusion width) with CLS first -> (batch, num_tokens, patch)."""
        hidden_states = self.embed(ecg_states)
        batch, num_tokens = ids_restore.shape
        mask_tokens = self.mask_token.to(hidden_states.dtype).expand(batch, num_tokens + 1 - hidden_states.shape[1], -1)
        tokens = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        hidden_states = torch.cat([hidden_states[:, :1], tokens], dim=1)
        hidden_states = hidden_states + sinusoidal_positions(
            num_tokens + 1, hidden_states.shape[-1], hidden_states.device, hidden_states.dtype
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.predictor(self.norm(hidden_states))[:, 1:]
