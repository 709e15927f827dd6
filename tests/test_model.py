"""Model behaviour: shapes, dtypes, jit equality, padding invariance, segment isolation, heads, init."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import float32_tolerance
from minilm_jax.model import build_classifier, build_mlm
from minilm_jax.model.config import ConfigError
from minilm_jax.model.models import MaskedLM
from minilm_jax.model.registry import build_encoder
from minilm_jax.model.sizes import resolve_point

SMALL = "E24-H32-I64-L2-A4-V300"
SMALL_TERMS = 2 * (32 + 64) + 16  # each layer's widest reductions, attention over 16 tokens


def tol(x, terms=SMALL_TERMS):
    return float32_tolerance(float(np.max(np.abs(np.asarray(x)))), terms)


def compiled(model, *args, **static):
    """``model(*args, **static)`` as one compiled program, its state updates (BatchNorm's running
    averages) applied to ``model``. Op by op, every operation of a new shape compiles on its own:
    a new config or sequence length took ~2 s of CPU that way, ~0.35 s compiled."""
    graphdef, state = nnx.split(model)
    out, state = _compiled(graphdef, state, args, tuple(sorted(static.items())))
    nnx.update(model, state)
    return out


@functools.partial(jax.jit, static_argnums=(0, 3))
def _compiled(graphdef, state, args, static):
    model = nnx.merge(graphdef, state)
    out = model(*args, **dict(static))
    return out, nnx.state(model)


def tokens(b=2, t=16, seed=0, vocab=300, pad_from=None):
    x = np.random.default_rng(seed).integers(5, vocab, size=(b, t)).astype(np.int32)
    if pad_from is not None:
        x[:, pad_from:] = 1
    return jnp.asarray(x)


@pytest.mark.parametrize("point,pre", [(SMALL, False), (SMALL, True), ("E32-H32-I64-L1-A2-V300", False)])
def test_mlm_shapes_and_dtypes(point, pre):
    cfg = resolve_point(point, norm_position="pre" if pre else "post")
    model = build_mlm(cfg)
    x = tokens()
    logits = model(x, jnp.zeros((2, 5), jnp.int32))
    assert logits.shape == (2, 5, 300)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_bf16_compute_keeps_f32_params():
    cfg = resolve_point(SMALL, dtype="bfloat16")
    model = build_mlm(cfg)
    graphdef, state = nnx.split(model)
    # one compiled program: op by op, every operation compiled anew for bfloat16
    logits = jax.jit(lambda state, x, pos: nnx.merge(graphdef, state)(x, pos))(
        state, tokens(), jnp.zeros((2, 5), jnp.int32))
    assert logits.dtype == jnp.bfloat16
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        assert leaf.dtype == jnp.float32
    ref = build_mlm(resolve_point(SMALL))(tokens(), jnp.zeros((2, 5), jnp.int32))
    np.testing.assert_allclose(np.asarray(logits, np.float32), ref, atol=0.1)


def test_jit_and_no_jit_agree():
    model = build_mlm(resolve_point(SMALL))
    graphdef, state = nnx.split(model)

    def forward(state, x, pos, key):
        return nnx.merge(graphdef, state)(x, pos, dropout_key=key, train=True)

    x, pos = tokens(), jnp.array([[1, 2, 3], [0, 4, 5]], jnp.int32)
    out = jax.jit(forward)(state, x, pos, jax.random.key(3))
    ref = forward(state, x, pos, jax.random.key(3))
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol(ref))


def test_dropout_only_with_key():
    model = build_mlm(resolve_point(SMALL))
    x, pos = tokens(), jnp.zeros((2, 3), jnp.int32)  # the shapes compiled above
    a, b = model(x, pos), model(x, pos)
    np.testing.assert_array_equal(a, b)
    c = model(x, pos, dropout_key=jax.random.key(0), train=True)
    assert not np.allclose(a, c)


# Each attention implementation, and the conv front end (its masking of padded positions is its
# own; attention is the same code after it, covered by the first two cases).
@pytest.mark.parametrize("point,impl", [(SMALL, "einsum"), (SMALL, "xla"),
                                        ("bert1-a8-conv2x32", "einsum")])
def test_padding_invariance(point, impl):
    """Extra padding leaves the real tokens' outputs unchanged."""
    overrides = dict(attention_impl=impl)
    if point.startswith("bert"):
        overrides.update(hidden_dim=64, emb_dim=64, ffn_dim=128, num_heads=1, vocab_size=300)
    cfg = resolve_point(point, **overrides)
    encoder = build_encoder(cfg, nnx.Rngs(params=0))
    pad = cfg.pad_id
    short = np.asarray(tokens(t=10, vocab=300))
    long = np.concatenate([short, np.full((2, 6), pad, np.int32)], axis=1)
    # SMALL op by op: the tests below reuse its operations, compiled for these shapes; the conv
    # point, which no other test runs op by op, as one compiled program
    apply = compiled if point.startswith("bert") else (lambda model, x: model(x))
    out_short = apply(encoder, jnp.asarray(short))
    out_long = apply(encoder, jnp.asarray(long))
    # each layer's hidden and ffn widths, attention over up to 16 positions
    terms = cfg.num_layers * (cfg.hidden_dim + cfg.ffn_dim) + 16
    np.testing.assert_allclose(out_long[:, :10], out_short, rtol=0, atol=tol(out_short, terms))


def test_packed_segments_do_not_interact():
    """Gradient of one packed document's outputs w.r.t. another document's tokens is exactly zero."""
    cfg = resolve_point(SMALL)
    encoder = build_encoder(cfg, nnx.Rngs(params=0))
    graphdef, state = nnx.split(encoder)
    x = jnp.arange(10, 22, dtype=jnp.int32)[None]  # distinct ids: table rows map to positions
    segments = jnp.array([[1] * 5 + [2] * 4 + [0] * 3], jnp.int32)

    def doc1_output(state):
        return jnp.sum(nnx.merge(graphdef, state)(x, segments)[0, :5] ** 2)

    grads = jax.jit(jax.grad(doc1_output))(state)  # op by op: 3x the CPU time
    word = np.asarray(grads["word_embeddings"]["embedding"][...])
    position = np.asarray(grads["position_embeddings"]["embedding"][...])
    assert np.abs(word[15:19]).max() == 0.0  # doc 2's tokens
    assert np.abs(position[cfg.position_offset + 5:cfg.position_offset + 9]).max() == 0.0
    assert np.abs(word[10:15]).min() > 0.0  # doc 1's own tokens do matter


def test_segment_isolation_by_perturbation():
    """Changing document 2's tokens leaves document 1's hidden states bit-identical."""
    cfg = resolve_point(SMALL)
    encoder = build_encoder(cfg, nnx.Rngs(params=0))
    x = np.asarray(tokens())  # [2, 16]: the shapes compiled above
    seg = jnp.array([[1] * 6 + [2] * 10] * 2, jnp.int32)
    y = x.copy()
    y[:, 6:] = (y[:, 6:] + 7) % 290 + 5
    a, b = encoder(jnp.asarray(x), seg), encoder(jnp.asarray(y), seg)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert not np.allclose(a[:, 6:], b[:, 6:])


def test_mlm_head_gathers_positions():
    model = build_mlm(resolve_point(SMALL))
    x = tokens()
    full = model.all_logits(x)
    pos = jnp.array([[3, 0, 7], [15, 2, 2]], jnp.int32)
    gathered = model(x, pos)
    np.testing.assert_allclose(gathered, jnp.take_along_axis(full, pos[:, :, None], axis=1),
                               rtol=0, atol=tol(full))


@pytest.mark.parametrize("pooler", ["cls_tanh", "weighted_sum"])
@pytest.mark.parametrize("labels", [1, 3])
def test_classifier_and_regressor_heads(pooler, labels):
    model = build_classifier(resolve_point(SMALL, pooler=pooler), labels)
    out = model(tokens(pad_from=12), dropout_key=jax.random.key(1), train=True)
    assert out.shape == (2, labels)
    assert np.isfinite(np.asarray(out)).all()
    # Padding invariance of the pooled prediction, deterministic mode (10 -> 16 tokens, the
    # shapes test_padding_invariance compiled).
    a = model(tokens(t=10))
    b = model(jnp.concatenate([tokens(t=10), jnp.ones((2, 6), jnp.int32)], axis=1))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol(a))


def test_paper_init_statistics():
    cfg = resolve_point("E128-H256-I1024-L1-A4-V2000")
    model = build_mlm(cfg, seed=1)
    w = np.asarray(model.encoder.layers[0].ffn.up.kernel[...])  # [256, 1024]
    expected = np.sqrt(2.0 / (256 + 1024))
    assert abs(w.std() / expected - 1) < 0.02
    assert np.abs(w).max() > 2.5 * expected  # untruncated normal has tails beyond 2 sigma
    emb = np.asarray(model.encoder.word_embeddings.embedding[...])  # [2000, 128]
    assert abs(emb.std() / np.sqrt(2.0 / (2000 + 128)) - 1) < 0.02
    # a constant fill, no arithmetic: exactly float32(0.01)
    np.testing.assert_array_equal(np.asarray(model.encoder.layers[0].ffn.up.bias[...]),
                                  np.float32(0.01))
    ln = model.encoder.layers[0].attention_norm
    np.testing.assert_array_equal(np.asarray(ln.scale[...]), 1.0)
    np.testing.assert_array_equal(np.asarray(ln.bias[...]), 0.0)


