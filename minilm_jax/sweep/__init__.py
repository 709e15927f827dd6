"""Declarative sweeps: expansion into runs, a resumable runner with failure isolation, results."""

from minilm_jax.settings.command_line import apply_override

from .spec import Membership, Run, expand

__all__ = ["Membership", "Run", "apply_override", "expand"]
