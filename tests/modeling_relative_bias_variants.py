"""The PyTorch twins of ``tests/relative_bias_variants.py``: the right one
(``RelativeBiasEncoder*``), and two wrong ones that load every tensor by name and agree with it at
zero tables: ``FlippedBucketEncoder*`` reads the table with the direction flipped,
``DroppedBiasEncoder*`` adds no bias. Never imported by the tests themselves (it needs its
package: the export's folder)."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_minilm import MinilmConfig
from .modeling_minilm import (MinilmAttention, MinilmForMaskedLM, MinilmForSequenceClassification,
                              MinilmLayer, MinilmModel)

class RelativeBiasAttention(MinilmAttention):
    direction = 1  # bucket of clip(direction x (j - i))

    def __init__(self, config: MinilmConfig):
        super().__init__(config)
        self.max_distance = int(config.variant_fields.get("max_distance", 4))
        self.relative_bias = nn.Parameter(torch.zeros(2 * self.max_distance + 1, self.heads))

    def score_bias(self, q_len: int, k_len: int) -> torch.Tensor | None:
        device, d = self.relative_bias.device, self.max_distance
        rel = torch.arange(k_len, device=device)[None, :] - torch.arange(q_len, device=device)[:, None]
        buckets = (self.direction * rel).clamp(-d, d) + d
        return self.relative_bias[buckets].permute(2, 0, 1).float()


class FlippedBucketAttention(RelativeBiasAttention):
    direction = -1


class DroppedBiasAttention(RelativeBiasAttention):
    def score_bias(self, q_len: int, k_len: int) -> torch.Tensor | None:
        return None


class RelativeBiasLayer(MinilmLayer):
    attention_class = RelativeBiasAttention


class RelativeBiasEncoderModel(MinilmModel):
    layer_class = RelativeBiasLayer


class RelativeBiasEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = RelativeBiasEncoderModel


class RelativeBiasEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = RelativeBiasEncoderModel


class FlippedBucketLayer(MinilmLayer):
    attention_class = FlippedBucketAttention


class FlippedBucketEncoderModel(MinilmModel):
    layer_class = FlippedBucketLayer


class FlippedBucketEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = FlippedBucketEncoderModel


class FlippedBucketEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = FlippedBucketEncoderModel


class DroppedBiasLayer(MinilmLayer):
    attention_class = DroppedBiasAttention


class DroppedBiasEncoderModel(MinilmModel):
    layer_class = DroppedBiasLayer


class DroppedBiasEncoderForMaskedLM(MinilmForMaskedLM):
    encoder_class = DroppedBiasEncoderModel


class DroppedBiasEncoderForSequenceClassification(MinilmForSequenceClassification):
    encoder_class = DroppedBiasEncoderModel
