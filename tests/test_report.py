"""``python -m minilm_jax.report`` end to end on a small synthetic sweep written here."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minilm_jax import report
from minilm_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
T, V, BATCH = 128, 19010, 256
TASKS = ("sst2", "cola", "rte")


def sizes(point):
    e, h, i, l, a = (int(part[1:]) for part in point.split("-")[:5])
    return e, h, i, l, a


def params(point):
    """SPEC A3: embedding E(V + 134); non-embedding (EH + 3H) + L(4H² + 2HI + 9H + I) + head."""
    e, h, i, l, _ = sizes(point)
    non_embedding = (e * h + 3 * h) + l * (4 * h * h + 2 * h * i + 9 * h + i) + (h * h + 3 * h + h * V + V)
    return e * (V + 134) + non_embedding, non_embedding


def flops_per_sequence(point):
    """SPEC A5, the paper's formula (forward x 3)."""
    e, h, i, l, a = sizes(point)
    forward = (2 * T * V * e + 2 * T * e * h + l * (6 * T * h * h + 2 * T * T * h + 3 * a * T * T)
               + l * 4 * T * h * i + 2 * T * h * V)
    return 3 * forward


def loss_at(point, step):
    """A plausible learning curve. Hidden size lowers the loss most; depth helps up to L = 4 and
    hurts beyond (0.1 / L + 0.01 L)."""
    e, h, i, l, _ = sizes(point)
    return (1.0 + 2.2 * (32 / h) ** 0.5 + 0.1 / l + 0.01 * l + 0.2 * (128 / i) ** 0.3
            + 0.1 * (32 / e) ** 0.3 + 2.5 * (step / 1000) ** -0.5)


def run_rows(run, point, group, base="small", factor="", value=None, steps=range(1000, 9000, 1000)):
    total, non_embedding = params(point)
    common = dict(run=run, workdir=f"runs/sweep/{run}", point=point, group=group, base=base,
                  factor=factor, factor_value=value, params_total=total,
                  params_non_embedding=non_embedding)
    per_seq = flops_per_sequence(point)
    rows = []
    for step in steps:
        loss = loss_at(point, step)
        rows.append({**common, "kind": "validation", "step": step, "sequences_seen": step * BATCH,
                     "flops_paper": step * BATCH * per_seq,
                     "flops_complete": step * BATCH * per_seq * 1.3, "loss": loss,
                     "perplexity": math.exp(loss)})
    last = rows[-1]
    rows.append({**last, "kind": "test", "loss": last["loss"] + 0.01,
                 "perplexity": math.exp(last["loss"] + 0.01)})
    return rows


def downstream_rows(run_rows_of_run, seeds=(0, 1)):
    last = run_rows_of_run[-2]
    rows = []
    for k, task in enumerate(TASKS):
        for init, bonus in (("pretrained", 60.0 - 4.0 * last["loss"]), ("random", 30.0 + k)):
            for seed in seeds:
                rows.append({key: last[key] for key in ("run", "workdir", "point", "group", "base",
                                                        "factor", "factor_value", "params_total",
                                                        "params_non_embedding", "flops_paper",
                                                        "flops_complete")}
                            | {"kind": "downstream", "task": task, "init": init,
                               "score": bonus + 5 * k + seed,
                               "metrics": {"accuracy": (bonus + 5 * k + seed) / 100},
                               "final_validation_perplexity":
                                   last["perplexity"] if init == "pretrained" else None})
    return rows


def sweep_rows():
    """A small base, hidden-size and layer sweeps, one iso-FLOP and one iso-parameter pair,
    downstream rows (both inits, two seeds) for four runs."""
    runs = [run_rows("small", "E32-H32-I128-L2-A2-V19010", "base")]
    for h in (16, 64, 128):
        runs.append(run_rows(f"small-h{h}", f"E32-H{h}-I128-L2-A2-V19010", "ofat:model.hidden_dim",
                             factor="model.hidden_dim", value=h))
    for layers in (1, 4, 8):
        runs.append(run_rows(f"small-l{layers}", f"E32-H32-I128-L{layers}-A2-V19010",
                             "ofat:model.num_layers", factor="model.num_layers", value=layers))
    runs.append(run_rows("iso1-deep", "E32-H32-I128-L2-A2-V19010", "iso_flop:g1", base=""))
    runs.append(run_rows("iso1-wide", "E32-H32-I256-L1-A2-V19010", "iso_flop:g1", base=""))
    runs.append(run_rows("iso3-deep", "E64-H32-I128-L8-A1-V19010", "iso_param:g3", base=""))
    runs.append(run_rows("iso3-wide", "E64-H32-I256-L4-A1-V19010", "iso_param:g3", base=""))
    rows = [row for run in runs for row in run]
    for run in (runs[0], runs[2], runs[3], runs[7], runs[8]):
        rows += downstream_rows(run)
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(results, out, *extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "minilm_jax.report", f"--results={results}",
                           f"--out={out}", "--bootstrap=50", *extra], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=240)


