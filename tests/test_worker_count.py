"""How many xdist workers ``-n auto`` starts (``conftest.worker_count``, launch/test.sh): one a
core and one more, at most one per 2 GiB of memory, ``MINILM_TEST_WORKERS`` when set."""

import os
import subprocess
import sys

import pytest

import conftest

GIB = 2 ** 30


@pytest.fixture
def machine(monkeypatch):
    """Set the cores this process may use and the machine's memory (GiB)."""
    monkeypatch.delenv("MINILM_TEST_WORKERS", raising=False)

    def set_machine(cores: int, gib: int, affinity: bool = True) -> None:
        if affinity:
            monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)),
                                raising=False)
        else:
            monkeypatch.delattr(os, "sched_getaffinity", raising=False)
            monkeypatch.setattr(os, "cpu_count", lambda: cores)
        pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": gib * GIB // 4096}
        monkeypatch.setattr(os, "sysconf", lambda name: pages[name])

    return set_machine


@pytest.mark.parametrize("cores,gib,workers", [
    (2, 24, 3),   # the development machine: a core each and one more
    (16, 128, 17),
    (16, 16, 8),  # memory-bound: one per 2 GiB
    (4, 9, 4),    # 9 GiB holds 4, not 4.5
    (2, 1, 1),    # never none
])
def test_one_worker_a_core_and_one_more_within_memory(machine, cores, gib, workers):
    machine(cores, gib)
    assert conftest.worker_count() == workers


def test_without_affinity_the_cores_are_counted(machine):
    machine(3, 64, affinity=False)  # macOS has no sched_getaffinity
    assert conftest.worker_count() == 4


def test_the_environment_sets_the_count(machine, monkeypatch):
    machine(2, 24)
    monkeypatch.setenv("MINILM_TEST_WORKERS", "5")
    assert conftest.worker_count() == 5
    assert conftest.pytest_xdist_auto_num_workers(None) == 5


def test_pytest_without_xdist_still_runs_the_suite(tmp_path):
    # The hook above is xdist's: with the plugin off, pytest must not refuse it as unknown.
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         os.path.join(here, "test_worker_count.py"), "-k", "environment_sets"],
        capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout
