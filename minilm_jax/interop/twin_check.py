"""An export checked by its numbers: the exported folder loaded as its users load it (transformers'
Auto classes, ``trust_remote_code`` where the folder ships code), and its logits compared with ours
on a probe batch, at the exported parameters and at parameters drawn so that every tensor matters.

Why two parameter sets: a model at the unigram plateau (a short or failed run, a fresh
initialisation) barely uses its attention, so a twin that drops a bias table or reads it the wrong
way round gives the same logits to within rounding there. Each tensor replaced by a deterministic
random draw (a layer's kernel ``N(0, 1/fan_in)``, so that each layer keeps its input's scale; a
table, bias, norm scale or other parameter ``N(0, 1)``; BatchNorm variances in [0.5, 2]) makes
every input of every layer move the logits by a sizeable fraction of their scale: token, position
and type embeddings of one size, attention priors as large as the scores, so any term a twin
computes differently shows far above rounding.

The tolerance is rounding of float32 sums, nothing measured: each output of a forward pass is the
end of a chain of dot products whose lengths add up to ``terms`` (per layer H, I and T; then E and
H for the embeddings and the head); each addition rounds by up to eps/2 of the running sum, these
errors add like a random walk (sqrt(terms)), two implementations add theirs and a factor 8 covers
the tails: ``2 x 8 x eps/2 x sqrt(terms) x scale``, ``scale`` the largest absolute logit compared
(the rule of the project's own float32 comparisons). Our side runs in float32 for the check
whatever the run computed in (the export is float32)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from minilm_jax.interop.hf_files import InteropError
from minilm_jax.interop.hf_roberta import BOS_ID, EOS_ID
from minilm_jax.model.config import ModelConfig

PROBE_ROWS = 3  # a full row, a sentence pair (token types 0 then 1) with padding, a short row
PROBE_SEED = 0
TRAINED, PERTURBED = "exported", "perturbed"


@dataclasses.dataclass(frozen=True)
class TwinCheck:
    """What the check found: ``verified`` False with ``reason`` when it could not run."""

    verified: bool
    implementation: str  # e.g. "modeling_minilm.py (MinilmForMaskedLM)"
    reason: str = ""
    max_diff: tuple[tuple[str, float], ...] = ()  # (parameters, largest |ours - theirs|)
    tolerance: tuple[tuple[str, float], ...] = ()
    versions: str = ""

    def line(self) -> str:
        """One line for the command's output and the model card."""
        if not self.verified:
            return f"PyTorch twin not verified: {self.reason}"
        diffs = ", ".join(f"{name} parameters {diff:.2g} (tolerance {tol:.2g})"
                          for (name, diff), (_, tol) in zip(self.max_diff, self.tolerance))
        return (f"PyTorch twin verified: {self.implementation} loaded with {self.versions} gives "
                f"our logits on a probe batch; largest difference at the {diffs}")


