"""The researcher's workflow: overrides that mean what they say, one override parser, logs that
suit where they go, entry points that explain themselves."""

import subprocess
import sys

import pytest

from minilm_jax.model.config import ConfigError
from minilm_jax.configs.pretrain import get_config as pretrain_config
from minilm_jax.settings.command_line import apply_override

from test_pretrain import REPO, cli_env


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("override, message", [
    ("--config.point=paper-2.5m", "error: point cannot be overridden: the size comes from the "
                                  "config argument"),
    ("--config.train.num_steps=1e3", "error: train.num_steps=1e3: expected an integer, got '1e3'"),
    ("--config.train.progress=maybe", "error: train.progress=maybe: expected a boolean"),
])
def test_an_override_that_would_not_mean_what_it_says_is_refused(tmp_path, override, message):
    proc = run("minilm_jax.pretrain", "--config=configs/pretrain.py:paper-1.25m",
               f"--workdir={tmp_path / 'w'}", override)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    assert not (tmp_path / "w").exists()


def test_sweeps_parse_overrides_like_the_command_line():
    config = pretrain_config("paper-1.25m")
    with pytest.raises(ConfigError, match="expected an integer, got '1e3'"):
        apply_override(config, "train.num_steps=1e3")
    with pytest.raises(ConfigError, match="point cannot be overridden"):
        apply_override(config, "point=paper-2.5m")
    assert apply_override(config, "train.num_steps=1_000") == ("train.num_steps", 1000)


def test_sigterm_in_one_init_stops_the_whole_both_run(tmp_path, monkeypatch):
    """``init.mode=both``: a preempted first sub-run does not start the second."""
    from minilm_jax.finetune import run as run_module
    from minilm_jax.configs.finetune import get_config as finetune_config

    started = []

    class Preempted:
        def __init__(self, config, workdir, init, runs=()):
            started.append(init)

        def run(self):
            return {"status": "preempted"}

    monkeypatch.setattr(run_module, "Finetuner", Preempted)
    config = finetune_config("sst2")
    config.init.mode = "both"
    summaries = run_module.run_finetune(config, str(tmp_path))
    assert started == ["pretrained"] and list(summaries) == ["pretrained"]


def test_eta_and_durations_read_like_a_clock():
    from minilm_jax.train.run_log import EtaClock, duration, plain_progress

    assert [duration(s) for s in (0, 45.4, 192, 7500)] == ["0s", "45s", "3m12s", "2h05m"]
    clock = EtaClock()
    assert clock.eta(10, 100) is None  # the first line sets the origin
    eta = clock.eta(20, 100)
    assert eta is not None and eta >= 0
    assert plain_progress("pretrain", 50, 100, {"loss": "1.000"}, 192).endswith(
        "(50%): loss 1.000, ETA 3m12s")
    assert plain_progress("pretrain", 100, 100, {"loss": "1.000"}, 0.0).endswith("loss 1.000")


@pytest.fixture(scope="module")
def gated_cli_run(word_shards, tmp_path_factory):
    """One command-line pre-training run (40 steps) with ``--config.train.progress=True`` and its
    output redirected to pipes, of an encoder named by import path
    (``--config.model.arch=lab_encoders:GatedEncoder``, a module on PYTHONPATH only): the
    progress-line test reads its output, the import-path test its checkpoint (one command's
    start-up and compilation instead of two; neither property depends on the other)."""
    import os

    from test_model import GATED_ENCODER
    from test_pretrain import cli_args

    root = tmp_path_factory.mktemp("gated")
    (root / "lab_encoders.py").write_text(GATED_ENCODER)
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(root),
                                                       os.environ.get("PYTHONPATH", "")])}
    # checkpoints at steps 20 and 40 only (cli_args saves every 5 steps: 8 saves; neither test
    # reads an intermediate one)
    args = cli_args(word_shards, root / "w", 40, {
        "train.progress": True, "model.arch": "lab_encoders:GatedEncoder",
        "checkpoint.every_steps": 20})
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return root, proc


