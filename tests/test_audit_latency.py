"""Audit (2026-11-29) of the latency and committee measurement and the ahead-of-time planning
tools: minilm_jax/latency.py, committee.py, points.py, aot.py (report numbers, not the compile)
and kernel_profile.py. 45 mutants planted, 31 survived the owning tests (none equivalent); each
test below pins one or a few of them against a count made by hand or in numpy: the committee's
combine methods and its members, the reference's logit scale, the rows' first member and seed 0,
synthetic token ids, option parsing, the committee command's seed/logit pairing, reference and
split checks, the AOT memory fields, budget verdicts, analytic FLOPs, byte units and the report's
device count, and the kernel profile's ordering, header, shares and trace filtering."""

from __future__ import annotations

import os
import types
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from minilm_jax import aot, kernel_profile, latency, points
from minilm_jax import committee as committee_cli
from minilm_jax.errors import UserError
from minilm_jax.model.config import ConfigError
from minilm_jax.model.sizes import resolve_point

from test_audit_tools import write_run  # a finished fine-tuning run, as the committee reads it

POINT = "E16-H16-I32-L1-A2-V300"
OTHER = "E16-H16-I32-L1-A4-V300"
DEEP = "E16-H16-I32-L2-A2-V300"


LOGITS_KBC = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]],
                       [[-9.0, 1.0, 0.0], [0.0, 3.0, 1.0]],
                       [[0.0, 0.0, 4.0], [1.0, -2.0, 0.0]]])
WANT = {"prob": softmax(LOGITS_KBC, axis=-1).mean(0),
        "logit": softmax(LOGITS_KBC.mean(0), axis=-1)}


# ---------------------------------------------------------------------------------------- latency

def fake_member(logits_bc: np.ndarray, point: str = "p") -> types.SimpleNamespace:
    """A member whose forward returns ``logits_bc`` whatever the tokens (params are the logits)."""
    return types.SimpleNamespace(point=point, graphdef=None, params=jnp.asarray(logits_bc),
                                 rest=None, logits=lambda tokens_bt: jnp.asarray(logits_bc))


@pytest.mark.parametrize("method", ["prob", "logit"])
def test_combine_and_reference_by_method_with_the_largest_absolute_logit(method):
    """Both combine methods against numpy; the reference's scale is max |logit| = 9 (a negative
    logit), not the largest signed one (4)."""
    got = np.asarray(latency.combine_probs(jnp.asarray(LOGITS_KBC, jnp.float32), method))
    np.testing.assert_allclose(got, WANT[method], rtol=1e-5, atol=1e-6)
    members = [fake_member(m) for m in LOGITS_KBC]
    probs, scale = latency.reference_probs(members, jnp.zeros((2, 4), jnp.int32), method)
    np.testing.assert_allclose(probs, WANT[method], rtol=1e-12)
    assert scale == 9.0


@pytest.mark.parametrize("method", ["prob", "logit"])
def test_fused_and_sequential_committees_call_every_member(monkeypatch, method):
    """Three members whose 'forward' returns their params: the fused and one-by-one rows combine
    all three (dropping one changes the probabilities)."""
    monkeypatch.setattr(latency, "_logits_fn", lambda graphdef: lambda p, r, t: p)
    members = [fake_member(m, point=f"p{i}") for i, m in enumerate(LOGITS_KBC)]
    tokens = jnp.zeros((2, 4), jnp.int32)
    for runner in (latency.fused_runner(members, method),
                   latency.sequential_runner(members, method)):
        assert runner.combine == method and len(runner.members) == 3
        np.testing.assert_allclose(np.asarray(runner.forward(tokens)), WANT[method], rtol=1e-5,
                                   atol=1e-6)


def test_descriptions_count_every_member():
    alike = [types.SimpleNamespace(point="a")] * 3
    mixed = [types.SimpleNamespace(point=p) for p in ("a", "b", "a")]
    assert latency._describe(alike) == "3 x a"
    assert latency._describe(mixed) == "a + b + a"


