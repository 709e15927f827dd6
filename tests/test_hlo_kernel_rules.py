"""Kernels per step (minilm_jax/hlo_kernels.py) on optimized modules written by hand, so each count
is known by construction: an asynchronous pair with an ``async-update`` between its halves counts
its ``-start`` only, and a two-branch ``conditional`` (``true_computation`` /
``false_computation``) counts its larger branch, whichever of the two that is."""

from __future__ import annotations

import pytest

from minilm_jax.hlo_kernels import kernels_per_step

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
