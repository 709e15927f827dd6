"""A variant's counts through loops: the traced matmul FLOPs count a loop's body as often as it runs
(scan, fori_loop with static bounds, nested), the costliest branch of a cond, a call once, and
refuse a while whose trip count is a value; a loop-shared encoder (tests/looped_encoder.py) is
counted by hand, its declaration accepted, the one-layer under-count refused, its undeclared twin's
derived counts equal to the declaration; embedding and non-embedding parameters on their side; a
variant that builds the built-in encoder is named as such. Every number is a hand count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax import lax

from minilm_jax.errors import UserError
from minilm_jax.model import accounting
from minilm_jax.model.count_check import check_declared_counts, same_as_builtin
from minilm_jax.model.encoder import TransformerEncoder
from minilm_jax.model.models import build_mlm
from minilm_jax.model.sizes import resolve_point
from minilm_jax.model.traced_flops import encoder_matmul_flops, matmul_flops

import looped_encoder
from looped_encoder_blocks import layer_flops, layer_params

M, K, N = 4, 6, 6  # x [M, K] @ w [K, N]
DOT = 2 * M * N * K
X, W = jnp.ones((M, K)), jnp.ones((K, N))
LOOP = "looped_encoder:LoopSharedEncoder"


def flops(fn, *args) -> float:
    return matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.fixture
def fresh_counts():
    """Every count cache emptied before and after (a test that patches the variant's code)."""
    caches = (encoder_matmul_flops, accounting.derived_counts, check_declared_counts,
              same_as_builtin)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_loops_count_their_body_as_often_as_it_runs():
    def scan(x):
        return lax.scan(lambda c, _: (c @ W, None), x, None, length=5)[0]

    def fori(x):  # Python-int bounds: a scan in the jaxpr
        return lax.fori_loop(2, 9, lambda i, c: c @ W, x)

    def fori_constant_bounds(x):  # jnp bounds: a while with literal bounds in the jaxpr
        return lax.fori_loop(jnp.int32(1), jnp.int32(4), lambda i, c: c @ W, x)

    def nested(x):  # 3 x (one dot + 4 x two dots)
        def outer(c, _):
            c = c @ W
            return lax.fori_loop(0, 4, lambda i, d: (d @ W) @ W, c), None
        return lax.scan(outer, x, None, length=3)[0]

    assert "scan" in str(jax.make_jaxpr(fori)(X)) and "while" in str(
        jax.make_jaxpr(fori_constant_bounds)(X))
    assert flops(scan, X) == 5 * DOT
    assert flops(fori, X) == 7 * DOT
    assert flops(fori_constant_bounds, X) == 3 * DOT
    assert flops(nested, X) == 3 * (DOT + 4 * 2 * DOT)


def test_a_cond_counts_its_costliest_branch_and_a_call_once():
    wide = jnp.ones((K, 3 * N))

    def cond(x, p):
        return lax.cond(p, lambda y: (y @ wide)[:, :N], lambda y: (y @ W) @ W, x)

    def switch(x, i):
        return lax.switch(i, [lambda y: y, lambda y: ((y @ W) @ W) @ W, lambda y: y @ W], x)

    assert flops(cond, X, True) == max(3 * DOT, 2 * DOT) == 3 * DOT
    assert flops(switch, X, 1) == 3 * DOT

    @jax.custom_jvp
    def custom(y):
        return y @ W

    custom.defjvp(lambda primals, tangents: (custom(primals[0]), tangents[0] @ W))
    calls = {"jit": jax.jit(lambda y: y @ W), "checkpoint": jax.checkpoint(lambda y: y @ W),
             "custom_jvp": custom}
    for name, fn in calls.items():
        assert flops(lambda x: fn(fn(x)), X) == 2 * DOT, name
    assert flops(lambda x: jax.jit(lambda y: jax.checkpoint(lambda z: z @ W)(y) @ W)(x), X) == \
        2 * DOT


def test_a_loop_whose_trip_count_is_a_value_is_refused_in_one_line():
    def dynamic_fori(x, n):
        return lax.fori_loop(0, n, lambda i, c: c @ W, x)

    def while_loop(x):
        return lax.while_loop(lambda c: c[0, 0] < 100.0, lambda c: c @ W, x)

    for fn, args in ((dynamic_fori, (X, 3)), (while_loop, (X,))):
        with pytest.raises(UserError, match=r"holds a `while` loop whose trip count is a value.*"
                                            r"write the loop with static bounds") as err:
            flops(fn, *args)
        assert "\n" not in str(err.value)
    # a primitive holding programs the count does not know: refused, named
    solve = lambda b, x: lax.custom_linear_solve(lambda v: x @ v, b, lambda mv, r: r)
    with pytest.raises(UserError,
                       match=r"holds a `custom_linear_solve`, a primitive with a program"):
        flops(solve, jnp.ones(K), W)


def hand_flops(cfg, layers: int) -> float:
    """2TEH + L (8TH^2 + 4T^2H + 4THI): one sequence of T tokens through the embedding projection
    and ``layers`` built-in layers."""
    t, e, h, i = cfg.max_len, cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim
    return 2 * t * e * h + layers * (8 * t * h * h + 4 * t * t * h + 4 * t * h * i)


def hand_params(cfg) -> tuple[int, int]:
    """(embedding, non-embedding) parameters of the built-in MLM model (RoBERTa layout)."""
    e, h, i, v, l = cfg.emb_dim, cfg.hidden_dim, cfg.ffn_dim, cfg.vocab_size, cfg.num_layers
    embedding = e * (v + cfg.max_len + 2 + 2 + 2)  # word, position (T + 2), type tables; norm
    non_embedding = (e * h + 3 * h) + l * (4 * h * h + 2 * h * i + 9 * h + i) + (
        h * h + 3 * h + h * v + v)
    return embedding, non_embedding


@pytest.mark.parametrize("layers", [2, 4])
def test_a_loop_shared_encoder_is_counted_by_hand(layers, fresh_counts):
    cfg = resolve_point(f"E16-H24-I40-L{layers}-A2-V300", arch=LOOP).replace(max_len=32)
    t = cfg.max_len
    assert encoder_matmul_flops(cfg) == hand_flops(cfg, layers)  # L repeats of one layer
    assert layer_flops(cfg, t) == hand_flops(cfg, 1) - hand_flops(cfg, 0)
    check_declared_counts(cfg)  # its declaration: accepted
    embedding, non_embedding = hand_params(cfg)
    shared = non_embedding - (layers - 1) * layer_params(cfg)  # one layer's parameters
    tree = accounting.count_params(nnx.eval_shape(lambda: build_mlm(cfg)))
    assert (tree.embedding, tree.non_embedding) == (embedding, shared)
    assert tree == accounting.formula_params(cfg)
    assert accounting.forward_flops_per_sequence(cfg, num_predictions=0) == hand_flops(cfg, layers)

    undeclared = cfg.replace(arch="looped_encoder:UndeclaredLoopSharedEncoder")
    check_declared_counts(undeclared)
    assert accounting.counts_source(undeclared) == "derived"
    assert accounting.counts_source(cfg) == "declared"
    assert accounting.variant_counts(undeclared) == accounting.variant_counts(cfg) == \
        accounting.VariantCounts(params=shared - non_embedding, forward_flops=0.0)
    assert accounting.formula_params(undeclared) == tree

    # L + 1 repeats of the shared layer: one layer's FLOPs more than the built-in's L layers
    more = cfg.replace(extra=(("loop_repeats", layers + 1),))
    assert encoder_matmul_flops(more) == hand_flops(cfg, layers + 1)
    check_declared_counts(more)
    assert accounting.variant_counts(more.replace(arch=undeclared.arch)).forward_flops == \
        accounting.variant_counts(more).forward_flops == hand_flops(cfg, 1) - hand_flops(cfg, 0)

    under = cfg.replace(arch="test_count_loops:OneLayerCountedLoopEncoder")
    with pytest.raises(UserError, match=rf"its traced encoder does {hand_flops(cfg, layers):,.0f} "
                                        r"matmul FLOPs per sequence") as err:
        check_declared_counts(under)
    assert "\n" not in str(err.value)


class OneLayerCountedLoopEncoder(looped_encoder.LoopSharedEncoder):
    """The under-count of a body counted once: one layer's FLOPs declared."""

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(
            params=-(cfg.num_layers - 1) * layer_params(cfg),
            forward_flops=-(cfg.num_layers - 1) * layer_flops(cfg, seq_len))


def test_the_loop_with_constant_or_traced_bounds_in_the_encoder(monkeypatch, fresh_counts):
    """The same encoder with jnp bounds (a while with literal bounds) is counted; with a bound
    computed from its input, refused before a run in one line naming the variant."""
    cfg = resolve_point("E16-H24-I40-L3-A2-V300", arch=LOOP).replace(max_len=32)
    run_shared = looped_encoder.run_shared
    monkeypatch.setattr(looped_encoder, "run_shared",
                        lambda *args: run_shared(*args[:-1], jnp.int32(args[-1])))
    assert encoder_matmul_flops(cfg) == hand_flops(cfg, 3)
    encoder_matmul_flops.cache_clear()
    monkeypatch.setattr(looped_encoder, "run_shared", lambda layer, x, mask, key, times: run_shared(
        layer, x, mask, key, times + jnp.sum(mask[0, 0, 0, :1]).astype(jnp.int32) * 0))
    with pytest.raises(UserError, match=rf"^model\.arch={LOOP}: its traced encoder holds a "
                                        r"`while` loop whose trip count is a value"):
        check_declared_counts(cfg)


class ExtraTypeRowEncoder(TransformerEncoder):
    """One more row in the token-type table: E embedding parameters, no matmul."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size + 1, cfg.emb_dim, rngs=rngs)

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(embedding_params=cfg.emb_dim)


class ExtraTypeRowOnTheWrongSide(ExtraTypeRowEncoder):
    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(params=cfg.emb_dim)


class UndeclaredExtraTypeRow(ExtraTypeRowEncoder):
    counts_beyond_baseline = None


class HiddenGateEncoder(TransformerEncoder):
    """A learned gate of width H after the layers: H non-embedding parameters, no matmul."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.hidden_gate = nnx.Param(jnp.ones((cfg.hidden_dim,)))

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs) * self.hidden_gate[...]

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(params=cfg.hidden_dim)