def test_single_row_is_the_first_member_seed_zero_and_deep_seed_zero(monkeypatch):
    """--members=OTHER,POINT: the single row is OTHER (the first), built with seed 0, as is the
    deep row (members built as recorded stand-ins; the committee is stubbed)."""
    built: list[tuple[str, int, int]] = []

    def make_member(point: str, seed: int, num_labels: int, dtype: str, seq_len: int) -> Any:
        built.append((point, seed, num_labels))
        return types.SimpleNamespace(point=point, graphdef=None, params=None, rest=None)

    monkeypatch.setattr(latency, "make_member", make_member)
    monkeypatch.setattr(latency, "make_committee", lambda *args: ([], None))
    runners, _ = latency.build_runners(k=1, members=[OTHER, POINT], deep=DEEP, seq_len=8,
                                       num_labels=2)
    assert built == [(OTHER, 0, 2), (DEEP, 0, 2)]
    by = {r.name: r for r in runners}
    assert [by["single"].description, by["deep"].description] == [OTHER, DEEP]


def test_synthetic_tokens_lie_in_five_to_vocab():
    """Ids in [5, V): with V = 8 and 4096 draws every id 5, 6, 7 occurs and no other."""
    tokens = np.asarray(latency.synthetic_tokens(64, 64, 8, seed=3))
    assert tokens.shape == (64, 64) and tokens.dtype == np.int32
    assert set(np.unique(tokens).tolist()) == {5, 6, 7}


def test_option_lists_and_the_longest_sequence():
    assert latency._csv("1, 32,", int) == [1, 32]
    assert latency._csv(f"{POINT},,{OTHER}") == [POINT, OTHER]
    max_len = resolve_point(POINT).max_len
    assert latency.member_config(POINT, "float32", max_len).max_len == max_len
    with pytest.raises(ValueError, match=f"--seq_len={max_len + 1} exceeds"):
        latency.member_config(POINT, "float32", max_len + 1)


# -------------------------------------------------------------------------------------- committee

def test_each_member_name_is_paired_with_its_own_seeds_logits(tmp_path):
    """Seeds 3 and 8 of one run: row s of the saved logits is seed s's."""
    seed3, seed8 = [[1.0, 0.0]], [[0.0, 5.0]]
    run = write_run(tmp_path, "r", [3, 8], [seed3, seed8], [0])
    logits, labels, names = committee_cli.load_members([run], "test", "final")
    assert names == [f"r#seed3 ({run})", f"r#seed8 ({run})"]
    np.testing.assert_array_equal(logits, [seed3, seed8])
    assert labels.tolist() == [0]


def test_members_with_other_classes_are_refused(tmp_path):
    a = write_run(tmp_path, "a", [0], [[[1.0, 0.0]]], [0])
    b = write_run(tmp_path, "b", [0], [[[1.0, 0.0, 0.0]]], [0])
    with pytest.raises(committee_cli.CommitteeError, match="3 classes, others have 2"):
        committee_cli.load_members([a, b], "test", "final")


def test_reference_is_the_mean_of_its_seeds_and_the_header_counts_members(tmp_path):
    """A reference of 2 seeds right on 2 of 2 and 0 of 2 examples: 50 % (their averaged logits,
    (2, 0.5) and (0.5, 2), would be right on both: 100 %); runs of 2 + 1 seeds: 3 members."""
    labels = [0, 1]
    ref = write_run(tmp_path, "ref", [0, 1], [[[4.0, 0.0], [0.0, 4.0]],
                                              [[0.0, 1.0], [1.0, 0.0]]], labels)
    assert committee_cli.reference_accuracy(ref, "test", "final") == 0.5
    a = write_run(tmp_path, "a", [0, 1], [[[1.0, 0.0], [0.0, 1.0]]] * 2, labels)
    b = write_run(tmp_path, "b", [2], [[[1.0, 0.0], [1.0, 0.0]]], labels)
    result = committee_cli.write_committee([a, b], tmp_path / "out", reference=ref)
    assert result["reference_accuracy"] == 0.5 and len(result["members"]) == 3
    md = (tmp_path / "out" / "committee.md").read_text().splitlines()
    assert md[0] == "# Soft committee (prob averaging, test split, 3 members)"


def test_runs_reporting_two_splits_are_refused(tmp_path):
    a = write_run(tmp_path, "a", [0], [[[1.0, 0.0]]], [0], reported=("test",))
    b = write_run(tmp_path, "b", [0], [[[1.0, 0.0]]], [0], reported=("validation",))
    with pytest.raises(committee_cli.CommitteeError, match=r"different splits \(test, validation"):
        committee_cli.reported_split([a, b])


# ----------------------------------------------------------------------------------------- points

