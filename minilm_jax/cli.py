"""Command-line plumbing shared by the entry points, all of them absl applications: runs
(``--config`` / ``--workdir``) define absl flags with ml-collections ``config_flags`` and override
checking; tools (subcommands, plain options) use absl's ``argparse_flags`` parser through
:func:`tool_parser` / :func:`run_tool`, so ``--helpfull``, ``--flagfile`` and ``--verbosity`` work
everywhere. User mistakes give one ``error:`` line and a non-zero exit."""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from absl.flags import argparse_flags

from minilm_jax.errors import Interrupted, StorageError, UserError, one_line
from minilm_jax.settings import recipes

if TYPE_CHECKING:
    import ml_collections

EXIT_USER_ERROR = 2

# The garbage collector's thresholds in a command. A command imports ~1M long-lived objects (jax,
# flax, orbax) and then traces and lowers its programs, allocating millions of short-lived ones;
# CPython's default (700, 10, 10) collects the youngest generation every 700 net allocations and
# so keeps re-scanning. At (10000, 10, 10) the test suite's pre-training tests
# (tests/test_pretrain.py, one process with its commands, cold compilation cache, 2 cores) took
# 54-56 instead of 60 CPU-seconds, and importing a pre-training and a fine-tuning command 1.55
# instead of 1.68 (disabling the collector: 54 and 1.41). Cycles are still collected; the
# youngest generation just waits for 10,000 allocations.
COLLECTOR_THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Set :data:`COLLECTOR_THRESHOLDS` for this process (a command's, or the test suite's)."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def define_run_flags(what: str, spec: str) -> Callable[[], tuple[ml_collections.ConfigDict, str]]:
    """Define ``--config`` (a config file, ``spec``) and ``--workdir`` for a run's entry point.

    Returns a function that gives (config, workdir) inside ``main``, or raises a UserError naming
    both flags when either is missing.
    """
    from absl import flags
    from ml_collections import config_flags

    flags.disclaim_key_flags()  # the flags below belong to the entry point: its --help lists them
    config = config_flags.DEFINE_config_file(
        "config", None, f"{what} config: {spec} (an installed recipe) or a file")
    workdir = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, summary)")

    def values() -> tuple[ml_collections.ConfigDict, str]:
        if config.value is None or not workdir.value:
            raise UserError(f"both --config={spec} and --workdir=DIR are required")
        # imported here: the model's modules (chex, absl.testing's flags) only for a run's command
        from minilm_jax.settings.command_line import VARIANT_ASSIGNMENTS, apply_variant_fields

        apply_variant_fields(config.value, VARIANT_ASSIGNMENTS)  # --config.model.extra.<name>
        return config.value, workdir.value

    return values


def run_main(main: Callable[[list[str]], None], recipe: str | None = None) -> None:
    """``absl.app.run(main)`` with the command's own ``--help`` (``recipe``: its default
    ``--config``, whose fields the help lists), ``--print_config``, recipes by name
    (:mod:`minilm_jax.settings.recipes`), override checking (the last of a repeated override
    wins: :func:`minilm_jax.settings.command_line.last_override_wins`) and one-line user
    errors."""
    from absl import app

    tune_collector()
    from minilm_jax import command_help
    from minilm_jax.settings.command_line import (check_overrides, last_override_wins,
                                                  take_variant_fields)

    if set(sys.argv[1:]) & command_help.HELP_FLAGS:
        print(command_help.command_help(main, sys.argv[1:], recipe), end="")
        sys.exit(0)
    print_config = command_help.PRINT_CONFIG in sys.argv[1:]
    try:
        # A repeated override keeps its last value, a tuple field's too (ml-collections would
        # concatenate those): config_flags reads sys.argv itself, so the rewrite goes there.
        argv = [a for a in sys.argv[1:] if a != command_help.PRINT_CONFIG]
        sys.argv = [sys.argv[0], *last_override_wins(recipes.resolve_args(argv))]
        sys.argv = [sys.argv[0], *take_variant_fields(sys.argv[1:])]
        sys.argv = [sys.argv[0], *check_overrides(sys.argv[1:])]
    except Exception as err:
        exit_on_user_error(err)
        raise

    def guarded(argv: list[str]) -> None:
        from absl import flags, logging

        if print_config:
            if "config" not in flags.FLAGS or flags.FLAGS.config is None:
                exit_on_user_error(UserError(f"{command_help.PRINT_CONFIG} needs --config"))
            print(command_help.config_lines(flags.FLAGS.config, sys.argv[1:]), end="")
            sys.exit(0)
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
            quiet_orbax_errors()
            sys.stderr = ClosedLoopNoiseFilter(sys.stderr)
        try:
            main(argv)
        except KeyboardInterrupt:  # Ctrl-C outside a run loop (which saves first): no traceback
            exit_interrupted(Interrupted("interrupted (Ctrl-C)"))
        except Interrupted as err:
            exit_interrupted(err)
        except Exception as err:
            exit_on_user_error(err)
            raise

    try:
        app.run(guarded)
    except SystemExit as done:
        if set(sys.argv[1:]) & {"-h", "--help", "--helpshort", "--helpfull", "-?"}:
            sys.exit(0)  # absl exits 1 after printing help; asking for help is not an error
        raise done


