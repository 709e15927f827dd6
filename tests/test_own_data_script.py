"""launch/own_data.sh's arguments as a user gives them: relative paths are the caller's, and each
refusal is one ``error:`` line with exit status 2 (nothing is installed or trained before it)."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "own_data.sh"


def own_data(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_relative_paths_are_the_callers(tmp_path):
    (tmp_path / "text.txt").write_text("one line of text\n")
    (tmp_path / "labels.csv").write_text("text,label\nfine,1\n")
    dry = own_data(tmp_path, "text.txt", "labels.csv", "out", OWN_DRY_RUN="1")
    assert dry.returncode == 0, dry.stderr
    assert f"--corpus text:{tmp_path}/text.txt" in dry.stdout
    assert f"--workdir={tmp_path}/out/pretrain" in dry.stdout
    assert f"--config.data.dir={tmp_path}/labels.csv" in dry.stdout
    missing = own_data(tmp_path, "nothing.txt", "-", "out")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"error: not found: {tmp_path}/nothing.txt"]


def test_a_folder_without_text_files_is_refused_in_one_line(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("not a text to train on\n")
    proc = own_data(tmp_path, "docs", "-", "out")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: no .txt files in {tmp_path}/docs (TEXT: a .txt file, a .jsonl file, or a folder "
        "of .txt files)"]
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "text.txt").write_text("one line of text\n")
    (tmp_path / "file").write_text("a file, not a folder\n")
    proc = own_data(tmp_path, "text.txt", "-", "file/out")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1:] == [
        f"error: cannot create the output folder {tmp_path}/file/out"]
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
