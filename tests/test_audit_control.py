"""Mutation audit (2026-11-29) of exclusive files, held folders and the command-line plumbing:
minilm_jax/exclusive_files.py (versions, ages and stamps against hashlib and a scripted clock, the
folder lock's mode, the delete without folder locks when a claim is renewed mid-delete, no litter
left), minilm_jax/held_folders.py (a held folder's identity: moved, replaced, relative paths,
several held) and minilm_jax/cli.py (``error:`` lines and exit statuses of tools and runs, the
usage error, defaults in ``--help``). 40 mutants planted, 20 survived the suite before this file
(2 of them equivalent: the explicit unlock, which closing the handle does anyway, and the delete
by renaming where folder locks exist, as correct as the locked one)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest

from conftest import REPO
from minilm_jax import cli, exclusive_files, held_folders
from minilm_jax.errors import UserError


@pytest.fixture(autouse=True)
def _nothing_held() -> Iterator[None]:
    """Each test starts and ends holding no folder (held_folders is process-wide)."""
    held_folders._HELD.clear()
    yield
    held_folders._HELD.clear()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- exclusive_files ---------------------------------------------------------------------------

def test_versions_ages_and_stamps_match_hashlib_and_a_scripted_clock(tmp_path, monkeypatch):
    path = tmp_path / "claims" / "u.json"
    version = exclusive_files.create(path, b"owner-1")
    assert version == hashlib.sha256(b"owner-1").hexdigest()  # the full digest
    assert _names(path.parent) == ["u.json"]  # the temporary file beside it is gone
    os.utime(path, ns=(1_700_000_000_250_000_000, 1_700_000_000_250_000_000))
    clock = SimpleNamespace(time=lambda: 1_700_000_042.75)  # 42.5 s after the write
    monkeypatch.setattr(exclusive_files, "time", clock)
    held = exclusive_files.read(path)
    assert held.data == b"owner-1" and held.version == version
    assert held.age == pytest.approx(42.5, abs=1e-3)
    assert held.stamp == "1700000000250000000"
    # A refresh at a stale version changes nothing; at the current one it makes the file young.
    assert exclusive_files.refresh(path, hashlib.sha256(b"other").hexdigest()) is None
    assert os.stat(path).st_mtime_ns == 1_700_000_000_250_000_000
    monkeypatch.undo()
    assert exclusive_files.refresh(path, version) == version
    assert exclusive_files.read(path).age < 600.0  # was 2023-11-14: years old before
    assert exclusive_files.read(path).stamp != "1700000000250000000"


def test_a_create_under_a_held_root_that_moved_raises_and_recreates_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    held_folders.hold(root, "sweep root")
    root.rename(tmp_path / "moved")
    with pytest.raises(held_folders.FolderGone, match=f"sweep root {root} is gone"):
        exclusive_files.create(root / "claims" / "u.json", b"x")
    assert _names(tmp_path) == ["moved"]  # no folder re-created at the old path


def test_the_delete_takes_the_folder_lock_exclusively(tmp_path, monkeypatch):
    path = tmp_path / "u.json"
    version = exclusive_files.create(path, b"a")
    ops: list[int] = []

    def flock(handle, op: int) -> None:
        ops.append(op)
        fcntl.flock(handle, op)

    monkeypatch.setattr(exclusive_files, "fcntl", SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_UN=fcntl.LOCK_UN, LOCK_SH=fcntl.LOCK_SH))
    assert exclusive_files.delete(path, version)
    assert ops[0] == fcntl.LOCK_EX  # (its release: the closed handle's, if not before)
    assert _names(tmp_path) == [exclusive_files.LOCK_FILE]


@pytest.fixture
def no_folder_locks(monkeypatch) -> None:
    """A filesystem without ``flock`` (Lustre without ``-o flock``): deletes move the file aside."""

    @contextlib.contextmanager
    def unlocked(folder: Path) -> Iterator[bool]:
        yield False

    monkeypatch.setattr(exclusive_files, "_folder_lock", unlocked)


def test_a_delete_without_folder_locks_leaves_nothing_behind(tmp_path, no_folder_locks):
    path = tmp_path / "u.json"
    version = exclusive_files.create(path, b"a")
    assert not exclusive_files.delete(path, hashlib.sha256(b"b").hexdigest())
    assert exclusive_files.delete(path, version)
    assert _names(tmp_path) == []  # neither the file nor the copy moved aside


def test_a_claim_renewed_mid_delete_is_put_back_whole(tmp_path, no_folder_locks, monkeypatch):
    path = tmp_path / "u.json"
    version = exclusive_files.create(path, b"old owner")
    rename = os.rename

    def renewed_first(src, dst) -> None:  # another worker replaces it between look and move
        Path(src).write_bytes(b"new owner")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", renewed_first)
    assert exclusive_files.delete(path, version) is False
    monkeypatch.undo()
    assert path.read_bytes() == b"new owner" and _names(tmp_path) == ["u.json"]
    assert exclusive_files.read(path).version == hashlib.sha256(b"new owner").hexdigest()


def test_the_listing_skips_hidden_files_and_stamps_with_nanoseconds(tmp_path):
    for name in ("a.json", ".hidden.json", "b.txt"):
        (tmp_path / name).write_bytes(b"{}")
    os.utime(tmp_path / "a.json", ns=(5_000_000_123, 5_000_000_123))
    assert exclusive_files.listing(tmp_path) == {"a.json": "5000000123"}
    os.utime(tmp_path / "a.json", ns=(5_000_000_124, 5_000_000_124))  # same size, 1 ns later
    assert exclusive_files.listing(tmp_path) == {"a.json": "5000000124"}


# --- held_folders ------------------------------------------------------------------------------

def _gone_line(what: str, path: Path, how: str) -> str:
    return (f"{what} {path} is gone ({how} while this command ran): stopping; nothing more is "
            "written there")


def test_a_held_folder_moved_then_replaced_is_named_with_what_happened(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    held_folders.hold(root, "study root")
    assert held_folders.gone() is None
    root.rename(tmp_path / "elsewhere")
    assert held_folders.gone() == _gone_line("study root", root, "moved or deleted")
    root.mkdir()  # another folder (same device, another inode) at the held path
    assert held_folders.gone() == _gone_line(
        "study root", root, "moved or deleted, and another folder now stands at its path")


def test_every_held_folder_is_checked_and_a_relative_one_by_its_absolute_path(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    (tmp_path / "rel").mkdir()
    held_folders.hold("kept", "first root")
    held_folders.hold("rel", "second root")
    held_folders.hold("gs://bucket/root", "bucket root")  # no identity: not held
    assert len(held_folders._HELD) == 2
    (tmp_path / "rel").rmdir()
    assert held_folders.gone() == _gone_line("second root", tmp_path / "rel", "moved or deleted")
    with pytest.raises(held_folders.FolderGone):
        held_folders.check()
    held_folders.release(tmp_path / "rel")  # released by its absolute path
    held_folders.release(tmp_path / "rel")  # twice: no error
    assert held_folders.gone() is None
    held_folders.check()


# --- cli ---------------------------------------------------------------------------------------

def _raise(err: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise err
    return action


def test_status_of_user_errors_statuses_and_lines(capsys):
    assert cli.status_of_user_errors(lambda: 3) == 3
    assert cli.status_of_user_errors(lambda: None) == 0
    assert capsys.readouterr().err == ""
    assert cli.status_of_user_errors(_raise(UserError("bad --n"))) == 2
    assert capsys.readouterr().err == "error: bad --n\n"
    missing = FileNotFoundError(2, "No such file or directory", "/no/such")
    assert cli.status_of_user_errors(_raise(missing)) == 2
    assert capsys.readouterr().err == "error: /no/such: No such file or directory\n"
    assert cli.status_of_user_errors(_raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    with pytest.raises(ValueError, match="a bug"):  # a bug keeps its traceback
        cli.status_of_user_errors(_raise(ValueError("a bug")))
    assert capsys.readouterr().err == ""


def test_exit_on_user_error_exits_2_for_a_user_error_and_returns_for_a_bug(capsys):
    with pytest.raises(SystemExit) as done:
        cli.exit_on_user_error(UserError("no such recipe"))
    assert done.value.code == 2 == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: no such recipe\n"
    assert cli.exit_on_user_error(ValueError("a bug")) is None
    assert capsys.readouterr().err == ""


def test_a_usage_mistake_is_one_line_naming_the_tool_and_status_2(capsys):
    parser = cli.tool_parser(prog="probe")
    parser.add_argument("--n", type=int, default=3, help="count")
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--n", "x"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "error: probe: argument --n: invalid int value: 'x' (--help lists the options)\n")


def test_help_shows_a_default_once_and_none_for_unset_switches():
    parser = cli.tool_parser(prog="probe")
    parser.add_argument("--n", type=int, default=3, help="count")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--name", default="x", help="name (default: %(default)s)")
    parser.add_argument("where", nargs="?", default="here", help="place")
    formatter = parser._get_formatter()
    helps = {action.dest: formatter._get_help_string(action) for action in parser._actions}
    assert helps["n"] == "count (default: %(default)s)"
    assert helps["fast"] == "go fast"
    assert helps["name"] == "name (default: %(default)s)"
    assert helps["where"] == "place"


# Commands: run_tool and run_main end the process, so the statuses are a second process's.
TOOL = """
import sys
from minilm_jax.cli import run_tool, tool_parser
from minilm_jax.errors import UserError
def main(argv):
    args = tool_parser(prog="probe").parse_known_args(argv)[1]
    if args == ["user"]:
        raise UserError("refused")
    return int(args[0])
run_tool(main)
"""

RUN = """
from minilm_jax.cli import define_run_flags, run_main
values = define_run_flags("pre-training", "pretrain:NAME")
def main(argv):
    print("ran", values()[1])
run_main(main)
"""


def _command(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_a_tool_exits_with_its_status_and_a_run_needs_both_flags():
    assert _command(TOOL, "3").returncode == 3
    refused = _command(TOOL, "user")
    assert (refused.returncode, refused.stderr) == (2, "error: refused\n")
    no_workdir = _command(RUN, "--config=pretrain:paper-1.25m")
    assert no_workdir.returncode == 2 and no_workdir.stdout == ""
    assert no_workdir.stderr.splitlines()[-1] == (
        "error: both --config=pretrain:NAME and --workdir=DIR are required")
    helpfull = _command(RUN, "--helpfull")  # absl exits 1 after help; asking is not an error
    assert helpfull.returncode == 0 and "--workdir" in helpfull.stdout