def test_bert_init_statistics():
    model = build_mlm(resolve_point("E128-H256-I1024-L1-A4-V2000", init="bert"), seed=1)
    w = np.asarray(model.encoder.layers[0].ffn.up.kernel[...])
    assert abs(w.std() / 0.02 - 1) < 0.02
    np.testing.assert_array_equal(np.asarray(model.encoder.layers[0].ffn.up.bias[...]), 0.0)


def test_conv_front_end_batchnorm_train_and_eval():
    cfg = resolve_point("bert1-a8-conv2x32", hidden_dim=64, emb_dim=64, ffn_dim=128, num_heads=1,
                        vocab_size=300)
    model = build_classifier(cfg, 4)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    mean0 = jax.tree.leaves(stats)[0].copy()
    x = tokens(b=4, t=16, pad_from=12)
    compiled(model, x, train=True)  # train mode: batch statistics, running averages move
    _, _, stats_after = nnx.split(model, nnx.Param, nnx.BatchStat)
    assert not np.allclose(jax.tree.leaves(stats_after)[0], mean0)
    # Eval mode uses running averages: outputs per example do not depend on the rest of the batch.
    a = compiled(model, x[:1])
    b = compiled(model, x)[:1]
    # one layer's hidden and ffn widths (64 + 128), attention over 16 positions
    np.testing.assert_allclose(a, b, rtol=0, atol=tol(b, 64 + 128 + 16))
    _, _, stats_eval = nnx.split(model, nnx.Param, nnx.BatchStat)
    for u, v in zip(jax.tree.leaves(stats_after), jax.tree.leaves(stats_eval)):
        np.testing.assert_array_equal(u, v)  # eval does not update statistics
    # Train mode: an example's output depends on the batch (batch statistics).
    assert not np.allclose(compiled(model, x[:2], train=True)[:1],
                           compiled(model, x, train=True)[:1], atol=1e-6)


def test_conv_arch_requires_conv_fields():
    with pytest.raises(ConfigError, match="conv_layers"):
        build_mlm(resolve_point("bert1-a8", arch="bert_conv", vocab_size=300, hidden_dim=64,
                                emb_dim=64, ffn_dim=128, num_heads=1))  # a small table first


def test_unknown_arch_lists_registered():
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'; registered: \['bert', 'bert_conv', 'roberta'.*"
                                          r"or an import path"):
        MaskedLM(resolve_point(SMALL, arch="nope"), rngs=nnx.Rngs(0))


GATED_ENCODER = """
import jax.numpy as jnp
from flax import nnx
from minilm_jax.model.encoder import TransformerEncoder


class GatedEncoder(TransformerEncoder):
    def __init__(self, cfg, *, rngs):
        super().__init__(cfg, rngs=rngs)
        self.gate = nnx.Param(jnp.full((cfg.hidden_dim,), 0.5))

    def embed(self, tokens_bt, token_types_bt, segment_ids_bt, key, train):
        return super().embed(tokens_bt, token_types_bt, segment_ids_bt, key, train) * self.gate[...]

    @classmethod
    def counts_beyond_baseline(cls, cfg, seq_len):  # the gate: H parameters, no matmul
        from minilm_jax.model.accounting import VariantCounts
        return VariantCounts(params=cfg.hidden_dim)
"""


