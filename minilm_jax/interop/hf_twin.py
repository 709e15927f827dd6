"""A custom encoder's own PyTorch module, for Hugging Face export.

A built-in encoder (:data:`REMOTE_ARCHS`) exports with our PyTorch twin
(:mod:`minilm_jax.interop.hf_remote`). A custom encoder (``model.arch=module:Class``, a user's
subclass of :class:`~minilm_jax.model.encoder.TransformerEncoder`) names its own::

    class SwiGLUEncoder(TransformerEncoder):
        torch_twin = "modeling_my_variants.py"   # relative to this module's file, or absolute

That file imports our twin relatively (``from .modeling_minilm import MinilmModel, ...``) and
defines ``SwiGLUEncoderForMaskedLM`` and ``SwiGLUEncoderForSequenceClassification`` (and, for
``AutoModel``, ``SwiGLUEncoderModel``); the export copies it beside ``modeling_minilm.py`` and
names its classes in ``auto_map``. The file is checked here as text (its syntax tree), never
imported: this needs no torch. Where torch is installed the export then checks the twin by its
numbers (:mod:`minilm_jax.interop.twin_check`).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from minilm_jax.interop.hf_files import InteropError
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.encoder import ConvFrontEncoder
from minilm_jax.model.registry import encoder_factory, is_library_encoder

REMOTE_ARCHS = ("roberta", "bert", "bert_conv")  # the built-in encoders our remote code mirrors
TWIN_ATTRIBUTE = "torch_twin"
SHIPPED_MODULES = ("configuration_minilm", "modeling_minilm")  # what a twin may import relatively
# auto_map key -> the suffix of the twin's class it names (after the Flax class's name)
TWIN_CLASSES = {"AutoModelForMaskedLM": "ForMaskedLM",
                "AutoModelForSequenceClassification": "ForSequenceClassification"}
BASE_MODEL_SUFFIX = "Model"  # optional: AutoModel is named only when the file defines it


@dataclasses.dataclass(frozen=True)
class TorchTwin:
    """A custom encoder's PyTorch file, checked."""

    path: Path  # the file, copied into the export under its own name
    name: str  # the Flax class's name: the twin's classes are <name>ForMaskedLM, ...
    has_base_model: bool  # the file defines <name>Model (then AutoModel loads it)
    conv_front_end: bool  # the Flax class has study B's conv front end (config's conv fields kept)

    @property
    def module(self) -> str:
        """The file's module name in ``auto_map``."""
        return self.path.stem

    def architecture(self, kind: str) -> str:
        """The twin's class for ``kind`` (``MaskedLM`` or ``SequenceClassification``)."""
        return f"{self.name}For{kind}"

    def auto_map(self) -> dict[str, str]:
        """``auto_map`` entries of the model classes (``AutoConfig`` stays ours)."""
        out = {key: f"{self.module}.{self.name}{suffix}" for key, suffix in TWIN_CLASSES.items()}
        if self.has_base_model:
            out["AutoModel"] = f"{self.module}.{self.name}{BASE_MODEL_SUFFIX}"
        return out


def torch_twin(cfg: ModelConfig) -> TorchTwin | None:
    """The PyTorch twin of ``cfg``'s encoder: None for a built-in one (ours); the file a custom
    encoder declares as ``torch_twin``, checked. Raises :class:`InteropError` (one line) when
    there is none usable."""
    arch = cfg.arch
    if is_library_encoder(arch):
        if arch in REMOTE_ARCHS:
            return None
        raise InteropError(f"model.arch={arch!r} has no PyTorch twin; the library's encoders "
                           f"export by their names {REMOTE_ARCHS}")
    try:
        factory = encoder_factory(arch)
    except ConfigError as err:
        detail = str(err).removeprefix(f"model.arch={arch!r}: ")
        raise InteropError(f"model.arch={arch!r} is a custom encoder that does not load here, so "
                           f"its PyTorch twin cannot be found: {detail}") from None
    name = getattr(factory, "__name__", "Encoder")
    declared = getattr(factory, TWIN_ATTRIBUTE, None)
    if not declared:
        raise InteropError(
            f"model.arch={arch!r} is a custom encoder with no PyTorch twin: declare "
            f'{TWIN_ATTRIBUTE} = "modeling_x.py" on {name} (a PyTorch file beside its module, '
            f"importing from .modeling_minilm, defining {name}ForMaskedLM and "
            f"{name}ForSequenceClassification); see docs/interop.md")
    path = _twin_path(factory, declared, arch)
    defined = _check_source(path, arch)
    missing = [f"{name}{suffix}" for suffix in TWIN_CLASSES.values()
               if f"{name}{suffix}" not in defined]
    if missing:
        raise InteropError(f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r} defines no "
                           f"{' and no '.join(missing)}")
    return TorchTwin(path=path, name=name, has_base_model=f"{name}{BASE_MODEL_SUFFIX}" in defined,
                     conv_front_end=isinstance(factory, type)
                     and issubclass(factory, ConvFrontEncoder))


def _twin_path(factory: Any, declared: Any, arch: str) -> Path:
    """The declared file: absolute, or relative to the file of the module whose class declares
    it (a subclass elsewhere inherits its parent's file)."""
    if not isinstance(declared, (str, os.PathLike)):
        raise InteropError(f"{TWIN_ATTRIBUTE} of model.arch={arch!r} must be a file path, not "
                           f"{declared!r}")
    path = Path(declared)
    if not path.is_absolute():
        owners = factory.__mro__ if isinstance(factory, type) else (factory,)
        owner = next((k for k in owners if TWIN_ATTRIBUTE in vars(k)), factory)
        module_file = getattr(sys.modules.get(getattr(owner, "__module__", "")), "__file__", None)
        if not module_file:
            raise InteropError(f"{TWIN_ATTRIBUTE} {declared!r} of model.arch={arch!r}: its "
                               "module has no file to be relative to; give an absolute path")
        path = Path(module_file).resolve().parent / path
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise InteropError(f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r} must be a .py file "
                           "named as a Python module (modeling_x.py)")
    if path.stem in SHIPPED_MODULES:
        raise InteropError(f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r} has the name of our "
                           f"own {path.name}, which the export ships beside it; rename it")
    if not path.is_file():
        raise InteropError(f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r} does not exist")
    return path


def _check_source(path: Path, arch: str) -> set[str]:
    """The names ``path`` defines at top level; refuses a syntax error and a relative import of
    anything the export does not ship."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        raise InteropError(f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r}: line {err.lineno}: "
                           f"{err.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            stray = [n for n in names if node.level > 1 or n.split(".")[0] not in SHIPPED_MODULES]
            if stray:
                raise InteropError(
                    f"{TWIN_ATTRIBUTE} {path} of model.arch={arch!r}: line {node.lineno} imports "
                    f"{'.' * node.level}{stray[0]}, which the export does not ship; import only "
                    f"{' and '.join('.' + m for m in SHIPPED_MODULES)} relatively")
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            defined |= {alias.asname or alias.name for alias in node.names}
    return defined
