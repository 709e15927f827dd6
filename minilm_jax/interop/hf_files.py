"""Files of a Hugging Face model directory: an atomic directory writer, the safetensors backend,
the tokenizer files copied next to the weights, and the checks that a directory's weights are all
there and whole (one line naming a missing or truncated file)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping

from minilm_jax.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from minilm_jax.tokenizer import Tokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # what transformers also reads


class InteropError(UserError, ValueError):
    """A model, checkpoint or directory that cannot cross between the two formats."""


class MissingFileError(InteropError, FileNotFoundError):
    """A file a Hugging Face directory needs is absent: one line naming it."""


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or damaged safetensors file, naming it: its header (8 bytes of length,
    then JSON naming each tensor's byte range) must be whole and its tensors' bytes all present."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise InteropError(f"{path}: truncated or damaged safetensors file ({size:,} bytes, "
                               "its header cut short); copy or export it again")
        try:
            header = json.loads(f.read(length))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items()
                    if key != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise InteropError(f"{path}: damaged safetensors file (its header is not the JSON "
                               "of a tensor table); copy or export it again") from None
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise InteropError(f"{path}: truncated safetensors file ({size:,} of the {needed:,} bytes "
                           "its header describes); copy or export it again")


def hf_weight_files(hf_dir: Path, torch_formats: bool = False) -> list[Path]:
    """The weight files of a Hugging Face directory: ``model.safetensors`` or the shards its index
    lists, each checked whole (:func:`check_safetensors`); with ``torch_formats`` also PyTorch's
    ``pytorch_model.bin`` (or its index), which transformers reads. A missing file is a
    :class:`MissingFileError` naming it."""
    single, index = hf_dir / WEIGHTS_NAME, hf_dir / WEIGHTS_INDEX_NAME
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = [hf_dir / name for name in sorted(set(weight_map.values()))]
        except (ValueError, AttributeError, TypeError):
            raise InteropError(f"{index}: not a shard index (JSON with a weight_map)") from None
        absent = [f.name for f in files if not f.is_file()]
        if not files or absent:
            raise MissingFileError(f"{index}: shard files missing: "
                                   f"{', '.join(absent) or 'none listed'}")
    elif torch_formats and any((hf_dir / name).is_file() for name in TORCH_WEIGHTS):
        return [hf_dir / next(n for n in TORCH_WEIGHTS if (hf_dir / n).is_file())]
    else:
        legacy = [n for n in (*TORCH_WEIGHTS, "tf_model.h5", "flax_model.msgpack")
                  if (hf_dir / n).exists()]
        hint = (f" (found {', '.join(legacy)}: re-save it with transformers' save_pretrained, "
                "which writes safetensors)") if legacy else ""
        raise MissingFileError(f"{hf_dir}: no weights: {WEIGHTS_NAME} is missing (nor is there "
                               f"a {WEIGHTS_INDEX_NAME} with its shards){hint}")
    for f in files:
        check_safetensors(f)
    return files


def tokenizer_files(tokenizer_path: str | os.PathLike | None) -> list[Path]:
    if tokenizer_path is None:
        return []
    path = Path(tokenizer_path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file())
        if not files:
            raise FileNotFoundError(f"tokenizer_path {path} is an empty directory")
    else:
        raise FileNotFoundError(f"tokenizer_path {path} does not exist")
    clash = [f.name for f in files if f.name in (CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)]
    if clash:
        raise InteropError(f"tokenizer_path {path}: {clash} would overwrite the exported model files")
    return files


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if _is_nonempty_dir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True "
                              "(--overwrite) to replace it")


def write_dir_atomically(out_dir: str | os.PathLike, fill: Callable[[Path], None], *,
                         overwrite: bool = False,
                         check: Callable[[Path], None] | None = None) -> Path:
    """Run ``fill(tmp_dir)`` in a sibling temporary directory, then ``check(tmp_dir)`` (which may
    refuse it by raising, or add files), then rename it to ``out_dir``.

    A non-empty ``out_dir`` is replaced only with ``overwrite=True`` (moved aside, then deleted once
    the new directory is in place). On any failure the temporary directory is removed and
    ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir).absolute()
    check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        fill(tmp)
        if check is not None:
            check(tmp)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # safetensors creates its file 0600
            _fsync(f)
        check_target(out_dir, overwrite)  # again: someone may have written there meanwhile
        if _is_nonempty_dir(out_dir):
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old)  # onto the empty directory mkdtemp made
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)  # absent, or an empty directory (replaced)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class MissingExtraError(UserError, ImportError):
    """A package of an optional extra is not installed: one line naming it and the extra."""


def safetensors_numpy():
    """``safetensors.numpy``, or :class:`MissingExtraError` naming the package and the extra."""
    try:
        import safetensors.numpy as st_numpy
    except ImportError as err:
        raise MissingExtraError("Hugging Face export and import need the 'safetensors' package, "
                                "which is not installed: pip install 'minilm-jax[hf]'") from err
    return st_numpy




def write_hf_dir(out_dir: str | os.PathLike, config: Mapping[str, Any],
                 tensors: "Mapping[str, np.ndarray]", *, copies: list[Path],
                 tokenizer: "Tokenizer | None", max_len: int,
                 files: Mapping[str, str] | None = None, overwrite: bool = False,
                 check: Callable[[Path], None] | None = None) -> Path:
    """Write a Hugging Face directory atomically: ``config.json``, ``model.safetensors``, the
    ``copies`` (files copied as they are), our tokenizer as ``AutoTokenizer`` files, and ``files``
    (name -> text); then ``check`` it in its temporary place (nothing reaches ``out_dir`` when it
    raises). The caller has checked the target (:func:`check_target`)."""
    st_numpy = safetensors_numpy()

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        st_numpy.save_file(dict(tensors), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        for f in copies:
            shutil.copyfile(f, tmp / f.name)
        if tokenizer is not None:
            from minilm_jax.interop.hf_tokenizer import write_hf_tokenizer

            write_hf_tokenizer(tokenizer, tmp, max_len=max_len)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    return write_dir_atomically(out_dir, fill, overwrite=overwrite, check=check)