def test_a_variant_value_holding_an_equals_sign_is_one_config_error(capsys):
    """Only the first '=' separates name and value: 'ffn_scale=0.5=1' is the value '0.5=1' of
    ffn_scale (a ConfigError naming it), and --extra without --arch stops before any table."""
    assert points.variant_extra("encoder_variants:SwiGLUEncoder", ["ffn_scale=0.75"]) == (
        ("ffn_scale", 0.75),)
    with pytest.raises(ConfigError, match=r"ffn_scale=0\.5=1"):
        points.variant_extra("encoder_variants:SwiGLUEncoder", ["ffn_scale=0.5=1"])
    with pytest.raises(SystemExit) as exit_info:
        points.main(["--extra", "ffn_scale=0.5", POINT])
    assert exit_info.value.code == 2 and capsys.readouterr().out == ""


# -------------------------------------------------------------------------------------------- aot

def report(**fields: Any) -> aot.AotReport:
    base = dict(point="p", target="lower:tpu", platform="tpu", mesh={"data": 4, "fsdp": 2},
                batch_shape=[1, 1, 8, 8], params_total=1, params_embedding=0,
                params_non_embedding=1, state_bytes_per_device=aot.GIB,
                state_bytes_global=8 * aot.GIB, flops_per_device=None,
                flops_global_lowered=3e9, analytic_flops_per_device=1e9, lower_seconds=0.1,
                compile_seconds=None, memory=None, peak_bytes=None)
    return aot.AotReport(**{**base, **fields})


def test_memory_figures_read_each_field_of_its_own_attribute():
    stats = types.SimpleNamespace(argument_size_in_bytes=1, output_size_in_bytes=2,
                                  alias_size_in_bytes=3, temp_size_in_bytes=4,
                                  generated_code_size_in_bytes=5)
    assert aot.memory_figures(stats) == {"argument": 1, "output": 2, "alias": 3, "temp": 4,
                                         "generated_code": 5}
    assert aot.memory_figures(None) is None


def test_budget_boundary_and_the_per_device_state_when_lowering_only():
    """A peak of exactly 2 GiB fits a 2 GiB budget; lowering only, the 1 GiB per-device state
    (not the 8 GiB global one) is what the budget weighs."""
    aot.check_budget(report(peak_bytes=2 * aot.GIB), 2.0)
    with pytest.raises(UserError):
        aot.check_budget(report(peak_bytes=2 * aot.GIB + 1), 2.0)
    aot.check_budget(report(), 1.5)
    with pytest.raises(UserError, match="train state per device is 1.00 GiB"):
        aot.check_budget(report(), 0.5)


def test_default_devices_tree_bytes_and_byte_units():
    def cfg(data: int, fsdp: int) -> Any:
        return types.SimpleNamespace(mesh=types.SimpleNamespace(data=data, fsdp=fsdp))

    assert [aot.default_device_count(cfg(d, f)) for d, f in ((-1, 16), (-1, 2), (2, 3))] == [
        16, 8, 6]
    tree = {"a": jax.ShapeDtypeStruct((3, 5), jnp.bfloat16),
            "b": jax.ShapeDtypeStruct((2,), jnp.int8),
            "c": [jax.ShapeDtypeStruct((4,), jnp.float32)]}
    assert aot.tree_bytes(tree) == 3 * 5 * 2 + 2 * 1 + 4 * 4
    assert [aot.human_bytes(n) for n in (aot.GIB, 2 ** 20, 1024, 1023)] == [
        "1.00 GiB", "1.00 MiB", "1.00 KiB", "1023 B"]


def test_lowering_report_counts_devices_and_global_analytic_flops():
    """A 4 x 2 mesh: 8 devices, and the global analytic FLOPs are 8 x 1e9 per device."""
    text = aot.format_report(report(), 0.0)
    assert "for 8 tpu devices" in text.splitlines()[0]
    assert "FLOPs (global)     3e+09 per call (StableHLO, before partitioning; analytic 8e+09)" \
        in text


def test_forcing_the_host_device_count_replaces_the_one_in_xla_flags(monkeypatch):
    calls: list[tuple[str, Any]] = []
    monkeypatch.setenv("XLA_FLAGS", "--xla_a=1 --xla_force_host_platform_device_count=8")
    monkeypatch.setenv("JAX_PLATFORMS", "")
    monkeypatch.setattr(jax.config, "update", lambda name, value: calls.append((name, value)))
    aot.force_host_device_count(3)
    assert os.environ["XLA_FLAGS"] == "--xla_a=1 --xla_force_host_platform_device_count=3"
    assert os.environ["JAX_PLATFORMS"] == "cpu"
    assert calls == [("jax_platforms", "cpu"), ("jax_num_cpu_devices", 3)]