def test_a_redirected_run_prints_plain_lines_not_a_progress_bar(gated_cli_run):
    _, proc = gated_cli_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr + proc.stdout  # no redraws in a log file
    lines = proc.stdout.splitlines()
    progress = [line for line in lines if line.startswith("pretrain step ")]
    assert progress[-1].startswith("pretrain step 40/40 (100%): loss ") and 2 <= len(progress) <= 21
    # After compilation every line has the speed, and all but the last the time left.
    assert all(" tok/s " in line for line in progress[1:]), progress
    assert all(", ETA " in line for line in progress[1:-1]) and ", ETA" not in progress[-1]
    assert [line.split(":")[0] for line in lines if line.startswith("validation")] == [
        "validation step 20", "validation step 40"]


def console_scripts() -> list[tuple[str, str, str]]:
    """``(name, module, function)`` of every console script pyproject.toml installs."""
    import tomllib

    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return [(name, *target.split(":")) for name, target in table.items()]


def test_the_architecture_notes_list_every_command_as_pyproject_installs_it():
    """docs/architecture.md's command table and pyproject.toml's console scripts name the same
    commands and modules (``python -m <module>`` runs the script's function)."""
    import re

    scripts = {name: module.removesuffix(".__main__") for name, module, _ in console_scripts()}
    listed = dict(re.findall(r"^\| `(minilm-[a-z-]+)` \| `([\w.]+)` \|",
                             (REPO / "docs" / "architecture.md").read_text(), flags=re.M))
    assert listed == scripts


@pytest.mark.parametrize("module", ["minilm_jax.pretrain", "minilm_jax.finetune"])
def test_help_lists_the_entry_points_own_flags(module):
    proc = run(module, "--help")
    assert proc.returncode == 0
    assert "--config:" in proc.stdout and "--workdir:" in proc.stdout


def test_every_console_script_names_a_callable_and_its_help_is_not_an_error():
    import re

    scripts = console_scripts()
    assert {name for name, _, _ in scripts} >= {"minilm-pretrain", "minilm-finetune", "minilm-sweep",
                                                 "minilm-report", "minilm-corpus", "minilm-interop"}
    absl = ("pretrain", "__main__", "aot", "study_b")  # each defines --config: one per process
    check = "; ".join(f"import {m}; assert callable({m}.{f}), '{n}'" for n, m, f in scripts
                      if m.split(".")[-1] not in absl)
    assert subprocess.run([sys.executable, "-c", check], cwd=REPO).returncode == 0
    for name, module, func in scripts:  # absl entry points each define --config: one per process
        if module.split(".")[-1] in absl:
            code = f"import {module} as m; assert callable(m.{func})"
            assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0, name
    proc = run("minilm_jax.interop", "--help")
    assert proc.returncode == 0 and "export" in proc.stdout
    modules = {m.removesuffix(".__main__") for _, m, _ in scripts}
    assert set(TOOLS) <= modules, sorted(set(TOOLS) - modules)  # every tool has a console script


TOOLS = {  # every entry point that is not a --config run, and one of its own flags
    "minilm_jax.points": "points", "minilm_jax.bench": "--min_seconds",
    "minilm_jax.latency": "--batch_sizes", "minilm_jax.committee": "--combine",
    "minilm_jax.analysis.finetune_tables": "--out", "minilm_jax.finetune.bench": "--members",
    "minilm_jax.corpus": "train-tokenizer", "minilm_jax.corpus.bench": "--megabytes",
    "minilm_jax.interop": "export", "minilm_jax.tasks.bbc": "pretraining-text",
}


@pytest.mark.parametrize("module", sorted(TOOLS))
def test_every_tool_is_an_absl_program_with_help_and_one_line_usage_errors(module, capsys):
    """One CLI framework: each tool parses with absl's argparse_flags (absl's flags such as
    --verbosity work there too), its --help lists its own flags and --helpfull, and a usage
    mistake is one `error:` line with exit status 2."""
    import importlib

    from absl import flags

    loaded = importlib.import_module(module)
    main = getattr(loaded, "main", None) or importlib.import_module(module + ".__main__").main
    # A flag another module defined in this process (an entry point's --json, say) must not clash
    # with the tool's own option of that name.
    clash = "json" not in flags.FLAGS
    if clash:
        flags.DEFINE_string("json", None, "defined elsewhere in the process")
    try:
        check_tool(module, main, capsys)
    finally:
        if clash:
            delattr(flags.FLAGS, "json")


