"""The PyTorch twins of four variants of ``tests/encoder_variants.py`` (their ``torch_twin``): a
Hugging Face export of either ships this file beside minilm-jax's ``modeling_minilm.py``, which it
imports relatively. Each twin subclasses minilm-jax's twin and overrides the hook its Flax variant
overrides, its submodules named as the Flax ones (``minilm.layers.0.ffn.gate.weight`` is
``encoder.layers.0.ffn.gate.kernel``, transposed); the variant's fields are
``config.variant_fields``. Never imported by the tests themselves (it needs its package)."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_minilm import MinilmConfig
from .modeling_minilm import (MinilmAttention, MinilmForMaskedLM, MinilmForSequenceClassification,
                              MinilmLayer, MinilmModel)


# ------------------------------------------------------------------ SwiGLU through the layer hook
def swiglu_width(config: MinilmConfig) -> int:
    """``ffn_scale`` x I, as encoder_variants.swiglu_width."""
    scale = float(config.variant_fields.get("ffn_scale", 1.0))
    return max(1, round(config.intermediate_size * scale))


class SwiGLU(nn.Module):
    """H -> (silu(gate) * up) -> H."""

    def __init__(self, config: MinilmConfig):
        super().__init__()
        h, width = config.hidden_size, swiglu_width(config)
        self.gate = nn.Linear(h, width)
        self.up = nn.Linear(h, width)
        self.down = nn.Linear(width, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class SwiGLULayer(MinilmLayer):
    feed_forward_class = SwiGLU


class SwiGLUEncoderModel(MinilmModel):
    layer_class = SwiGLULayer


class SwiGLUEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = SwiGLUEncoderModel


class SwiGLUEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = SwiGLUEncoderModel


# ------------------------------------------------------- rotary positions through the attention hook
def rotate(x_batd: torch.Tensor, base: float) -> torch.Tensor:
    """encoder_variants.rotate in the twin's head-major layout ``[B, A, T, D]`` (positions on
    axis 2, not 1): the two halves of D as real and imaginary parts, position p turning pair i by
    p x base^(-2i/D)."""
    t, d = x_batd.shape[2], x_batd.shape[-1]
    inverse = base ** (-torch.arange(0, d // 2, dtype=torch.float32, device=x_batd.device)
                       * 2.0 / d)
    angles_tf = torch.arange(t, dtype=torch.float32, device=x_batd.device)[:, None] * inverse[None]
    cos, sin = (f(angles_tf).to(x_batd.dtype) for f in (torch.cos, torch.sin))  # [T, D/2]
    first, second = x_batd[..., : d // 2], x_batd[..., d // 2:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class RotaryAttention(MinilmAttention):
    def __init__(self, config: MinilmConfig):
        super().__init__(config)
        self.base = float(config.variant_fields.get("rope_base", 10000.0))

    def position_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotate(q, self.base), rotate(k, self.base)


class RotaryLayer(MinilmLayer):
    attention_class = RotaryAttention


class RotaryEncoderModel(MinilmModel):
    layer_class = RotaryLayer
    position_table = False


class RotaryEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = RotaryEncoderModel


class RotaryEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = RotaryEncoderModel


# ---------------------------------------------- ALiBi through the attention's score_bias hook
class AlibiAttention(MinilmAttention):
    def score_bias(self, q_len: int, k_len: int) -> torch.Tensor:
        """encoder_variants.AlibiAttention's [A, Tq, Tk]: -slope_h x |i - j|,
        slope_h = 2^(-8 (h + 1) / A)."""
        device = self.query.weight.device
        slopes = 2.0 ** (-8.0 / self.heads * torch.arange(1, self.heads + 1, device=device))
        positions_q, positions_k = (torch.arange(n, device=device) for n in (q_len, k_len))
        distance = (positions_q[:, None] - positions_k[None, :]).abs().float()
        return -slopes[:, None, None] * distance


class AlibiLayer(MinilmLayer):
    attention_class = AlibiAttention


class AlibiEncoderModel(MinilmModel):
    layer_class = AlibiLayer
    position_table = False


class AlibiEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = AlibiEncoderModel


class AlibiEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = AlibiEncoderModel


# ------------------------------------------- cross-layer sharing through the make_layers hook
class SharedLayerEncoderModel(MinilmModel):
    def make_layers(self, config: MinilmConfig) -> list[nn.Module]:
        return [self.layer_class(config)] * config.num_hidden_layers


class SharedLayerEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = SharedLayerEncoderModel


class SharedLayerEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = SharedLayerEncoderModel