class HiddenGateOnTheWrongSide(HiddenGateEncoder):
    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):
        return accounting.VariantCounts(embedding_params=cfg.hidden_dim)


class UndeclaredHiddenGate(HiddenGateEncoder):
    counts_beyond_baseline = None


@pytest.mark.parametrize("name, embedding_more, non_embedding_more", [
    ("ExtraTypeRow", 16, 0), ("HiddenGate", 0, 24)])
def test_embedding_and_non_embedding_parameters_on_their_side(name, embedding_more,
                                                              non_embedding_more, fresh_counts):
    point = resolve_point("E16-H24-I40-L2-A2-V300").replace(max_len=32)
    embedding, non_embedding = hand_params(point)
    expected = accounting.ParamCounts(
        total=embedding + embedding_more + non_embedding + non_embedding_more,
        embedding=embedding + embedding_more, non_embedding=non_embedding + non_embedding_more)
    declared = point.replace(arch=f"test_count_loops:{name}Encoder")
    check_declared_counts(declared)
    assert accounting.formula_params(declared) == expected
    undeclared = point.replace(arch=f"test_count_loops:Undeclared{name}")
    check_declared_counts(undeclared)
    assert accounting.variant_counts(undeclared) == accounting.VariantCounts(
        params=non_embedding_more, embedding_params=embedding_more, forward_flops=0.0)
    assert accounting.formula_params(undeclared) == expected
    wrong = point.replace(arch=f"test_count_loops:{name}OnTheWrongSide")
    with pytest.raises(UserError, match=rf"its parameter tree has {expected.total:,} parameters "
                                        rf"\({expected.embedding:,} embedding\)"):
        check_declared_counts(wrong)


def test_a_variant_that_builds_the_built_in_encoder_is_named(capsys, fresh_counts):
    one = resolve_point("E16-H24-I40-L1-A2-V300", arch=LOOP).replace(max_len=32)
    assert same_as_builtin(one)  # one layer run once: the built-in encoder's tree and function
    check_declared_counts(one)
    notes = capsys.readouterr().err.strip().splitlines()
    # the variant's fields at their defaults are named with it (resolve_point fills them)
    assert len(notes) == 1 and notes[0].startswith(f"note: model.arch={LOOP} at {one.point} "
                                                   "(loop_repeats=0) builds the built-in encoder's")
    assert accounting.variant_counts(one) == accounting.VariantCounts()
    # the same tree, run twice: another function; two layers: another tree
    for other in (one.replace(extra=(("loop_repeats", 2),)), one.replace(num_layers=2)):
        assert not same_as_builtin(other)
        check_declared_counts(other)
        assert capsys.readouterr().err == ""
    assert not same_as_builtin(one.replace(arch="test_count_loops:HiddenGateEncoder"))