@functools.cache
def _abseil_own_flags() -> Any:
    """A FlagValues holding only absl's own flags (``--verbosity``, ``--log_dir``, ...), the same
    Flag objects as ``absl.flags.FLAGS``: a flag some imported module defines (an entry point's
    ``--json``, say) must not clash with a tool's option of that name. Built once per process and
    shared by a tool's parser and its sub-command parsers."""
    from absl import flags
    importlib.import_module("absl.logging")  # defines --verbosity and friends

    own = flags.FlagValues()
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith("absl."):
            for flag in module_flags:
                if flag.name not in own:
                    own[flag.name] = flag  # registers its short name (-v) too
    return own


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's default appended to its help unless the help
    already names it, or there is none to show (no value, an unset switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is argparse.SUPPRESS
                or default in (None, "", False) or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


class _ToolParser(argparse_flags.ArgumentParser):
    """absl's argparse parser (absl's own flags only) with a one-line usage error."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("inherited_absl_flags", _abseil_own_flags())
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (--help lists the options)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def tool_parser(**kwargs: Any) -> argparse.ArgumentParser:
    """An argparse parser for a tool (not a ``--config`` run): absl's ``argparse_flags`` parser, which
    also accepts absl's own flags (``--verbosity``, ``--flagfile``; listed by ``--helpfull``), and
    reports a usage mistake in one ``error:`` line; ``--help`` shows each option's default.
    Sub-command parsers are of the same kind."""
    return _ToolParser(**kwargs)


def run_tool(main: Callable[[list[str]], int | None]) -> NoReturn:
    """``absl.app.run`` for a tool whose ``main(argv)`` parses its arguments with :func:`tool_parser`;
    a user error the tool did not catch becomes one ``error:`` line and exit status 2."""
    from absl import app, flags

    tune_collector()

    def parse(argv: list[str]) -> list[str]:
        flags.FLAGS.mark_as_parsed()  # main's tool_parser reads absl's own flags with the rest
        return argv

    def guarded(argv: list[str]) -> NoReturn:
        from absl import logging

        logging.set_verbosity(logging.WARNING)  # no INFO lines (backends, Orbax); --verbosity wins
        try:
            code = main(list(argv[1:]))
        except BrokenPipeError:  # output piped into `head`: not an error of ours, and no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as err:
            exit_on_user_error(err)
            raise
        sys.exit(code or 0)

    app.run(guarded, flags_parser=parse)
    raise AssertionError("absl.app.run returned")  # it always exits


def status_of_user_errors(action: Callable[[], int | None]) -> int:
    """Run ``action``; a user-facing failure (:func:`~minilm_jax.errors.one_line`) becomes one
    ``error:`` line on stderr and status 2, Ctrl-C ``error: interrupted`` and 130; a bug propagates.
    For tools whose ``main(argv)`` returns a status (and is called in-process by tests)."""
    try:
        return action() or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # user errors and the environment's (disk full, read-only)
        line = one_line(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR


def exit_interrupted(err: Interrupted) -> NoReturn:
    """One ``error:`` line for a command stopped by a signal, and its exit status (130 for
    Ctrl-C). Exits at once: background threads (prefetchers, Orbax) are not waited for, so the
    interpreter's shutdown prints nothing more."""
    stream = sys.stderr
    if isinstance(stream, ClosedLoopNoiseFilter):
        stream = stream.discard_held()
    stream.write(f"error: {err}\n")
    stream.flush()
    sys.stdout.flush()
    os._exit(err.exit_status)


def exit_on_user_error(err: BaseException) -> None:
    """For a user-facing failure (:func:`~minilm_jax.errors.one_line`): print one ``error:`` line and
    exit 2. Returns for a bug (the caller re-raises it with its traceback)."""
    line = one_line(err)
    if line is None:
        return
    if isinstance(err, StorageError):  # Orbax's aborted writers would print tracebacks at exit
        stream = sys.stderr
        if isinstance(stream, ClosedLoopNoiseFilter):  # a traceback still being held: noise
            stream = stream.discard_held()
        stream.write(f"error: {line}\n")  # one write: no other thread's text inside the line
        stream.flush()
        sys.stdout.flush()
        os._exit(2)
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_orbax_errors() -> None:
    """Drop Orbax's own error log lines (a failed write is logged by each of its threads); the
    failure reaches the user as one :class:`StorageError` line. ``--verbosity`` brings them back."""
    import logging

    class _NotOrbax(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "/orbax/" not in record.pathname.replace("\\", "/")

    logging.getLogger("absl").addFilter(_NotOrbax())


class ClosedLoopNoiseFilter:
    """A stderr wrapper that drops the tracebacks ending in ``RuntimeError: Event loop is closed``:
    after a failed checkpoint write, TensorStore's threads call back into Orbax's closed event loop,
    once per pending write, and their tracebacks interleave line by line. A held block is released
    when each of its tracebacks has ended (and the next line shows no chained exception follows),
    dropped when every one ended in that error. Everything else passes through unchanged; a block
    still open at exit is written then."""

    NOISE = "RuntimeError: Event loop is closed"
    HEADER = "Traceback (most recent call last):"
    CHAINED = ("During handling of the above exception", "The above exception was the direct cause")

    def __init__(self, stream):
        import atexit
        import threading

        self._stream = stream
        self._lock = threading.Lock()
        self._pending = ""  # text not yet ended by a newline
        self._held: list[str] = []  # lines of the tracebacks being held back
        self._open = 0  # tracebacks in the held block whose exception line has not come yet
        self._ends: list[str] = []  # the exception lines that closed them
        self._closing = False  # every held traceback has ended; a chained one may still follow
        self._muted = False  # set by discard_held: the process is about to exit
        atexit.register(self._release)

    def write(self, text: str) -> int:
        with self._lock:
            if self._muted:  # other threads' last words after the one error line: dropped
                return len(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._line(line)
            starts = (self.HEADER,) + (self.CHAINED if self._closing else ())
            if self._closing and self._pending and not any(
                    s.startswith(self._pending[: len(s)]) for s in starts):
                self._finish()
            if (self._pending and not self._open and not self._held
                    and not self.HEADER.startswith(self._pending[: len(self.HEADER)])):
                self._stream.write(self._pending)  # a progress bar redrawn with \r: show it now
                self._pending = ""
        return len(text)

    def _line(self, line: str) -> None:
        if self._closing:  # the held block's tracebacks all ended: unless a chained one follows
            if not line.strip():
                self._held.append(line)
                return
            if line.startswith(self.CHAINED):  # the exception just ended is not the last one
                self._held.append(line)
                self._ends.pop()
                self._closing = False
                return
            self._finish()
        if line.startswith(self.HEADER):
            self._held.append(line)
            self._open += 1
            self._closing = False
        elif not self._open and not self._held:
            self._stream.write(line + "\n")
        elif line.startswith(" ") or not line.strip():
            self._held.append(line)
        else:  # an exception line ends one of the open tracebacks
            self._held.append(line)
            self._ends.append(line.strip())
            self._open -= 1
            self._closing = not self._open

    def _finish(self) -> None:
        """Write the held block unless every traceback in it ended in the noise."""
        if any(end != self.NOISE for end in self._ends):
            self._stream.write("\n".join(self._held) + "\n")
        self._held, self._ends, self._closing = [], [], False

    def _release(self) -> None:
        """Write what is still held (a traceback cut off before its last line, or one whose end
        came last) and pending text."""
        with self._lock:
            if self._closing:
                self._finish()
            if self._held:
                self._stream.write("\n".join(self._held) + "\n")
            if self._pending:
                self._stream.write(self._pending)
            self._held, self._ends, self._open, self._pending = [], [], 0, ""
        self._stream.flush()

    def discard_held(self):
        """Drop what is held back (half-written tracebacks) and whatever other threads write from
        now on (the caller prints its one line and exits); the underlying stream."""
        with self._lock:
            self._held, self._ends, self._open, self._pending = [], [], 0, ""
            self._closing, self._muted = False, True
        return self._stream

    def flush(self) -> None:
        """Flush what has passed the filter; a traceback being held stays held."""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
