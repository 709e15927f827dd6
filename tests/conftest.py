"""Test setup: 8 fake CPU devices (for mesh tests), the shared development data, small fixtures."""

import os
from pathlib import Path

# XLA flags for the suite and every command it starts (MINILM_TEST_XLA_FLAGS; "" for XLA's default
# code generation). The suite is compile-bound, so by default XLA compiles cheaply: LLVM opt level 0
# (~30% less CPU on a compile-bound test), the CPU backend's older elemental emitters instead of its
# fusion emitters (tests/test_pretrain.py + tests/test_model.py in process, cold cache: 105 -> 79
# CPU-seconds), and no splitting of a module for parallel LLVM code generation (~7% less at opt
# level 0; the other xdist worker has the second core). What they change is code generation, so
# the last float32 digits; the tests compare floats with tolerances derived from the arithmetic,
# which another processor's code needs anyway. The one claim that needs more, a lax.map population
# equals its separate runs bit for bit (tests/test_population.py), does not hold at opt level 0:
# its two sides run in commands started with ``exact_xla_flags``, under which it holds.
# XLA aborts on a flag it does not know: these exist in the jaxlib versions pyproject.toml allows.
FAST_COMPILE = os.environ.get("MINILM_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0 "
                              "--xla_llvm_disable_expensive_passes=true "
                              "--xla_cpu_use_fusion_emitters=false "
                              "--xla_cpu_parallel_codegen_split_count=1")


def _with_devices(flags: str, devices: int | None) -> str:
    """``flags`` and ``devices`` fake CPU devices (None: XLA's default, one)."""
    fake = f"--xla_force_host_platform_device_count={devices}" if devices else ""
    return (fake + " " + flags).strip()


def xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS for a test's process or a command it starts: the fast-compile flags, and
    ``devices`` fake CPU devices (None: XLA's default, one)."""
    return _with_devices(FAST_COMPILE, devices)


# XLA flags for the commands whose results a test compares bit for bit (MINILM_TEST_EXACT_XLA_FLAGS;
# "" for XLA's default code generation): LLVM opt level 1 with the elemental emitters and one
# code-generation split. A lax.map population equals its separate runs bit for bit there, as at
# XLA's default (opt level 2, the fusion emitters), and its fixture's command compiles in ~30% less
# CPU (tests/test_population.py's ``trained``: 53 against 76 CPU-seconds); at opt level 0 the
# equality breaks.
EXACT_COMPILE = os.environ.get("MINILM_TEST_EXACT_XLA_FLAGS", "--xla_backend_optimization_level=1 "
                               "--xla_cpu_use_fusion_emitters=false "
                               "--xla_cpu_parallel_codegen_split_count=1")


def exact_xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS for a command whose result a test compares bit for bit with a claim that needs
    more than the suite's fast compile (``EXACT_COMPILE``), and ``devices`` fake CPU devices."""
    return _with_devices(EXACT_COMPILE, devices)


# Runs a function of a test module in a command (argv: the module, the function's name, then its
# path arguments): run_in_command.
FUNCTION_COMMAND = r"""
import importlib, sys
from pathlib import Path
sys.path.insert(0, "tests")
module, name, *paths = sys.argv[1:]
getattr(importlib.import_module(module), name)(*map(Path, paths))
"""


def run_in_command(function, *paths: Path, xla_flags: str) -> None:
    """Runs ``function(*paths)`` (a function of a test module) in a command of its own with
    ``xla_flags``: where a test compares bit for bit under flags the suite's processes do not
    compile with, or where its runs are execution-bound and optimized code is cheaper than the
    suite's fast compile (exact_xla_flags)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FUNCTION_COMMAND, function.__module__,
                          function.__name__, *map(str, paths)],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": xla_flags})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def slow_pretrain_script(trainer: str, after: int = 4, command: str = "minilm_jax.pretrain") -> str:
    """A ``python -c`` script that runs ``command`` (``minilm_jax.pretrain``, or the sweep that
    pre-trains; its arguments follow the script) with ``trainer``'s (``module:Class``) dispatch
    sleeping 1 s before each dispatch after the ``after``-th (checkpoint ``after`` is saved after
    it), so that a SIGKILL or a move made when that checkpoint appears lands mid-run however loaded
    the machine is."""
    module, name = trainer.split(":")
    return f"""
import runpy, sys, time
from {module} import {name} as _trainer
_dispatch, _count = _trainer.dispatch, [0]
def dispatch(self, state, host_batch):
    _count[0] += 1
    if _count[0] > {after}:
        time.sleep(1.0)
    return _dispatch(self, state, host_batch)
_trainer.dispatch = dispatch
sys.argv[0] = "{command}"
runpy.run_module("{command}", run_name="__main__", alter_sys=True)
"""


os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One thread runs each process's programs (the CPU client's intra-op pool; XLA reads PJRT_NPROC,
# by default one thread a core): the xdist workers (one a core and one more, launch/test.sh) and
# their commands already keep every core busy, and a second thread in every process only waits
# and spins against the other workers'.
# Measured with a warm cache, -n 2 (study B, the main job, the variant study: 216 -> 196-198
# CPU-seconds, 145 -> 133-134 s; the study B sweep alone: its XLA threads 19.7 -> 12.8). The
# thread count moves the last float32 digits of a matmul (Eigen splits its sums by threads), so
# every process of the suite runs with the same (bit-for-bit comparisons are between them) and
# the tolerances cover the rest; ``MINILM_TEST_NPROC`` sets another count.
os.environ.setdefault("PJRT_NPROC", os.environ.get("MINILM_TEST_NPROC", "1"))
# One persistent compilation cache for the whole test run, shared by the xdist workers and every
# command a test starts: many tests compile the same small programs (tests/test_pretrain.py alone:
# 216 s without, 167 s with an empty cache, 88 s with a filled one). The size cap turns on JAX's
# file lock, so no process reads an entry another is still writing.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".cache" / "jax-tests"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
# Programs compiling for 0.2 s or more are cached (JAX's default is 1 s: at opt level 0 few do).
# Not every program: the size-capped cache reads every entry's time stamp on each write, under its
# lock, and caching every program gave 2,661 entries (575 of them eager slices) and 0.17 s per write
# at the end. Measured from clean clones, 2 cores, nothing else running: every program, pytest
# 15 min 27 s and 29 CPU-minutes; 0.2 s and over (420 entries), 12 min 44 s and 25.4 CPU-minutes.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402

from minilm_jax.cli import tune_collector  # noqa: E402

# The workers trace and lower programs in process as the commands do: the commands' garbage
# collector thresholds (minilm_jax.cli.COLLECTOR_THRESHOLDS), which they set themselves.
tune_collector()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MINILM_SHARED_DATA", REPO.parent / "shared" / "data"))


# The files holding the longest tests run first, the most CPU-seconds first (launch/test.sh:
# ``--dist loadfile --no-loadscope-reorder`` keeps this order; each worker takes the next file as
# it runs out), so no worker is left alone with one at the end. Measured in four whole runs of the
# suite on 2026-11-28 (d259a25 and fc8c5c6, two and three workers; MINILM_TEST_CPU_LOG, mean
# CPU-seconds per file): test_population.py 175, test_sweep_workers.py 137, test_gpu_compile.py
# 124, test_variant_hooks.py 121, test_finetune.py 99, study B 95, the device check 87, the main
# job (test_sweep.py) 83, test_pretrain.py 78, test_run_identity.py 68, the variant study 58, the
# own-data table 55, test_multihost.py 52, test_multihost_finetune.py 51,
# test_finetune_population.py 50, test_interop_export_models.py 49, test_aot.py 37; the rest 33
# and less.
LONG_FILES_FIRST = ("test_population.py", "test_sweep_workers.py", "test_gpu_compile.py",
                    "test_variant_hooks.py", "test_finetune.py", "test_study_b.py",
                    "test_device_check.py", "test_sweep.py", "test_pretrain.py",
                    "test_run_identity.py", "test_variant_study.py", "test_table_task.py",
                    "test_multihost.py", "test_multihost_finetune.py",
                    "test_finetune_population.py", "test_interop_export_models.py", "test_aot.py",
                    "test_output_layer.py", "test_model_variants.py", "test_faults.py",
                    "test_fused_layer.py", "test_finetune_selection.py", "test_bench.py",
                    "test_interop_workdir.py", "test_effective_config.py", "test_gcs_workdir.py",
                    "test_interruptions.py", "test_zero_shot_in_training.py",
                    "test_one_line_errors.py", "test_interop_twin_check.py", "test_model.py",
                    "test_sweep_zero_shot.py")


def pytest_sessionstart(session):
    """Drop compilation-cache entries left half-written (a ``-cache`` file without its ``-atime``
    file: a command killed between JAX's two writes, as the kill tests do). JAX's size-capped cache
    reads every entry's ``-atime`` on each write, so one such entry makes every later write in
    every process warn on stderr, and a command's output is no longer its one error line. Done once,
    in the process that starts the workers."""
    if hasattr(session.config, "workerinput"):
        return
    cache = Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    for entry in cache.glob("*-cache") if cache.is_dir() else ():
        if not entry.with_name(entry.name.removesuffix("-cache") + "-atime").exists():
            entry.unlink(missing_ok=True)


def worker_count() -> int:
    """xdist workers for ``-n auto`` (launch/test.sh): ``MINILM_TEST_WORKERS``, else one a core
    this process may use and one more (each process runs its programs on one thread, and a worker
    waiting on a command, a file or a claim would leave its core idle: docs/testing_log.md), at most
    one per 2 GiB of memory (the main job's test, pytest and its commands, peaks at ~2 GiB)."""
    asked = os.environ.get("MINILM_TEST_WORKERS")
    if asked:
        return int(asked)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 30
    return max(1, min(cores + 1, gib // 2))


@pytest.hookimpl(optionalhook=True)  # pytest -p no:xdist has no such hook to validate
def pytest_xdist_auto_num_workers(config):
    return worker_count()


# Every test's time limit (pytest.ini's, or a test's own @pytest.mark.timeout) times this factor:
# the limits are set for 2 free cores; a machine shared with other work may need more.
TIMEOUT_SCALE = float(os.environ.get("MINILM_TEST_TIMEOUT_SCALE", "1"))


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
    if TIMEOUT_SCALE != 1:
        default = float(config.getini("timeout") or 0)
        for item in items:
            marker = item.get_closest_marker("timeout")
            limit = (marker.args[0] if marker.args else marker.kwargs["timeout"]) if marker \
                else default
            item.add_marker(pytest.mark.timeout(limit * TIMEOUT_SCALE), append=False)


CPU_LOG = os.environ.get("MINILM_TEST_CPU_LOG")  # a JSONL file: each test's wall and CPU seconds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With MINILM_TEST_CPU_LOG set, append each test's wall time and the CPU time of its process
    and the commands it waited for: a test whose wall time far exceeds its CPU time waits on
    something other than work."""
    if not CPU_LOG:
        yield
        return
    import json
    import resource
    import time

    def cpu() -> float:
        own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall0, cpu0 = time.monotonic(), cpu()
    yield
    row = {"test": item.nodeid, "wall": time.monotonic() - wall0, "cpu": cpu() - cpu0,
           "worker": os.environ.get("PYTEST_XDIST_WORKER", ""), "end": time.time()}
    with open(CPU_LOG, "a") as f:
        f.write(json.dumps(row) + "\n")


class RecordingWriter:
    """A metrics writer (``write(step, split, values)``) that keeps every row it is given, for
    tests that check what a trainer logs without files."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, dict]] = []

    def write(self, step: int, split: str, values: dict) -> None:
        self.rows.append((step, split, values))


def never_built():
    """An initialiser a test gives a run that must restore its state, not build it."""
    raise AssertionError("the run's initial state was built")


def shared_path(*parts: str) -> Path:
    """A path under the shared development data; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not available: {path}")
    return path


def float32_tolerance(scale: float, terms: int, paths: int = 2) -> float:
    """Absolute tolerance for two float32 computations of one quantity that add ``terms`` values
    of magnitude up to ``scale`` in different orders (another chunking, another processor's XLA
    code). Each addition rounds by up to eps/2 of the running sum; those errors behave like a
    random walk, so they grow as sqrt(terms); ``paths`` independent computations add theirs, and a
    factor 8 covers the tails. Derived from the arithmetic, never from one machine's digits."""
    import math

    import numpy as np

    return paths * 8 * (float(np.finfo(np.float32).eps) / 2) * math.sqrt(terms) * scale


def trajectory_tolerance(scale: float, terms: int, steps: int, paths: int = 2) -> float:
    """Absolute tolerance for a quantity of magnitude ``scale`` (a loss, logits) after ``steps``
    optimizer steps of two float32 trainings that differ only in the order of their sums (another
    mesh or process count, vmap vs one by one, another chunking or padding; another processor's
    XLA code). Each step's forward pass and gradients carry a fresh rounding error of relative size
    ``float32_tolerance(1, terms, paths)`` (``terms``: the step's reductions, e.g. the token
    positions a weight's gradient sums over plus the layers' widths and the vocabulary); the
    parameters carry every earlier step's error, and over the tens of steps tests train (stable
    learning rates, far from chaotic growth) those add at most linearly: ``steps`` times one
    step's. With a step's terms in the thousands that is ~4e-5 relative per step, so a bound for
    up to ~60 steps stays below the 1e-2 relative a real bug moves losses or logits by (a wrong
    mask, a dropped or repeated batch, a mis-scaled gradient); tests state the margin they keep."""
    return steps * float32_tolerance(scale, terms, paths)


def adam_drift_bound(lr_sum: float, b1: float, b2: float) -> float:
    """How far apart one parameter coordinate can drift in two Adam(W) runs from the same start,
    whatever their gradients: a step moves a coordinate by at most lr_t * max(1, (1 - b1) /
    sqrt(1 - b2)) (Kingma & Ba 2015, section 2.1; AdamW's decay adds lr_t * wd * |theta|, far
    smaller here), so the two differ by at most twice that summed over the steps (``lr_sum``:
    sum of lr_t, at most steps x peak). Rounding alone can use this bound up: Adam normalises
    each coordinate's gradient, so a gradient that is zero in exact arithmetic (the attention key
    bias: softmax ignores a shift shared by all keys) takes steps of up to lr from its rounding
    noise, and a gradient crossing zero near Adam's eps can flip an update. Compare parameters
    coordinate by coordinate with this bound, and in aggregate with ``trajectory_tolerance``."""
    import math

    return 2 * lr_sum * max(1.0, (1 - b1) / math.sqrt(1 - b2))


def near_tie_share(logits, tol: float):
    """Per row of ``logits`` [..., examples, classes], the percentage of examples whose top two
    logits lie within 2 ``tol``: the most an accuracy (a count of argmaxes) can move between two
    computations whose logits agree within ``tol`` (each of the two may move by ``tol``)."""
    import numpy as np

    top2 = np.sort(np.asarray(logits), axis=-1)[..., -2:]
    return 100.0 * np.mean(top2[..., 1] - top2[..., 0] <= 2 * tol, axis=-1)


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture(autouse=True)
def _no_program_kept_across_a_patch(request):
    """The programs and model shapes a process keeps (``pretrain_program``, ``finetune_program``,
    a checkpoint's and an encoder's shapes) are found by what they are built from, which a
    monkeypatched function is not: a test that patches forgets them before it starts and once its
    patches are undone, so no test is handed one built from another test's patched code."""
    if "monkeypatch" not in request.fixturenames:
        yield
        return
    from minilm_jax.finetune import programs as finetune_programs
    from minilm_jax.model import tree_check
    from minilm_jax.train import checkpoint
    from minilm_jax.train import program as pretrain_programs

    forget = (pretrain_programs._BUILT.clear, finetune_programs._BUILT.clear,
              tree_check._encoder_shapes.cache_clear, checkpoint._host_shapes.cache_clear)
    for clear in forget:
        clear()
    yield
    for clear in forget:
        clear()


def build_word_shards(out_dir: Path, *, vocab_size: int = 500, seq_len: int = 64,
                      splits=(("train", 600), ("validation", 100), ("test", 100))) -> Path:
    """Token shards from real text (WikiText-2 validation): a word-level tokenizer fit in the test
    (the ``vocab_size - 5`` most frequent words; rarer words -> <unk>=3), RoBERTa specials."""
    import collections

    import numpy as np

    from minilm_jax.data.shards import TokenizerInfo, write_shards

    text = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.split() for line in text.splitlines() if len(line.split()) >= 12]
    counts = collections.Counter(w for line in lines for w in line)
    ids = {w: i + 5 for i, (w, _) in enumerate(counts.most_common(vocab_size - 5))}
    rows = []
    for line in lines:
        body = [ids.get(w, 3) for w in line][: seq_len - 2]
        row = [0] + body + [2]
        rows.append(row + [1] * (seq_len - len(row)))
    array = np.asarray(rows, np.int32)
    out, start = {}, 0
    for name, n in splits:
        out[name] = array[start:start + n]
        start += n
    write_shards(out_dir, out, pad_id=1, tokenizer=TokenizerInfo(sha256="word-level-test",
                                                                  vocab_size=vocab_size))
    return out_dir


def write_line_shards(out_dir: Path, tokenizer, lines: list[str], seq_len: int) -> Path:
    """One padded row per line (``<s>`` + its first tokens + ``</s>``) of a SentencePiece
    tokenizer's ids; the last 200 rows are validation (100) and test (100)."""
    import numpy as np

    from minilm_jax.data.shards import write_shards

    rows = []
    for ids in tokenizer.encode_batch(lines):
        row = [tokenizer.bos_id] + ids[: seq_len - 2] + [tokenizer.eos_id]
        rows.append(row + [tokenizer.pad_id] * (seq_len - len(row)))
    array = np.asarray(rows, np.int32)
    write_shards(out_dir, {"train": array[:-200], "validation": array[-200:-100],
                           "test": array[-100:]}, pad_id=tokenizer.pad_id, tokenizer=tokenizer.info)
    return out_dir


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test session, shared by the xdist workers
    (under the temporary folder their own ones sit in, made for this session) behind a file
    lock: the worker that comes first builds it, the others wait and read it. A build that
    failed halfway is started again. Tests only read what is in it."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"built-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def word_shards(tmp_path_factory):
    return build_word_shards(tmp_path_factory.mktemp("shards"))


FINETUNE_SEQ = 64  # the fine-tuning start's sequence length (``pretrained``)
FINETUNE_POINT = "E32-H32-I64-L1-A2-V1010"


def build_pretrained(root: Path) -> None:
    """A SentencePiece tokenizer (1,000 pieces) trained on real text (WikiText-2 and AG News),
    shards of WikiText-2 and a 30-step pre-training run of a tiny model on them, under ``root``."""
    from minilm_jax.configs.pretrain import get_config as pretrain_config
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer
    from minilm_jax.train.pretrainer import Pretrainer

    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12]
    news = shared_path("ag_news", "train.csv").read_text(encoding="utf-8").splitlines()
    tok_path = root / "tok.model"
    tok_path.write_bytes(train_sentencepiece(lines + news, 1000, "bpe"))
    write_line_shards(root / "shards", load_tokenizer(tok_path), lines, FINETUNE_SEQ)
    config = pretrain_config(FINETUNE_POINT)
    config.model.max_len = FINETUNE_SEQ
    config.data.shards = str(root / "shards")
    config.train.num_steps = 30
    config.train.batch_size = 32
    config.train.progress = False
    config.eval.every_steps = 15
    config.eval.batch_size = 64
    config.checkpoint.every_steps = 15
    config.mesh.data = 1  # one device: 8 fake CPU devices cost 40% more CPU for the same model
    Pretrainer(config, root / "pre").run()


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """The fine-tuning tests' start (``build_pretrained``), built once per session and read by
    tests/test_finetune.py, test_finetune_population.py and test_population.py: its tokenizer,
    shards and pre-training run. Tests copy what they change."""
    shared_path("wikitext2", "tokenized", "wiki.valid.tokens")
    shared_path("ag_news", "train.csv")
    root = built_once(tmp_path_factory, "pretrained", build_pretrained)
    return {"root": root, "tokenizer": root / "tok.model", "pre": root / "pre"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch on one thread for a module's small forward passes: its second OpenMP thread
    spin-waits between them, which took 10x the CPU time of the passes themselves (0.6 s -> 8 s
    per rule in tests/test_minimal_pairs_hf.py on a loaded 2-core machine). Results move only by
    the order of float32 sums, which the tolerances allow. Skips where torch is absent."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ZORRO_DEV_PARADIGM = "agreement_subject_verb-across_relative_clause"


@pytest.fixture(scope="session")
def zorro_shards(tmp_path_factory) -> Path:
    """Shards of WikiText-2 with a 600-piece BPE tokenizer that also saw one Zorro paradigm's
    sentences (so its pairs encode without <unk>), built once per session (``built_once``)."""
    from minilm_jax.corpus.tokenizer_train import train_sentencepiece
    from minilm_jax.tokenizer import load_tokenizer

    wiki = shared_path("wikitext2", "tokenized", "wiki.valid.tokens").read_text(encoding="utf-8")
    lines = [line.strip() for line in wiki.splitlines() if len(line.split()) >= 12]
    zorro = shared_path("zorro", "sentences", "babyberta",
                        f"{ZORRO_DEV_PARADIGM}.txt").read_text()

    def build(root: Path) -> None:
        (root / "tok.model").write_bytes(train_sentencepiece(lines + zorro.splitlines(), 600, "bpe"))
        write_line_shards(root / "shards", load_tokenizer(root / "tok.model"), lines, 64)

    return built_once(tmp_path_factory, "zorro_shards", build) / "shards"


@pytest.fixture
def offline_zorro(tmp_path, monkeypatch) -> Path:
    """Zorro offline: a mirror folder laid out like the repository (a link to the shared copy),
    an empty cache, and no network (the download base points nowhere)."""
    from minilm_jax.evals import suites

    folder = tmp_path / "mirror" / "phueb"
    folder.mkdir(parents=True)
    (folder / "Zorro").symlink_to(shared_path("zorro"))
    monkeypatch.setenv(suites.MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suites, "BASE_URL", "file:///nonexistent")
    return tmp_path / "mirror"


def tensorboard_config(folder):
    """The hyperparameters (HParams plugin, session start) and text summaries in a run's events
    (``folder``: a local path or an ``etils.epath`` one, e.g. ``gs://``)."""
    import struct

    from tensorboardX.proto import event_pb2
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    hparams, texts = {}, {}
    for path in folder.iterdir():
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length, its CRC, the record, its CRC
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if plugin.plugin_name == "hparams":
                    content = HParamsPluginData.FromString(plugin.content)
                    for key, v in content.session_start_info.hparams.items():
                        hparams[key] = v.number_value if v.HasField("number_value") else (
                            v.string_value if v.HasField("string_value") else v.bool_value)
                elif plugin.plugin_name == "text":
                    texts[value.tag.split("/")[0]] = value.tensor.string_val[0].decode()
    return hparams, texts
