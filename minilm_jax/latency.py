"""Inference latency of study B's soft committee against one 1-layer member and the 6-layer model.

    python -m minilm_jax.latency --k=4 --members=bert1-a12 --batch_sizes=1,32 --seq_len=128
    python -m minilm_jax.latency --k=2 --members=bert1-a8,bert1-a12-conv2x32 --json=latency.json

Rows (each at every batch size; forward pass of a classifier in eval mode, jitted, to probabilities):

* ``single``          one member (the first of ``--members``), seed 0;
* ``deep``            the deep model (``--deep``, default ``bert6``);
* ``committee-vmap``  K members stacked on a member axis, one vmapped program, probabilities combined
                      in the same program (only when all members share one architecture);
* ``committee-fused`` one jitted function calling each member in turn, then combining (any members);
* ``committee-seq``   one jitted call per member, each completed before the next starts, then a jitted
                      combine.

Members are ``--members`` cycled to K entries (seeds 0..K-1); ``--combine=prob`` averages softmax
probabilities, ``logit`` averages logits then applies softmax. Weights are random: latency does not
depend on them (loading checkpoints is not supported). Timings are per call after ``--warmup`` calls
(the first one compiles), interleaved across rows: median and p90 milliseconds, throughput =
batch / median.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minilm_jax.model import accounting
from minilm_jax.cli import EXIT_USER_ERROR, run_tool, tool_parser
from minilm_jax.storage import atomic_write_json
from minilm_jax.model.config import ModelConfig
from minilm_jax.model.models import build_classifier
from minilm_jax.model.stacked import init_stacked, stacked_apply, unstack_state
from minilm_jax.model.sizes import resolve_point
from minilm_jax.tasks import committee_math

COMBINE_METHODS = ("prob", "logit")  # as tasks.committee_math and the committee command name them


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One classifier as pure state."""

    point: str
    cfg: ModelConfig
    graphdef: nnx.GraphDef
    params: Any
    rest: Any

    def logits(self, tokens_bt: jax.Array) -> jax.Array:
        """This member's forward pass on its own (the reference path: one member, not the
        committee's stacked or fused program), jitted once per architecture (eagerly, each of
        its ~150 operations would compile a program of its own)."""
        return _reference_forward(self.graphdef)(self.params, self.rest, tokens_bt)


@dataclasses.dataclass(frozen=True, eq=False)
class Runner:
    """A timed row: ``forward(tokens_bt) -> probs_bc``, completed on return."""

    name: str
    description: str
    forward: Callable[[jax.Array], jax.Array]
    members: tuple[Member, ...]
    combine: str


def combine_probs(logits_kbc: jax.Array, method: str) -> jax.Array:
    """Committee probabilities ``[B, C]``: mean of softmaxes (``prob``) or softmax of mean logits."""
    if method == "prob":
        return jnp.mean(jax.nn.softmax(logits_kbc, axis=-1), axis=0)
    if method == "logit":
        return jax.nn.softmax(jnp.mean(logits_kbc, axis=0), axis=-1)
    raise ValueError(f"unknown combine method {method!r}: 'prob' or 'logit'")


def reference_probs(members: Sequence[Member], tokens_bt: jax.Array, method: str
                    ) -> tuple[np.ndarray, float]:
    """Members run one by one (:meth:`Member.logits`), combined in float64 by
    :mod:`minilm_jax.tasks.committee_math`; and the largest |logit| among them (the scale a
    float32 tolerance on the committee's error is derived from)."""
    logits_kbc = np.stack([np.asarray(m.logits(tokens_bt)) for m in members])
    scores_bc = committee_math.combine(logits_kbc, method)
    probs_bc = scores_bc if method == "prob" else committee_math.softmax(scores_bc)
    return probs_bc, float(np.max(np.abs(logits_kbc)))


def member_config(point: str, dtype: str, seq_len: int) -> ModelConfig:
    cfg = resolve_point(point, dtype=dtype)
    if seq_len > cfg.max_len:
        raise ValueError(f"--seq_len={seq_len} exceeds max_len={cfg.max_len} of {point}")
    return cfg


def make_member(point: str, seed: int, num_labels: int, dtype: str, seq_len: int) -> Member:
    cfg = member_config(point, dtype, seq_len)
    graphdef, params, rest = nnx.split(build_classifier(cfg, num_labels, seed=seed), nnx.Param, ...)
    return Member(point, cfg, graphdef, params, rest)


def committee_points(members: Sequence[str], k: int) -> list[str]:
    """``members`` cycled to ``k`` entries."""
    if k < 1 or not members:
        raise ValueError("a committee needs k >= 1 and at least one member point")
    return [members[i % len(members)] for i in range(k)]


