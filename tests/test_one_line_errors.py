"""Every entry point refuses a bad input in one ``error:`` line on stderr, with no traceback,
nothing on stdout, and exit status 2: a user's encoder module that raises while it is imported
(pre-training, points, fine-tuning, a sweep's dry run, evals and export of a run recorded with it),
a variant refused for another field (no export note first), a variant's own field value it
cannot build (a ValueError of its constructor, or its ``check_fields`` hook, in points and
pre-training), repeated fine-tuning seeds under
cross-validation, and bench flags out of range. Each case fails in its validation, before anything
is trained or compiled; the commands run in parallel threads."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import xla_flags

REPO = Path(__file__).resolve().parents[1]

NAME_ERROR = "import os\n\n\nvalue = undefined_name + 1\n"  # raises on line 4
SYNTAX_ERROR = "class Broken:\n    def __init__(self:\n        pass\n"
NUMPY_ERROR = "import numpy as np\n\n\nnp.zeros(4).reshape(3)\n"  # raised inside numpy, line 4
IMPORTS_BROKEN = "import helper_broken\n"  # the error is in the helper, on its line 4
SHARE_EVERY = '''from minilm_jax.errors import UserError
from minilm_jax.model.encoder import TransformerEncoder


class ShareEveryEncoder(TransformerEncoder):
    config_fields = {"share_every": 1}

    def make_layers(self, cfg, init, rngs):  # one layer per group of share_every depths
        k = int(cfg.extra_value("share_every"))
        if cfg.num_layers % k:
            raise ValueError(f"share_every={k} must divide num_layers={cfg.num_layers}")
        groups = [self.layer_class(cfg, init, rngs) for _ in range(cfg.num_layers // k)]
        return [layer for layer in groups for _ in range(k)]


class CheckedEncoder(TransformerEncoder):  # refuses the value in its check_fields hook
    config_fields = {"share_every": 1}

    @classmethod
    def check_fields(cls, cfg):
        k = int(cfg.extra_value("share_every"))
        if cfg.num_layers % k:
            raise UserError(f"share_every={k} does not divide num_layers={cfg.num_layers}")
'''


def syntax_error(source: str) -> tuple[str, int]:
    """The message and line Python's compiler reports for ``source`` (the line's reference)."""
    try:
        compile(source, "x.py", "exec")
    except SyntaxError as err:
        return err.msg, int(err.lineno)
    raise AssertionError("source compiles")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def cases(tmp: Path) -> dict[str, tuple[list[str], str | tuple[str, ...]]]:
    """name -> (command, the piece or pieces the error line must hold, from the inputs)."""
    (tmp / "bad_name.py").write_text(NAME_ERROR)
    (tmp / "bad_syntax.py").write_text(SYNTAX_ERROR)
    (tmp / "bad_numpy.py").write_text(NUMPY_ERROR)
    (tmp / "helper_broken.py").write_text(NAME_ERROR)
    (tmp / "imports_broken.py").write_text(IMPORTS_BROKEN)
    (tmp / "share_every.py").write_text(SHARE_EVERY)
    raise_line = SHARE_EVERY.splitlines().index(
        '            raise ValueError(f"share_every={k} must divide num_layers={cfg.num_layers}")') + 1
    share_every = ("model.arch=share_every:ShareEveryEncoder (model.extra.share_every=3): "
                   f"share_every=3 must divide num_layers=4 (share_every.py:{raise_line})")
    name_line = NAME_ERROR.splitlines().index("value = undefined_name + 1") + 1
    name_error = (f"importing bad_name failed: NameError: name 'undefined_name' is not defined "
                  f"(bad_name.py:{name_line})")
    syntax_message, syntax_line = syntax_error(SYNTAX_ERROR)
    syntax = (f"importing bad_syntax failed: SyntaxError: {syntax_message} "
              f"(bad_syntax.py:{syntax_line})")
    labels = tmp / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([f"review {i} was {'good' if i % 3 else 'bad'}", "pos" if i % 3 else "neg"]
                         for i in range(60))
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece

    words = [f"the review {i} was {'good' if i % 3 else 'bad'} and {'long' if i % 2 else 'short'}"
             for i in range(300)]
    (tmp / "tok.model").write_bytes(train_sentencepiece(words, 40, "unigram"))
    # a pre-training run recorded with the variant whose module now raises on import
    from minilm_jax.model.sizes import resolve_point

    model = resolve_point("E32-H32-I128-L1-A2-V40").replace(arch="bad_name:Encoder")
    run = tmp / "run"
    run.mkdir()
    record = {f"model.{k}": v for k, v in model.to_dict().items()}
    record["model_code"] = {"bad_name": {"file": str(tmp / "bad_name.py"), "sha256": "0" * 64}}
    (run / "config.json").write_text(json.dumps(record))
    finetune = ["minilm_jax.finetune", "--config=finetune:table", f"--workdir={tmp / 'ft'}",
                f"--config.data.dir={labels}", f"--config.data.tokenizer={tmp / 'tok.model'}",
                "--config.init.mode=random"]
    arch = "--config.model.arch=bad_name:Encoder"
    return {
        "pretrain_name_error": (command("minilm_jax.pretrain", "--config=pretrain",
                                        f"--workdir={tmp / 'pre'}", arch), name_error),
        "pretrain_syntax_error": (command("minilm_jax.pretrain", "--config=pretrain",
                                          f"--workdir={tmp / 'pre'}",
                                          "--config.model.arch=bad_syntax:Encoder"), syntax),
        "pretrain_error_inside_numpy": (
            command("minilm_jax.pretrain", "--config=pretrain", f"--workdir={tmp / 'pre'}",
                    "--config.model.arch=bad_numpy:Encoder"),
            "importing bad_numpy failed: ValueError: cannot reshape array of size 4 into shape "
            f"(3,) (bad_numpy.py:{name_line})"),
        "pretrain_error_in_imported_helper": (
            command("minilm_jax.pretrain", "--config=pretrain", f"--workdir={tmp / 'pre'}",
                    "--config.model.arch=imports_broken:Encoder"),
            f"importing imports_broken failed: NameError: name 'undefined_name' is not defined "
            f"(helper_broken.py:{name_line})"),
        # a variant with no PyTorch twin, refused for another field: only the refusal is printed
        "pretrain_variant_refused": (
            command("minilm_jax.pretrain", "--config=pretrain:E32-H32-I128-L1-A2",
                    f"--workdir={tmp / 'pre'}",
                    "--config.model.arch=encoder_variants:GatedEmbeddingEncoder",
                    "--config.train.batch_size=0"), "train.batch_size=0: must be"),
        "points": (command("minilm_jax.points", "paper-1.25m", "--arch", "bad_name:Encoder"),
                   name_error),
        # a variant's own field value it cannot build: its ValueError, or its check_fields hook
        "points_variant_field_value": (
            command("minilm_jax.points", "E32-H32-I128-L4-A2-V40", "--arch",
                    "share_every:ShareEveryEncoder", "--extra", "share_every=3"), share_every),
        "pretrain_variant_field_value": (
            command("minilm_jax.pretrain", "--config=pretrain:E32-H32-I128-L4-A2",
                    f"--workdir={tmp / 'pre'}", "--config.model.arch=share_every:ShareEveryEncoder",
                    "--config.model.extra.share_every=3"), share_every),
        "points_variant_check_fields": (
            command("minilm_jax.points", "E32-H32-I128-L4-A2-V40", "--arch",
                    "share_every:CheckedEncoder", "--extra", "share_every=3"),
            "model.arch=share_every:CheckedEncoder (model.extra.share_every=3): share_every=3 "
            "does not divide num_layers=4"),
        "finetune": (command(*finetune, arch), name_error),
        "finetune_repeated_seeds_cv": (
            command(*finetune, "--config.data.cv_folds=3", "--config.train.seeds=0,0"),
            "train.seeds=(0, 0): must be distinct"),
        "sweep_dry_run": (command("minilm_jax.sweep", "--config=sweep:variant",
                                  f"--root={tmp / 'sweep'}", "--dry_run",
                                  "--config.grid_fields=('model.arch=roberta,bad_name:Encoder',)"),
                          name_error),
        "evals": (command("minilm_jax.evals", f"--workdir={run}", "--no_twin"), name_error),
        "interop_export": (command("minilm_jax.interop", "export", f"--workdir={run}",
                                   f"--out={tmp / 'export'}"), name_error),
        "bench_members_0": (command("minilm_jax.bench", "--members", "0"), "--members='0'"),
        "bench_members_negative": (command("minilm_jax.bench", "--members", "-2"),
                                   "--members='-2'"),
        "bench_members_not_counts": (command("minilm_jax.bench", "--members", "4,x"),
                                     "--members='4,x'"),
        "bench_members_both_without_members": (
            command("minilm_jax.bench", "--members_impl", "both"), "--members_impl=both"),
        "bench_every_number_out_of_range": (
            command("minilm_jax.bench", "--batch", "0", "--steps", "-1", "--min_seconds", "nan",
                    "--steps_per_dispatch", "0", "--sweep_limit", "-1", "--sweep_seeds", "0",
                    "--sweep_tokens", "-5", "--threads", "-1"),
            ("--batch=0", "--steps=-1", "--min_seconds=nan", "--steps_per_dispatch=0",
             "--sweep_limit=-1", "--sweep_seeds=0", "--sweep_tokens=-5.0", "--threads=-1")),
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, str]]:
    tmp = tmp_path_factory.mktemp("one_line")
    table = cases(tmp)
    assert sorted(table) == sorted(CASE_NAMES)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(tmp), str(REPO / "tests"), str(REPO)]),
           "XLA_FLAGS": xla_flags()}

    def run(item):
        name, (argv, piece) = item
        return name, (subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True,
                                     timeout=180), piece)

    with ThreadPoolExecutor(max_workers=4) as pool:
        result = dict(pool.map(run, table.items()))
    assert not any((tmp / folder).exists() for folder in ("pre", "ft", "sweep", "export"))
    return result


CASE_NAMES = [
    "pretrain_name_error", "pretrain_syntax_error", "pretrain_error_inside_numpy",
    "pretrain_error_in_imported_helper", "pretrain_variant_refused", "points",
    "points_variant_field_value", "pretrain_variant_field_value", "points_variant_check_fields",
    "finetune",
    "finetune_repeated_seeds_cv",
    "sweep_dry_run", "evals", "interop_export", "bench_members_0", "bench_members_negative",
    "bench_members_not_counts", "bench_members_both_without_members",
    "bench_every_number_out_of_range"]


# What a CUDA build of jaxlib's plugin prints from C++ when it loads on a machine without a GPU
# (before Python runs any of the command's code): not the command's output.
CUDA_PLUGIN_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is "
                               r"called are written to STDERR|I\d{4} .* cudart_stub\.cc:\d+\] "
                               r"Could not find cuda drivers on your machine, GPU will not be "
                               r"used\.)$")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_one_error_line_and_status_2(outcomes, name):
    proc, piece = outcomes[name]
    lines = [line for line in proc.stderr.splitlines() if not CUDA_PLUGIN_NOISE.match(line)]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == "", proc.stdout[-2000:]  # nothing before the refusal (no notes)
    for part in (piece,) if isinstance(piece, str) else piece:
        assert part in lines[0], (part, lines[0])
