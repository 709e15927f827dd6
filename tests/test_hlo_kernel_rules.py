"""Kernels per step (minilm_jax/hlo_kernels.py) on optimized modules written by hand, so each count
is known by construction: an asynchronous pair with an ``async-update`` between its halves counts
its ``-start`` only, and a two-branch ``conditional`` (``true_computation`` /
``false_computation``) counts its larger branch, whichever of the two that is."""

from __future__ import annotations

import pytest

from minilm_jax.hlo_kernels import PARTS, kernels_per_step, step_kernels

BRANCHES = """HloModule branches, is_scheduled=true

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %e = f32[8]{0} exponential(%p)
}

%one (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  ROOT %x = f32[8]{0} fusion(%a), kind=kLoop, calls=%fused
}

%three (b: f32[8]) -> f32[8] {
  %b = f32[8]{0} parameter(0)
  %y = f32[8]{0} fusion(%b), kind=kLoop, calls=%fused
  %z = f32[8]{0} copy(%y)
  ROOT %s = f32[8]{0} sort(%z), dimensions={0}, to_apply=%fused
}

%async_body (c: f32[8]) -> f32[8] {
  %c = f32[8]{0} parameter(0)
  ROOT %w = f32[8]{0} custom-call(%c), custom_call_target="__gpu$xla.gpu.triton"
}

ENTRY %main (p0: f32[8], k: pred[]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  %k = pred[] parameter(1)
  %start = ((f32[8]{0}), f32[8]{0}, s32[]) async-start(%p0), calls=%async_body
  %update = ((f32[8]{0}), f32[8]{0}, s32[]) async-update(%start)
  %done = f32[8]{0} async-done(%update)
  ROOT %branch = f32[8]{0} conditional(%k, %done, %done), true_computation=%TRUE, false_computation=%FALSE
}
"""


@pytest.mark.parametrize("true, false", [("one", "three"), ("three", "one"), ("one", "one")])
def test_a_two_branch_conditional_counts_its_larger_branch(true, false):
    hlo = BRANCHES.replace("%TRUE", f"%{true}").replace("%FALSE", f"%{false}")
    # the async pair: its -start (1); the conditional: the larger branch (1 or 3)
    larger = max({"one": 1, "three": 3}[true], {"one": 1, "three": 3}[false])
    assert kernels_per_step(hlo) == 1 + larger


def test_async_update_and_done_launch_nothing():
    base = BRANCHES.replace("%TRUE", "%one").replace("%FALSE", "%one")
    assert kernels_per_step(base) == 1 + 1
    # a second update between the halves: still one launch for the pair
    twice = base.replace(
        "  %done = f32[8]{0} async-done(%update)\n",
        "  %update.2 = ((f32[8]{0}), f32[8]{0}, s32[]) async-update(%update)\n"
        "  %done = f32[8]{0} async-done(%update.2)\n")
    assert twice.count("async-update(") == 2 and kernels_per_step(twice) == 1 + 1
    # without the pair: only the branch
    bare = base.replace("async-start(%p0), calls=%async_body", "bitcast(%p0)").replace(
        "async-update(%start)", "bitcast(%start)").replace("async-done(%update)",
                                                           "bitcast(%update)")
    assert kernels_per_step(bare) == 1


SLICES = """HloModule slices, is_scheduled=true

%leaf (v: f32[1000], s: f32[]) -> f32[10,5] {
  %v = f32[1000]{0} parameter(0)
  %s = f32[] parameter(1)
  %b = f32[1000]{0} broadcast(%s), dimensions={}
  %m = f32[1000]{0} multiply(%v, %b)
  %part = f32[50]{0} slice(%m), slice={[100:150]}
  ROOT %r = f32[10,5]{1,0} bitcast(%part)
}

%summed (v: f32[1000], s: f32[]) -> f32[10] {
  %v = f32[1000]{0} parameter(0)
  %s = f32[] parameter(1)
  %rows = f32[10,100]{1,0} bitcast(%v)
  ROOT %r = f32[10]{0} reduce(%rows, %s), dimensions={1}, to_apply=%add
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %c = f32[] add(%a, %b)
}

ENTRY %main (p0: f32[1000], p1: f32[]) -> (f32[10,5], f32[10], f32[10,5]) {
  %p0 = f32[1000]{0} parameter(0)
  %p1 = f32[] parameter(1)
  %sliced = f32[10,5]{1,0} fusion(%p0, %p1), kind=kLoop, calls=%leaf
  %reduced = f32[10]{0} fusion(%p0, %p1), kind=kLoop, calls=%summed
  %input = f32[10,5]{1,0} fusion(%p0, %p1), kind=kInput, calls=%leaf
  ROOT %t = (f32[10,5]{1,0}, f32[10]{0}, f32[10,5]{1,0}) tuple(%sliced, %reduced, %input)
}
"""


def test_a_loop_fusion_that_slices_a_long_vector_reads_only_its_slice():
    """Bytes per launch: a loop fusion of elementwise ops and a slice reads at most one element of
    each operand per output element (50 of the 1,000: 4 * (50 + 50 + 1)); one that reduces, and a
    fusion of another kind, read their operands whole (4 * (10 + 1000 + 1), 4 * (50 + 1000 + 1))."""
    kernels = step_kernels(SLICES)
    moved = {launch.name: launch.bytes for launch in kernels.launches}
    assert moved == {"sliced": 4 * (50 + 50 + 1), "reduced": 4 * (10 + 1000 + 1),
                     "input": 4 * (50 + 1000 + 1)}
    assert kernels.total == 3
    assert kernels.bytes_by_part() == {**{part: 0 for part in PARTS}, "other": sum(moved.values())}