def fake_program(cfg: Any, batch_shape: Sequence[int]) -> types.SimpleNamespace:
    """A program that lowers to a cost analysis of 5 FLOPs, with no state."""
    lowered = types.SimpleNamespace(cost_analysis=lambda: {"flops": 5.0})
    traced = types.SimpleNamespace(lower=lambda **kwargs: lowered)
    state = types.SimpleNamespace(param_counts=types.SimpleNamespace(total=3, embedding=1,
                                                                     non_embedding=2),
                                  abstract={}, shardings={}, sharded_abstract=lambda: {})
    return types.SimpleNamespace(batch_shape=list(batch_shape), model=cfg, state=state,
                                 abstract_batch=lambda: {},
                                 train_step=types.SimpleNamespace(trace=lambda s, b: traced))


def test_analytic_flops_count_each_step_of_a_dispatch_and_each_member(monkeypatch):
    """Per device: complete train FLOPs per sequence x batch 4 x 2 steps per dispatch (x 3
    members) / 4 devices, the program itself faked."""
    from minilm_jax.configs.pretrain import get_config
    from minilm_jax.model import accounting
    from minilm_jax.settings.mlm_cap import effective_max_predictions
    from minilm_jax.train import population, program

    config = get_config(POINT)
    config.mesh.data, config.mesh.fsdp, config.train.batch_size = -1, 2, 4
    cfg = resolve_point(POINT)
    seq = cfg.max_len
    monkeypatch.setattr(program, "pretrain_program",
                        lambda c, mesh: fake_program(cfg, [2, 1, 4, seq]))
    monkeypatch.setattr(program, "population_program",
                        lambda members, mesh: fake_program(cfg, [3, 2, 1, 4, seq]))
    monkeypatch.setattr(population, "seeded_members", lambda c, n: list(range(n)))
    per_seq = accounting.train_flops_per_sequence(
        cfg, num_predictions=effective_max_predictions(config.mlm, cfg.max_len))
    one = aot.compile_train_step(config, None, target="lower:cpu", abstract_size=4)
    assert one.mesh == {"data": 2, "fsdp": 2} and one.flops_global_lowered == 5.0
    assert one.analytic_flops_per_device == pytest.approx(per_seq * 4 * 2 / 4)
    three = aot.compile_train_step(config, None, target="lower:cpu", abstract_size=4, members=3)
    assert three.analytic_flops_per_device == pytest.approx(per_seq * 4 * 2 * 3 / 4)


# --------------------------------------------------------------------------------- kernel profile

def test_equal_times_order_by_name_and_the_table_counts_launches_and_shares():
    """'b' and 'a' take 10 us each over 2 steps, 'c' 60 us in 6 launches: per step c 30 us (x3),
    then a, b 5 us (x0.5, x0.5): 40 us busy in 4 launches (of 3 kernels); shares 75, 12.5 and
    12.5 %."""
    events = [("b", 10_000.0), ("c", 10_000.0), ("a", 10_000.0)] + [("c", 10_000.0)] * 5
    got = kernel_profile.aggregate(events, steps=2)
    assert [(k.name, k.launches, k.us) for k in got.kernels] == [
        ("c", 3.0, 30.0), ("a", 0.5, 5.0), ("b", 0.5, 5.0)]
    lines = got.table(3).splitlines()
    assert lines[0] == "device time per step: 40.0 us busy in 4 launches"
    assert [float(line.split()[2].rstrip("%")) for line in lines[1:]] == [75.0, 12.5, 12.5]


def test_device_events_read_only_a_gpus_stream_lines(monkeypatch):
    def plane(name: str, lines: dict[str, list[tuple[str, float]]]) -> types.SimpleNamespace:
        return types.SimpleNamespace(name=name, lines=[
            types.SimpleNamespace(name=line, events=[types.SimpleNamespace(name=n, duration_ns=d)
                                                     for n, d in events])
            for line, events in lines.items()])

    planes = [plane("/device:GPU:0", {"Stream #13(Compute)": [("fusion", 7.0), ("gemm", 9.0)],
                                      "XLA Ops": [("fusion", 7.0)]}),
              plane("/device:TPU:0", {"Stream #1": [("tpu_op", 5.0)]}),
              plane("/host:CPU", {"stream": [("host", 3.0)]})]
    fake = types.SimpleNamespace(from_file=lambda path: types.SimpleNamespace(planes=planes))
    monkeypatch.setattr(jax.profiler, "ProfileData", fake)
    assert kernel_profile.device_events("x.xplane.pb") == [("fusion", 7.0), ("gemm", 9.0)]