@pytest.fixture(scope="module")
def good_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = write_jsonl(root / "results.jsonl", sweep_rows())
    out = root / "report"
    proc = cli(results, out)
    assert proc.returncode == 0, proc.stderr
    return root, results, out


def test_report_has_sections_tables_and_plots(good_report):
    _, _, out = good_report
    text = (out / "report.md").read_text()
    for heading in ("## Summary", "## 1. Validation loss vs training compute", "### FLOPs: paper",
                    "## 2. Cost-effectiveness", "## 3. Depth vs width", "## 4. Downstream",
                    "## 5. Pre-training perplexity vs downstream score", "## Appendix: runs"):
        assert heading in text
    assert "| fit | segment | FLOPs range | a | b | R² (log) | R² (linear) | points | BIC |" in text
    assert "| one line | all frontier points |" in text
    assert "| paper (SPEC A5) |" in text
    assert "`runs/sweep/small-h64`" in text  # tables name runs and their workdirs
    assert "Pearson r =" in text
    pngs = ["loss_vs_flops_paper.png", "loss_vs_flops_complete.png", "icer.png",
            "downstream.png", "perplexity_vs_downstream.png"]
    for name in pngs:
        assert f"]({name})" in text
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in out.iterdir()) == sorted(pngs + ["report.md"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report.")]


def test_report_numbers_match_the_synthetic_sweep(good_report):
    _, _, out = good_report
    text = (out / "report.md").read_text()
    # Planted in loss_at: hidden size is the more cost-effective factor (median ICER ~1.5e13
    # FLOPs per perplexity point vs ~3.7e13 for layers), and going from 4 to 8 layers hurts.
    assert "| 1 | `small` | `model.hidden_dim` | 3 | 3 |" in text
    assert "| 2 | `small` | `model.num_layers` | 3 | 2 |" in text
    assert "Most cost-effective factor (lowest median ICER): `model.hidden_dim`" in text
    step = next(line for line in text.splitlines() if line.startswith("| `model.num_layers` | 4 → 8"))
    assert step.endswith("| ∞ | dominated |")
    # The iso-FLOP pair is reported with both members and a perplexity winner.
    assert "| `iso_flop:g1` | `iso1-deep` | `runs/sweep/iso1-deep` |" in text
    assert "`iso_flop:g1`: lowest perplexity" in text
    # Downstream table: small / sst2 pools its two seed rows (x + 0, x + 1): mean ± sample std, n = 2,
    # and a gap paired by seed against the random rows.
    line = next(ln for ln in text.splitlines() if ln.startswith("| `small` | `sst2` |"))
    assert "± 0.7 (n = 2)" in line and "paired t" in line


def _without_source_line(text):
    """report.md without its Source line (which names the file and its hash)."""
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("Source: "))


def test_doubled_results_count_each_run_once(good_report, tmp_path, capsys):
    """A results.jsonl whose every row is written twice reports exactly the numbers of the plain
    file (each run counted once), with a warning naming the file and the rows dropped (on stderr;
    built in this process, with the command's options: the command itself is run above)."""
    _, _, out = good_report
    rows = sweep_rows()
    doubled = write_jsonl(tmp_path / "results.jsonl", rows + rows)
    capsys.readouterr()
    report.build_report(doubled, tmp_path / "report", report.ReportOptions(bootstrap=50))
    warning = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert warning == [f"warning: {doubled}: {len(rows)} duplicate rows dropped (each identical "
                       f"to an earlier line, e.g. line {len(rows) + 1} repeats line 1); each "
                       "row counted once"]
    plain, text = (out / "report.md").read_text(), (tmp_path / "report" / "report.md").read_text()
    assert f"{len(rows)} rows" in text and f"{len(rows)} duplicate rows dropped" in text
    assert _without_source_line(text) == _without_source_line(plain)
    frontier = next(ln for ln in plain.splitlines() if ln.startswith("Frontier points ("))
    assert frontier in text  # the frontier counts every validation point once


def test_conflicting_rows_exit_2_naming_the_file_and_both_lines(good_report, tmp_path):
    """Two rows of one run and step with different losses are mixed results: never averaged."""
    _, _, out = good_report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = sweep_rows()
    rerun = {**rows[2], "loss": rows[2]["loss"] + 0.5, "perplexity": rows[2]["perplexity"] * 1.6}
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows + [rerun])
    with pytest.raises(UserError) as err:
        report.build_report(mixed, out, report.ReportOptions(bootstrap=5))
    message = str(err.value)
    assert f"{mixed}: lines 3 and {len(rows) + 1}" in message
    assert "run 'small'" in message and "step 3000" in message and "loss, perplexity" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_malformed_line_exits_2_and_keeps_the_good_report(good_report):
    root, results, out = good_report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = sweep_rows()
    del rows[4]["loss"]
    bad = write_jsonl(root / "bad.jsonl", rows)
    proc = cli(bad, out)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bad.jsonl:5: missing field 'loss'" in last
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failure_while_writing_keeps_the_good_report(good_report, tmp_path, monkeypatch):
    _, results, out = good_report
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def quick_plot(analyses, curve, path):
        path.write_bytes(b"partial")  # a file already written when the failure comes

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    from minilm_jax.report import publish
    monkeypatch.setattr(publish, "plot_loss_vs_flops", quick_plot)
    monkeypatch.setattr(publish, "plot_icer", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report.build_report(results, out, report.ReportOptions(bootstrap=5))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report.")]


# A report command that stops once its staging directory is complete, says so on stdout and waits
# on stdin: the test kills it there.
_STOPPED_REPORT = """
import runpy, sys
from minilm_jax.report import publish
real = publish.write_report
def write_report(*args, **kwargs):
    path = real(*args, **kwargs)
    print("staged", flush=True)
    sys.stdin.readline()
    return path
publish.write_report = write_report
sys.argv = ["minilm-report", *sys.argv[1:]]
runpy.run_module("minilm_jax.report", run_name="__main__", alter_sys=True)
"""


def test_killed_report_is_cleaned_up_by_the_next_run(good_report, tmp_path):
    """SIGKILL leaves the staging directory behind; the next report into the same directory removes
    it, but never the staging directory of a report that is still being written."""
    import signal

    _, results, good = good_report
    out = tmp_path / "report"
    child = subprocess.Popen([sys.executable, "-c", _STOPPED_REPORT, f"--results={results}",
                              f"--out={out}", "--bootstrap=0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        assert child.stdout.readline().strip() == "staged"
        (live,) = [p for p in tmp_path.iterdir() if p.name.startswith(".report.")]
        report.build_report(results, out, report.ReportOptions(bootstrap=0))
        assert live.is_dir()  # a report still being written keeps its staging directory
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and (live / "report.md").is_file()
    report.build_report(results, out, report.ReportOptions(bootstrap=50))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (out / "report.md").read_text() == (good / "report.md").read_text()


def test_missing_file_and_foreign_directory_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="results file not found"):
        report.build_report(tmp_path / "missing.jsonl", tmp_path / "out")
    results = write_jsonl(tmp_path / "r.jsonl", sweep_rows()[:3])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="refusing to replace"):
        report.build_report(results, tmp_path / "notes", report.ReportOptions(bootstrap=0))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    with pytest.raises(UserError, match="--flops must be one of paper, complete"):
        report.build_report(results, tmp_path / "out", report.ReportOptions(flops="fast"))


def test_degenerate_sweep_reports_what_it_cannot_do(tmp_path):
    rows = (run_rows("a", "E32-H32-I128-L1-A2-V19010", "", base="", steps=(1000, 2000))
            + run_rows("b", "E32-H64-I128-L1-A2-V19010", "", base="", steps=(1000, 2000)))
    results = write_jsonl(tmp_path / "r.jsonl", rows)
    path = report.build_report(results, tmp_path / "out",
                               report.ReportOptions(bins_per_decade=11, bootstrap=10))
    text = path.read_text()
    assert "a break search needs at least 6" in text
    assert "No one-factor-at-a-time runs" in text
    assert "No iso-FLOP or iso-parameter groups" in text
    assert "No downstream rows in the results: section skipped." in text
    assert "No pre-trained downstream rows: section skipped." in text
    assert (tmp_path / "out" / "loss_vs_flops_paper.png").stat().st_size > 0