def test_an_encoder_is_selected_by_import_path(tmp_path, monkeypatch):
    """``model.arch=module:Name`` builds a class no registry line names."""
    (tmp_path / "lab_encoders.py").write_text(GATED_ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    gated = build_mlm(resolve_point(SMALL, arch="lab_encoders:GatedEncoder"), seed=0)
    plain = build_mlm(resolve_point(SMALL), seed=0)
    assert type(gated.encoder).__name__ == "GatedEncoder"
    x = jnp.full((2, 16), 7, jnp.int32)  # the shapes compiled above
    positions = jnp.zeros((2, 3), jnp.int32)
    assert gated(x, positions).shape == plain(x, positions).shape == (2, 3, 300)
    assert not np.allclose(gated(x, positions), plain(x, positions))  # the gate is applied
    with pytest.raises(ConfigError, match="model.arch='lab_encoders:Missing': lab_encoders has no "
                                          "encoder 'Missing'"):
        build_mlm(resolve_point(SMALL, arch="lab_encoders:Missing"))
    with pytest.raises(ConfigError, match="cannot import 'no_such_lab.encoders' \\(No module"):
        build_mlm(resolve_point(SMALL, arch="no_such_lab.encoders:X"))


def test_heads_are_honoured():
    """A=1 and A=4 give different functions of the same weights (no silent fixed head count)."""
    m1 = build_mlm(resolve_point("E24-H32-I64-L1-A1-V300"))
    m4 = build_mlm(resolve_point("E24-H32-I64-L1-A4-V300"))
    nnx.update(m4, nnx.state(m1))
    x, pos = tokens(), jnp.zeros((2, 3), jnp.int32)
    assert not np.allclose(m1(x, pos), m4(x, pos), atol=1e-4)


def test_attention_implementations_agree():
    a = build_mlm(resolve_point(SMALL))
    b = build_mlm(resolve_point(SMALL, attention_impl="xla"))
    x = tokens(pad_from=12)
    want = b.all_logits(x)[:, :12]
    np.testing.assert_allclose(a.all_logits(x)[:, :12], want, rtol=0, atol=tol(want))


def test_the_models_check_shapes_and_dtypes_at_their_boundary():
    """chex assertions at the boundary: a 1-D batch, float token ids, positions of another batch
    size or a segment mask of another shape fail when traced, naming the shapes."""
    from minilm_jax.model.models import build_classifier, build_mlm
    from minilm_jax.model.sizes import resolve_point

    cfg = resolve_point(SMALL)  # the shapes the tests above compiled
    mlm, classifier = build_mlm(cfg), build_classifier(cfg, 3)
    tokens = jnp.full((2, 16), 5, jnp.int32)
    assert mlm(tokens, jnp.zeros((2, 3), jnp.int32)).shape == (2, 3, 300)
    assert classifier(tokens).shape == (2, 3)
    for bad in (lambda: mlm(tokens[0], jnp.zeros((2, 3), jnp.int32)),
                lambda: mlm(tokens.astype(jnp.float32), jnp.zeros((2, 3), jnp.int32)),
                lambda: mlm(tokens, jnp.zeros((3, 3), jnp.int32)),
                lambda: classifier(tokens, jnp.ones((2, 7), jnp.int32))):
        with pytest.raises(AssertionError):
            bad()


def test_small_embedding_tables_take_no_scatter_gradient():
    """Position rows are a slice of their table and token-type rows a comparison select: the same
    values as the gather, gradients within float32 rounding of the gather's, and no scatter-add
    into either table in the traced gradient (a GPU serialises the 32k-way conflicts)."""
    cfg = resolve_point(SMALL, hidden_dropout=0.0, attention_dropout=0.0)
    encoder = build_mlm(cfg).encoder
    toks = tokens(4, 16)
    types = jnp.asarray(np.random.default_rng(0).integers(0, 2, toks.shape), jnp.int32)
    np.testing.assert_array_equal(encoder.token_type_rows(types),
                                  encoder.token_type_embeddings(types))
    np.testing.assert_array_equal(encoder.position_rows(16),
                                  encoder.position_embeddings(jnp.arange(16) + cfg.position_offset))
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)
    cot = jax.random.normal(jax.random.key(0), (4, 16, cfg.emb_dim))

    def loss(params, gather):
        enc = nnx.merge(graphdef, params, rest)
        if gather:
            x = (enc.position_embeddings(jnp.arange(16) + cfg.position_offset)[None]
                 + enc.token_type_embeddings(types))
        else:
            x = enc.position_rows(16)[None] + enc.token_type_rows(types)
        return jnp.sum(x * cot)

    want = jax.grad(loss)(params, True)
    fn = jax.jit(jax.grad(loss), static_argnums=1)
    got = fn(params, False)
    for name in ("position_embeddings", "token_type_embeddings"):
        a, e = got[name]["embedding"][...], want[name]["embedding"][...]
        np.testing.assert_allclose(a, e, rtol=0,
                                   atol=float32_tolerance(float(jnp.abs(e).max()), 64))
    # the program as traced (XLA:CPU rewrites small scatters into loops; a GPU keeps them)
    assert "scatter" not in fn.lower(params, False).as_text()
    assert "scatter" in fn.lower(params, True).as_text()  # the gather's does: the test can fail
