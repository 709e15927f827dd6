"""Encoder registry: ``ModelConfig.arch`` -> encoder class. A new encoder variant needs no line
here: ``arch`` may be an import path, ``package.module:ClassName``
(``--config.model.arch=my_lab.encoders:GatedEncoder``), imported when the model is built, or a
short name the user's installed package declares as an entry point of the group
:data:`ENTRY_POINT_GROUP` (``[project.entry-points."minilm_jax.encoders"]`` ``gated =
"my_lab.encoders:GatedEncoder"`` in its pyproject.toml; ``--config.model.arch=gated``)."""

from __future__ import annotations

import functools
import importlib
import os
import site
import sysconfig
import traceback
from typing import Callable

from flax import nnx

from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.encoder import ConvFrontEncoder, TransformerEncoder

EncoderFactory = Callable[..., nnx.Module]  # (cfg: ModelConfig, *, rngs: nnx.Rngs) -> encoder
ENTRY_POINT_GROUP = "minilm_jax.encoders"

ENCODERS: dict[str, EncoderFactory] = {
    "roberta": TransformerEncoder,
    "bert": TransformerEncoder,
    "bert_conv": ConvFrontEncoder,
}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Register an encoder class under ``name`` (usable as ``--config.model.arch=<name>``)."""
    ENCODERS[name] = factory


def installed_encoders() -> dict[str, str]:
    """Short names installed packages declare (entry points of :data:`ENTRY_POINT_GROUP`) ->
    their ``module:Class`` paths."""
    from importlib import metadata

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def encoder_factory(arch: str) -> EncoderFactory:
    """The factory ``arch`` names: a registered name, an installed package's short name, or
    ``module.path:Name`` (imported)."""
    if arch in ENCODERS:
        return ENCODERS[arch]
    if ":" not in arch:
        installed = installed_encoders()
        if arch in installed:
            return encoder_factory(installed[arch])
        raise ConfigError(f"model.arch: unknown encoder {arch!r}; registered: "
                          f"{sorted(ENCODERS) + sorted(installed)}, or an import path such as "
                          "my_lab.encoders:MyEncoder")
    module_name, _, attribute = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError(f"model.arch={arch!r}: cannot import {module_name!r} ({err})"
                              ) from None
        raise ConfigError(import_failure(arch, module_name, err)) from None
    except Exception as err:  # the user's module raised while it ran: a syntax error, a NameError
        raise ConfigError(import_failure(arch, module_name, err)) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"model.arch={arch!r}: {module_name} has no encoder {attribute!r}")
    return factory


@functools.cache
def installed_roots(include_library: bool = True) -> tuple[str, ...]:
    """Folders whose modules are not a user's: the standard library, site-packages (a virtual
    environment's and the user's), and (``include_library``) this library's own package."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtual environment's site module may lack these
        pass
    if include_library:
        roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # minilm_jax/
    return tuple(sorted(os.path.realpath(r) + os.sep for r in roots if r))


def import_failure(arch: str, module_name: str, err: Exception) -> str:
    """The one line for a user's encoder module that raised ``err`` while it was imported: the
    module, the exception's type and message, and the file:line that raised it."""
    message = err.msg if isinstance(err, SyntaxError) and err.msg else str(err)
    where = raised_at(err)
    return (f"model.arch={arch}: importing {module_name} failed: {type(err).__name__}: "
            f"{message}" + (f" ({where})" if where else ""))


def raised_at(err: BaseException) -> str:
    """``file:line`` where ``err`` was raised in the user's code: a syntax error's own line, else
    the innermost frame outside the import machinery, the standard library and installed packages
    (the user's line that called into them), else the innermost frame. Files under the current
    folder are named relative to it."""
    if isinstance(err, SyntaxError) and err.filename:
        path, line = err.filename, err.lineno
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__)
                  if not f.filename.startswith("<")]
        if not frames:
            return ""
        installed = installed_roots(include_library=False)
        own = [f for f in frames if not os.path.realpath(f.filename).startswith(installed)]
        frame = (own or frames)[-1]
        path, line = frame.filename, frame.lineno
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    shown = path if relative.startswith("..") else relative
    return f"{shown}:{line}" if line else shown


def is_library_encoder(arch: str) -> bool:
    """Whether ``arch`` names one of this library's encoders (counted by the paper's formula,
    recorded in rows without an ``arch``), not a user's variant (registered, installed or named by
    import path). Nothing is imported: results rows are written where the variant may not be."""
    if arch in ENCODERS:
        return getattr(ENCODERS[arch], "__module__", "").startswith("minilm_jax.")
    return ":" in arch and arch.partition(":")[0].startswith("minilm_jax.")


def build_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The encoder named by ``cfg.arch``. A variant's fields are checked first
    (:func:`check_variant_fields`); a ``UserError`` or ``ValueError`` its own code raises while it
    is built (``share_every=3`` at 4 layers) is one :class:`ConfigError` line naming the variant,
    its fields and the line that raised, not a traceback."""
    factory = encoder_factory(cfg.arch)
    if is_library_encoder(cfg.arch):
        return factory(cfg, rngs=rngs)
    check_variant_fields(cfg)
    try:
        return factory(cfg, rngs=rngs)
    except (UserError, ValueError) as err:
        if isinstance(err, ConfigError) or not _raised_by_user(err):
            raise  # the library's own line, or a bug inside a package: its traceback
        raise ConfigError(variant_refusal(cfg, err, raised_at(err))) from None


def check_variant_fields(cfg: ModelConfig) -> None:
    """Call the variant's ``check_fields(cfg)`` classmethod, if it declares one, before anything
    is built or counted: a ``UserError`` or ``ValueError`` it raises (a field value it cannot
    build, such as a layer-sharing period that does not divide ``num_layers``) is one
    :class:`ConfigError` line naming the variant and its fields."""
    if is_library_encoder(cfg.arch):
        return
    check = getattr(encoder_factory(cfg.arch), "check_fields", None)
    if check is None:
        return
    try:
        check(cfg)
    except (UserError, ValueError) as err:
        raise ConfigError(variant_refusal(cfg, err)) from None


def variant_refusal(cfg: ModelConfig, err: BaseException, where: str = "") -> str:
    """The one line of a variant that refused its fields: ``model.arch=A (model.extra.F=V, ...):
    its message`` (and the ``file:line`` that raised, for a refusal from its constructor)."""
    fields = ", ".join(f"model.extra.{name}={value!r}" for name, value in cfg.extra)
    message = err.msg if isinstance(err, SyntaxError) else str(err)
    return (f"model.arch={cfg.arch}{f' ({fields})' if fields else ''}: {message}"
            + (f" ({where})" if where else ""))


def _raised_by_user(err: BaseException) -> bool:
    """Whether ``err`` was raised by the user's own code (its innermost frame outside this
    library, the standard library and installed packages)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    return bool(frames) and not os.path.realpath(frames[-1].filename).startswith(installed_roots())
