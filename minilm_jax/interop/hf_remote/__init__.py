"""The PyTorch twin of our encoder, shipped inside every export that RoBERTa cannot hold.

``configuration_minilm.py`` and ``modeling_minilm.py`` are copied as they are into the exported
directory, whose ``config.json`` names them in ``auto_map``; ``transformers`` then loads the model
with ``AutoModelForMaskedLM.from_pretrained(dir, trust_remote_code=True)`` (or
``AutoModelForSequenceClassification``). Both files import only ``torch`` and ``transformers``,
never this package, so nothing here is imported by ``minilm_jax`` itself. A custom encoder's own
PyTorch file (its ``torch_twin``, :mod:`minilm_jax.interop.hf_twin`) is copied beside them.
"""

from __future__ import annotations

from pathlib import Path

REMOTE_FILES = ("configuration_minilm.py", "modeling_minilm.py")


def remote_files(twin_file: Path | None = None) -> list[Path]:
    """The model source files an export copies next to its weights (``twin_file``: a custom
    encoder's own, which imports ours)."""
    here = Path(__file__).resolve().parent
    return [here / name for name in REMOTE_FILES] + ([twin_file] if twin_file else [])