def make_committee(points: Sequence[str], num_labels: int, dtype: str, seq_len: int
                   ) -> tuple[list[Member], tuple[nnx.GraphDef, Any, Any] | None]:
    """Members with seeds 0..K-1 and, when they share one architecture, their stacked state."""
    cfgs = [member_config(p, dtype, seq_len) for p in points]
    if any(c != cfgs[0] for c in cfgs):
        return [make_member(p, s, num_labels, dtype, seq_len) for s, p in enumerate(points)], None
    graphdef, params_k, rest_k = init_stacked(
        lambda key: build_classifier(cfgs[0], num_labels, seed=key), range(len(points)))
    members = [Member(p, cfgs[0], graphdef, unstack_state(params_k, k), unstack_state(rest_k, k))
               for k, p in enumerate(points)]
    return members, (graphdef, params_k, rest_k)


def _logits_fn(graphdef: nnx.GraphDef) -> Callable[..., jax.Array]:
    return lambda params, rest, tokens_bt: nnx.merge(graphdef, params, rest)(tokens_bt)


@functools.lru_cache(maxsize=None)
def _reference_forward(graphdef: nnx.GraphDef) -> Callable[..., jax.Array]:
    """The jitted forward of one member architecture (:meth:`Member.logits`)."""
    return jax.jit(_logits_fn(graphdef))


def single_runner(name: str, member: Member) -> Runner:
    fn = jax.jit(lambda p, r, t: jax.nn.softmax(_logits_fn(member.graphdef)(p, r, t), axis=-1))
    return Runner(name, member.point, lambda t: jax.block_until_ready(fn(member.params, member.rest, t)),
                  (member,), "none")


def vmap_runner(members: Sequence[Member], stacked: tuple[nnx.GraphDef, Any, Any],
                method: str) -> Runner:
    graphdef, params_k, rest_k = stacked
    apply_k = stacked_apply(graphdef)
    fn = jax.jit(lambda p, r, t: combine_probs(apply_k(p, r, t), method))
    return Runner("committee-vmap", f"{len(members)} x {members[0].point}, vmapped",
                  lambda t: jax.block_until_ready(fn(params_k, rest_k, t)), tuple(members), method)


def fused_runner(members: Sequence[Member], method: str) -> Runner:
    logit_fns = [_logits_fn(m.graphdef) for m in members]

    def fused(params_list, rest_list, tokens_bt):
        logits_kbc = jnp.stack([f(p, r, tokens_bt)
                                for f, p, r in zip(logit_fns, params_list, rest_list)])
        return combine_probs(logits_kbc, method)

    fn = jax.jit(fused)
    params_list, rest_list = [m.params for m in members], [m.rest for m in members]
    return Runner("committee-fused", f"{_describe(members)}, one jit",
                  lambda t: jax.block_until_ready(fn(params_list, rest_list, t)), tuple(members),
                  method)


def sequential_runner(members: Sequence[Member], method: str) -> Runner:
    by_point: dict[str, Callable[..., jax.Array]] = {}
    for m in members:  # one compiled forward per distinct architecture
        by_point.setdefault(m.point, jax.jit(_logits_fn(m.graphdef)))
    combine = jax.jit(lambda logits_list: combine_probs(jnp.stack(logits_list), method))

    def forward(tokens_bt: jax.Array) -> jax.Array:
        logits_list = [jax.block_until_ready(by_point[m.point](m.params, m.rest, tokens_bt))
                       for m in members]
        return jax.block_until_ready(combine(logits_list))

    return Runner("committee-seq", f"{_describe(members)}, one by one", forward, tuple(members),
                  method)


def _describe(members: Sequence[Member]) -> str:
    points = [m.point for m in members]
    if len(set(points)) == 1:
        return f"{len(points)} x {points[0]}"
    return " + ".join(points)


def build_runners(*, k: int = 4, members: Sequence[str] = ("bert1-a12",), deep: str | None = "bert6",
                  seq_len: int = 128, dtype: str = "float32", combine: str = "prob",
                  num_labels: int = 4) -> tuple[list[Runner], list[dict[str, str]]]:
    """The rows to time, and the rows skipped (with the reason)."""
    if combine not in COMBINE_METHODS:
        raise ValueError(f"unknown --combine={combine!r}: one of {', '.join(COMBINE_METHODS)}")
    runners = [single_runner("single", make_member(members[0], 0, num_labels, dtype, seq_len))]
    if deep:
        runners.append(single_runner("deep", make_member(deep, 0, num_labels, dtype, seq_len)))
    committee_members, stacked = make_committee(committee_points(members, k), num_labels, dtype,
                                                seq_len)
    skipped = []
    if stacked is not None:
        runners.append(vmap_runner(committee_members, stacked, combine))
    else:
        skipped.append({"name": "committee-vmap",
                        "reason": "members differ in architecture: one jit calls each member"})
    runners.append(fused_runner(committee_members, combine))
    runners.append(sequential_runner(committee_members, combine))
    return runners, skipped


