"""The suite's per-test time limit (pytest.ini, pytest-timeout): a test that hangs fails at the
limit, says where it hung, and the session goes on to the next test, in one process and on two
xdist workers as launch/test.sh runs it."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

HANGING = '''import threading


def test_hangs():
    threading.Event().wait()  # never set: waits forever


def test_after():
    assert 1 + 1 == 2
'''


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_hanging_test_fails_at_the_limit_and_names_where_it_hung(tmp_path, workers):
    shutil.copy(REPO / "pytest.ini", tmp_path / "pytest.ini")  # the suite's own settings
    (tmp_path / "test_hang.py").write_text(HANGING)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--timeout=2", *workers, "test_hang.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=100)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "FAILED test_hang.py::test_hangs - Failed: Timeout (>2.0s)" in out, out
    # the traceback names the test's line that hung, and the line itself
    assert "\ntest_hang.py:5: \n" in out and ">       threading.Event().wait()" in out, out


def test_every_test_has_a_limit_by_default(request):
    """pytest.ini's limit applies to every test that sets none (the check above passes its own),
    times MINILM_TEST_TIMEOUT_SCALE where that is set (tests/conftest.py)."""
    import conftest

    assert float(request.config.getini("timeout")) == 600
    assert request.config.getini("timeout_method") == "signal"
    marker = request.node.get_closest_marker("timeout")
    if conftest.TIMEOUT_SCALE == 1:
        assert marker is None
    else:
        assert marker.args == (600 * conftest.TIMEOUT_SCALE,)


def test_a_scale_multiplies_every_limit(tmp_path):
    """MINILM_TEST_TIMEOUT_SCALE=3 turns pytest.ini's 600 s into 1,800 s and a test's own 300 s
    into 900 s: what pytest-timeout then applies, read back from each test's markers."""
    (tmp_path / "test_limits.py").write_text(
        "import pytest\n\n\n"
        "def test_default(request):\n"
        "    print('limit', request.node.get_closest_marker('timeout').args)\n\n\n"
        "@pytest.mark.timeout(300)\n"
        "def test_own(request):\n"
        "    print('limit', request.node.get_closest_marker('timeout').args)\n")
    shutil.copy(REPO / "pytest.ini", tmp_path / "pytest.ini")
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "test_limits.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=100, env={**os.environ, "MINILM_TEST_TIMEOUT_SCALE": "3"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.findall(r"limit \((\S+),\)", proc.stdout) == ["1800.0", "900.0"], proc.stdout
