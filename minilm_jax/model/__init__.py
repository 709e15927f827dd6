"""Flax NNX models of minilm-jax."""

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.models import MaskedLM, SequenceClassifier, build_classifier, build_mlm
from minilm_jax.model.registry import ENCODERS, build_encoder, register_encoder

__all__ = ["ConfigError", "ModelConfig", "MaskedLM", "SequenceClassifier", "build_classifier",
           "build_mlm", "ENCODERS", "build_encoder", "register_encoder"]