def synthetic_tokens(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> jax.Array:
    """Ids in [5, V): no padding, no special tokens (latency does not depend on the ids)."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(5, vocab_size, size=(batch, seq_len)), jnp.int32)


def time_forwards(forwards: Sequence[Callable[[jax.Array], Any]], tokens_bt: jax.Array,
                  repeats: int, warmup: int) -> list[dict[str, float]]:
    """Median / p90 milliseconds of each ``forward`` over ``repeats`` calls after ``warmup`` calls.

    Repeats are interleaved (one call of each forward per round), so a change in background load
    affects all rows alike.
    """
    first_call_s = []
    for forward in forwards:
        start = time.perf_counter()
        forward(tokens_bt)  # compiles
        first_call_s.append(time.perf_counter() - start)
        for _ in range(max(0, warmup - 1)):
            forward(tokens_bt)
    times_ms: list[list[float]] = [[] for _ in forwards]
    for _ in range(max(1, repeats)):
        for forward, times in zip(forwards, times_ms):
            start = time.perf_counter()
            forward(tokens_bt)
            times.append(1000.0 * (time.perf_counter() - start))
    return [{"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
             "min_ms": float(np.min(t)), "first_call_s": f}
            for t, f in zip(times_ms, first_call_s)]


def runner_cost(runner: Runner, seq_len: int, num_labels: int) -> dict[str, float]:
    """Parameters and forward FLOPs per sequence, summed over the runner's members."""
    params = sum(accounting.count_params(nnx.merge(m.graphdef, m.params, m.rest)).total
                 for m in runner.members)
    flops = sum(accounting.forward_flops_per_sequence(m.cfg, seq_len=seq_len, head="classifier",
                                                      num_labels=num_labels)
                for m in runner.members)
    return {"params": int(params), "flops_per_seq": float(flops)}


def environment() -> dict[str, Any]:
    """Device and versions for the report header."""
    import flax
    import jaxlib

    device = jax.devices()[0]
    return {"device": str(device), "platform": device.platform,
            "device_kind": getattr(device, "device_kind", ""), "num_devices": jax.device_count(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def run_benchmark(*, k: int = 4, members: Sequence[str] = ("bert1-a12",),
                  deep: str | None = "bert6", batch_sizes: Sequence[int] = (1, 32),
                  seq_len: int = 128, repeats: int = 50, warmup: int = 5, dtype: str = "float32",
                  combine: str = "prob", num_labels: int = 4,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every row at every batch size; returns ``{"environment", "settings", "rows", "skipped"}``.

    Committee rows carry ``max_abs_err``: their probabilities against the members run one by one
    (each on its own, :meth:`Member.logits`) and combined in float64; and ``logit_scale``, the
    members' largest |logit| on the batch (what a float32 tolerance on that error scales with).
    """
    runners, skipped = build_runners(k=k, members=members, deep=deep, seq_len=seq_len, dtype=dtype,
                                     combine=combine, num_labels=num_labels)
    rows = time_runners(runners, batch_sizes, seq_len=seq_len, repeats=repeats, warmup=warmup,
                        num_labels=num_labels, log=log)
    settings = {"k": k, "members": list(members), "deep": deep, "batch_sizes": list(batch_sizes),
                "seq_len": seq_len, "repeats": repeats, "warmup": warmup, "dtype": dtype,
                "combine": combine, "num_labels": num_labels, "weights": "random"}
    return {"environment": environment(), "settings": settings, "rows": rows, "skipped": skipped}


def time_runners(runners: Sequence[Runner], batch_sizes: Sequence[int], *, seq_len: int,
                 repeats: int, warmup: int, num_labels: int,
                 log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows of :func:`run_benchmark` for given runners (e.g. of trained members)."""
    vocab = min(m.cfg.vocab_size for r in runners for m in r.members)
    rows = []
    for batch in batch_sizes:
        tokens_bt = synthetic_tokens(batch, seq_len, vocab, seed=batch)
        timings = time_forwards([r.forward for r in runners], tokens_bt, repeats, warmup)
        references: dict[tuple[int, ...], np.ndarray] = {}
        for runner, timing in zip(runners, timings):
            row = {"name": runner.name, "description": runner.description, "batch": int(batch),
                   "members": len(runner.members), **timing, **runner_cost(runner, seq_len, num_labels),
                   "seqs_per_s": batch / (timing["median_ms"] / 1000.0)}
            if runner.combine != "none":
                key = tuple(id(m) for m in runner.members)
                if key not in references:
                    references[key] = reference_probs(runner.members, tokens_bt, runner.combine)
                want_bc, row["logit_scale"] = references[key]
                row["max_abs_err"] = float(np.max(np.abs(np.asarray(runner.forward(tokens_bt))
                                                         - want_bc)))
            rows.append(row)
            if log:
                log(format_row(row))
        _add_relative(rows, batch)
    return rows


def trained_member(workdir: str, num_labels: int, seq_len: int, seed: int = 0) -> Member:
    """A classifier whose encoder is the pre-trained one of ``workdir`` (its best checkpoint; a
    fresh head of ``num_labels``), for timing trained models."""
    from minilm_jax.runs.pretrained import PretrainedRun

    run = PretrainedRun.open(workdir, action="time")  # a running run reads too (runs.running)
    if seq_len > run.model.max_len:
        raise ValueError(f"seq_len={seq_len} exceeds max_len={run.model.max_len} of {workdir}")
    model = build_classifier(run.model, num_labels, seed=seed)
    nnx.update(model.encoder, run.encoder_state())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return Member(run.model.point, run.model, graphdef, params, rest)


def _add_relative(rows: list[dict[str, Any]], batch: int) -> None:
    """``vs_deep``: each row's median latency over the deep model's, at the same batch size."""
    same = [r for r in rows if r["batch"] == batch]
    deep = next((r for r in same if r["name"] == "deep"), None)
    for row in same:
        if deep:
            row["vs_deep"] = row["median_ms"] / deep["median_ms"]


HEADER = (f"{'row':<16} {'members':<40} {'batch':>5} {'median ms':>10} {'p90 ms':>9} "
          f"{'seq/s':>9} {'params':>8} {'GFLOP/seq':>9} {'vs deep':>7} {'max err':>8}")


def format_row(row: dict[str, Any]) -> str:
    err = f"{row['max_abs_err']:.1e}" if "max_abs_err" in row else "-"
    rel = f"{row['vs_deep']:.2f}" if "vs_deep" in row else "-"
    return (f"{row['name']:<16} {row['description']:<40} {row['batch']:>5} {row['median_ms']:>10.2f} "
            f"{row['p90_ms']:>9.2f} {row['seqs_per_s']:>9.1f} {row['params'] / 1e6:>7.1f}M "
            f"{row['flops_per_seq'] / 1e9:>9.2f} {rel:>7} {err:>8}")


def format_report(results: dict[str, Any]) -> str:
    env, s = results["environment"], results["settings"]
    lines = [f"device {env['device']} ({env['platform']}, {env['num_devices']} device(s), "
             f"{env['cpu_count']} CPUs)  jax {env['jax']}  jaxlib {env['jaxlib']}  flax {env['flax']}"
             f"  python {env['python']}",
             f"seq_len {s['seq_len']}  dtype {s['dtype']}  labels {s['num_labels']}  "
             f"combine {s['combine']}  repeats {s['repeats']} (after {s['warmup']} warm-up)  "
             f"weights random",
             HEADER]
    lines += [format_row(r) for r in results["rows"]]
    lines += [f"skipped {r['name']}: {r['reason']}" for r in results["skipped"]]
    return "\n".join(lines)


def _csv(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(prog="python -m minilm_jax.latency", description=__doc__)
    parser.add_argument("--k", type=int, default=4, help="committee size")
    parser.add_argument("--members", default="bert1-a12",
                        help="comma-separated member points, cycled to K members")
    parser.add_argument("--deep", default="bert6", help="deep model point ('' to skip)")
    parser.add_argument("--batch_sizes", default="1,32", help="comma-separated batch sizes timed")
    parser.add_argument("--seq_len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype")
    parser.add_argument("--combine", default="prob", choices=COMBINE_METHODS,
                        help="average member probabilities (prob) or logits (logit)")
    parser.add_argument("--num_labels", type=int, default=4, help="classes of the classifier heads")
    parser.add_argument("--json", default=None, help="write the figures to this path (atomically)")
    args = parser.parse_args(argv)
    print(HEADER, file=sys.stderr, flush=True)
    try:
        results = run_benchmark(k=args.k, members=_csv(args.members), deep=args.deep or None,
                                batch_sizes=_csv(args.batch_sizes, int), seq_len=args.seq_len,
                                repeats=args.repeats, warmup=args.warmup, dtype=args.dtype,
                                combine=args.combine, num_labels=args.num_labels,
                                log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as err:  # bad points, sizes or options (ConfigError included)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_report(results))
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def entry() -> None:
    run_tool(main)


if __name__ == "__main__":
    entry()