def check_tool(module, main, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and TOOLS[module] in out and "--helpfull" in out
    assert f"python -m {module}" in out  # the usage names the command a user types
    with pytest.raises(SystemExit) as done:
        main(["--no_such_option"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err


def test_a_tool_accepts_abseils_own_flags_and_reports_user_errors_in_one_line():
    proc = run("minilm_jax.points", "--verbosity=1", "E32-H32-I128-L1-A2")
    assert proc.returncode == 0 and "E32-H32-I128-L1-A2-V19010" in proc.stdout, proc.stderr
    proc = run("minilm_jax.points", "E32-H32-nonsense")
    assert proc.returncode == 2 and proc.stderr.startswith("error: malformed model point")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_points_help_is_not_an_error():
    proc = run("minilm_jax.points", "--help")
    assert proc.returncode == 0 and "python -m minilm_jax.points" in proc.stdout


def test_stderr_filter_drops_interleaved_closed_loop_tracebacks_and_keeps_the_rest():
    import io

    from minilm_jax.cli import ClosedLoopNoiseFilter

    sink = io.StringIO()
    err = ClosedLoopNoiseFilter(sink)
    frame = '  File "base_events.py", line 519, in _check_closed\n'
    noise = "RuntimeError: Event loop is closed\n"
    # Two threads' tracebacks, interleaved line by line, both noise: nothing comes through.
    err.write("Traceback (most recent call last):\n" + frame)
    err.write("Traceback (most recent call last):\n")
    err.flush()  # another thread's flush does not release a held traceback
    err.write(frame + noise + noise)
    assert sink.getvalue() == ""
    err.write("\r 40%|####      | 4/10")  # a progress bar redraw passes at once
    assert sink.getvalue() == "\r 40%|####      | 4/10"
    # A real traceback interleaved with noise comes through whole.
    err.write("\nTraceback (most recent call last):\n" + frame)
    err.write("Traceback (most recent call last):\n" + frame + noise + "ValueError: real\n")
    err.write("Traceback (most recent call last):\n" + frame)  # no chained exception: released
    assert "ValueError: real" in sink.getvalue() and sink.getvalue().count("Traceback") == 2
    err._release()  # at exit, a traceback cut off early is shown, not lost
    assert sink.getvalue().count("Traceback") == 3


def test_stderr_filter_holds_chained_noise_and_goes_quiet_after_the_error_line():
    import io

    from minilm_jax.cli import ClosedLoopNoiseFilter

    sink = io.StringIO()
    err = ClosedLoopNoiseFilter(sink)
    frame = '  File "base_events.py", line 519, in _check_closed\n'
    noise = "RuntimeError: Event loop is closed\n"
    # A chained traceback whose last exception is the noise: its middle lines end nothing.
    err.write("Traceback (most recent call last):\n" + frame + "OSError: [Errno 27] File too large\n"
              "\nDuring handling of the above exception, another exception occurred:\n\n"
              "Traceback (most recent call last):\n" + frame + "    raise RuntimeError('Event loop "
              "is closed')\n" + noise)
    assert sink.getvalue() == ""
    # Once the one error line is out, other threads' late tracebacks do not reach the user.
    err.write("Traceback (most recent call last):\n")
    raw = err.discard_held()
    raw.write("error: cannot save\n")
    err.write(frame + "    raise RuntimeError('Event loop is closed')\n" + noise)
    err._release()
    assert sink.getvalue() == "error: cannot save\n"


def test_an_encoder_named_by_import_path_pretrains_and_reloads_from_the_command_line(
        gated_cli_run, word_shards, tmp_path):
    """``--config.model.arch=module:Name``: no registry line, no edit of the package; the
    checkpoint records the path and reloading it builds the same class."""
    from test_pretrain import cli_args

    from minilm_jax.runs.pretrained import PretrainedRun

    root, proc = gated_cli_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    sys.path.insert(0, str(root))  # reading the run checks its recorded encoder code: importable
    try:
        run = PretrainedRun.open(root / "w", "latest")
        assert run.model.arch == "lab_encoders:GatedEncoder" and run.step == 40
        state = run.encoder_state()
    finally:
        sys.path.remove(str(root))
    assert "gate" in state  # the custom parameter was trained and saved
    bad = subprocess.run(cli_args(word_shards, tmp_path / "w2", steps=10) + [
        "--config.model.arch=lab_encoders:GatedEncoder"], cwd=REPO, env=cli_env(),
        capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: model.arch='lab_encoders:GatedEncoder': cannot import 'lab_encoders'"), bad.stderr
    assert not (tmp_path / "w2").exists()  # refused before anything was written