def not_verified(implementation: str) -> TwinCheck | None:
    """A :class:`TwinCheck` saying why none can run here (torch or transformers missing), or
    None when it can."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        return TwinCheck(False, implementation, reason=(
            f"{err.name or 'torch'} is not installed where it was exported, so its logits were "
            "not compared with minilm-jax's (pip install 'minilm-jax[interop]', export again)"))
    return None


def probe_batch(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tokens, token_types, real)`` ``[3, T]`` at the model's longest input T: a full row
    (every position of the table), a pair ``<s> A </s></s> B </s>`` (types 0 then 1 when the
    model has two) right-padded, and a short padded row; ids drawn from ``[5, V)``."""
    t = cfg.max_len
    rng = np.random.default_rng(PROBE_SEED)
    tokens = np.full((PROBE_ROWS, t), cfg.pad_id, np.int32)
    types = np.zeros((PROBE_ROWS, t), np.int32)
    lengths = (t, max(3, (2 * t) // 3), min(t, 3))
    low = min(5, cfg.vocab_size - 1)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(low, cfg.vocab_size, n)
        tokens[row, 0], tokens[row, n - 1] = BOS_ID, EOS_ID
    n = lengths[1]
    if n >= 6 and cfg.type_vocab_size > 1:
        half = n // 2
        tokens[1, half - 1:half + 1] = EOS_ID
        types[1, half:n] = 1
    return tokens, types, tokens != cfg.pad_id


def tolerance(cfg: ModelConfig, scale: float) -> float:
    """The float32 tolerance of two forward passes of ``cfg`` at logits of size ``scale`` (see
    the module docstring)."""
    terms = cfg.num_layers * (cfg.hidden_dim + cfg.ffn_dim + cfg.max_len) + cfg.emb_dim \
        + cfg.hidden_dim + cfg.conv_layers * 9 * max(cfg.conv_channels, 1)
    eps = float(np.finfo(np.float32).eps)
    return 2 * 8 * (eps / 2) * math.sqrt(terms) * max(scale, 1e-30)


def _float32_model(model: Any) -> Any:
    """``model`` computing in float32 (the export's precision) through the reference attention
    (``einsum``; a fused kernel may round otherwise): itself when it already does, else the same
    parameters in such a build."""
    from flax import nnx

    from minilm_jax.model.models import SequenceClassifier, build_classifier, build_mlm

    cfg = model.cfg
    reference = {"dtype": "float32", "param_dtype": "float32", "attention_impl": "einsum"}
    if all(getattr(cfg, k) == v for k, v in reference.items()):
        return model
    cfg32 = cfg.replace(**reference)
    if isinstance(model, SequenceClassifier):
        copy = nnx.eval_shape(lambda: build_classifier(cfg32, model.num_labels))
    else:
        copy = nnx.eval_shape(lambda: build_mlm(cfg32))
    state = nnx.state(model)
    nnx.update(copy, _cast_state(state))
    return copy


def _cast_state(state: Any) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: x.astype(jnp.float32)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def perturbed(model: Any, seed: int = PROBE_SEED) -> Any:
    """A copy of ``model`` whose every floating tensor is a deterministic random draw: a kernel
    ``N(0, 1/fan_in)``, ``fan_in`` the product of all but its last axis (nnx's ``[..., in,
    out]``), a BatchNorm variance (``var``) uniform in [0.5, 2], any other (embedding tables,
    biases, norm scales, a variant's own parameters) ``N(0, 1)``."""
    import jax.numpy as jnp
    from flax import nnx

    copy = nnx.clone(model)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(copy)):
        value = np.asarray(var.get_value())
        if not np.issubdtype(value.dtype, np.floating):
            continue
        if path[-1] == "var":
            drawn = rng.uniform(0.5, 2.0, value.shape)
        elif path[-1] == "kernel" and value.ndim >= 2:
            drawn = rng.normal(0.0, 1.0 / math.sqrt(max(1, int(np.prod(value.shape[:-1])))),
                               value.shape)
        else:
            drawn = rng.normal(0.0, 1.0, value.shape)
        var.set_value(jnp.asarray(drawn.astype(value.dtype)))
    return copy


def our_logits(model: Any, tokens: np.ndarray, types: np.ndarray, real: np.ndarray,
               classifier: bool) -> np.ndarray:
    """Our logits (a masked LM's at every position ``[B, T, V]``, a classifier's ``[B, L]``) as
    one compiled program, its float32 matrix products at full precision (an accelerator's
    default may round their inputs to fewer bits: TF32, bfloat16 passes)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    segments = real.astype(np.int32)
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape).astype(np.int32)

    @nnx.jit
    def forward(m, t, s, y, p):
        return m(t, s, y) if classifier else m(t, p, s, y)

    with jax.default_matmul_precision("highest"):
        logits = forward(model, *(jnp.asarray(a) for a in (tokens, segments, types, positions)))
    return np.asarray(logits, np.float32)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off while the check loads the folder: what it
    finds is said in one line."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _dynamic_modules_of(folder: Path) -> Iterator[None]:
    """Remove what transformers copied and imported of ``folder``'s code (its modules cache
    entry ``transformers_modules/<folder name>`` and ``sys.modules``) once the check is done:
    the folder is a temporary one, never loaded again."""
    try:
        yield
    finally:
        try:
            from transformers.dynamic_module_utils import (HF_MODULES_CACHE,
                                                           TRANSFORMERS_DYNAMIC_MODULE_NAME,
                                                           _sanitize_module_name)
            name = _sanitize_module_name(folder.name)
        except (ImportError, AttributeError):
            name = ""
        if name:
            prefix = f"{TRANSFORMERS_DYNAMIC_MODULE_NAME}.{name}"
            for module in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
                del sys.modules[module]
            shutil.rmtree(Path(HF_MODULES_CACHE) / TRANSFORMERS_DYNAMIC_MODULE_NAME / name,
                          ignore_errors=True)


def _largest(ours: np.ndarray, theirs: np.ndarray, real: np.ndarray,
             classifier: bool) -> tuple[float, tuple[int, ...]]:
    """The largest ``|ours - theirs|`` (at real positions for a masked LM) and where; a value
    that is not finite matches only the same value (NaN matches NaN), else differs by inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ours - theirs)
    same = ~np.isfinite(ours) & ((ours == theirs) | (np.isnan(ours) & np.isnan(theirs)))
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff)).astype(np.float32)
    if not classifier:
        diff = np.where(real[:, :, None], diff, -1.0)
    where = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return float(diff[where]), tuple(int(i) for i in where)


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception raised by the PyTorch side."""
    said = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {said}" if said else type(err).__name__


def _describe(where: tuple[int, ...], classifier: bool, labels: Sequence[str]) -> str:
    if classifier:
        b, k = where
        label = labels[k] if k < len(labels) else str(k)
        return f"the classification head's logit {label!r} of probe sequence {b}"
    b, t, v = where
    return f"the masked-LM head's logit of token {v} at probe sequence {b}, position {t}"


def verify_export(model: Any, folder: Path, *, implementation: str, remote: bool,
                  tensors_of: Any, labels: Sequence[str] = ()) -> TwinCheck:
    """Load ``folder`` (an export of ``model``) with transformers and compare its logits with
    ours, at the exported parameters and at :func:`perturbed` ones (loaded into the same module
    through ``tensors_of(perturbed_model)``, the export's state dict). Raises
    :class:`InteropError`, one line naming the largest differing output, when they differ
    beyond :func:`tolerance` or the folder does not load whole."""
    import torch
    import transformers

    from minilm_jax.model.models import SequenceClassifier

    classifier = isinstance(model, SequenceClassifier)
    auto = (transformers.AutoModelForSequenceClassification if classifier
            else transformers.AutoModelForMaskedLM)
    ours_model = _float32_model(model)
    tokens, types, real = probe_batch(model.cfg)
    with _dynamic_modules_of(folder), _quiet_transformers():
        try:
            hf, info = auto.from_pretrained(str(folder), trust_remote_code=remote,
                                            output_loading_info=True)
        except Exception as err:  # noqa: BLE001 - the user's twin may fail in any way: one line
            raise InteropError(f"{implementation} does not load the export: "
                               f"{_first_line(err)}") from None
        problems = {k: sorted(map(str, v))[:5] for k, v in info.items() if v}
        if problems:
            raise InteropError(f"{implementation} does not load the export whole: "
                               + "; ".join(f"{k} {v}" for k, v in problems.items()))
        hf = hf.eval().float()
        inputs = {"input_ids": torch.from_numpy(tokens.astype(np.int64)),
                  "attention_mask": torch.from_numpy(real.astype(np.int64)),
                  "token_type_ids": torch.from_numpy(types.astype(np.int64))}
        diffs, tols = [], []
        for name in (TRAINED, PERTURBED):
            if name == PERTURBED:
                ours_model = perturbed(ours_model)
                state = {k: torch.from_numpy(np.array(v, copy=True))
                         for k, v in tensors_of(ours_model).items()}
                try:
                    unexpected = hf.load_state_dict(state, strict=False).unexpected_keys
                except Exception as err:  # noqa: BLE001 - e.g. a tensor of another shape
                    raise InteropError(f"{implementation} does not take perturbed parameters of "
                                       f"the export's shapes: {_first_line(err)}") from None
                if unexpected:
                    raise InteropError(f"{implementation} has no tensor named "
                                       f"{sorted(unexpected)[:5]} of the export")
            try:
                with torch.no_grad():
                    theirs = hf(**inputs).logits.float().numpy()
            except Exception as err:  # noqa: BLE001 - the user's twin may fail in any way
                raise InteropError(f"{implementation} fails on a probe batch of {tokens.shape[0]} "
                                   f"sequences of {tokens.shape[1]} tokens: "
                                   f"{_first_line(err)}") from None
            ours = our_logits(ours_model, tokens, types, real, classifier)
            if theirs.shape != ours.shape:
                raise InteropError(f"{implementation} gives logits of shape {theirs.shape}, "
                                   f"ours {ours.shape}")
            compared = ours if classifier else ours[real]
            tol = tolerance(model.cfg, float(np.max(np.abs(compared[np.isfinite(compared)]),
                                                    initial=0.0)))
            diff, where = _largest(ours, theirs, real, classifier)
            if not diff <= tol:
                raise InteropError(
                    f"{implementation} does not compute this model: at the {name} parameters "
                    f"{_describe(where, classifier, labels)} is {theirs[where]:.6g} in PyTorch, "
                    f"{ours[where]:.6g} in minilm-jax (difference {diff:.3g}, float32 "
                    f"tolerance {tol:.3g})")
            diffs.append((name, diff))
            tols.append((name, tol))
    return TwinCheck(True, implementation, max_diff=tuple(diffs), tolerance=tuple(tols),
                     versions=f"torch {torch.__version__}, transformers "
                              f"{transformers.__version__}")
