"""How several models trained together run inside one compiled program: ``vmap`` (batched, the fast
choice on GPUs and TPUs) or ``map`` (``lax.map``: one member after another in a compiled loop; on
CPUs about twice as fast as ``vmap`` for tiny models, measured by ``python -m
minilm_jax.finetune.bench`` and ``python -m minilm_jax.bench --members``); ``auto`` picks ``map`` on
CPU and ``vmap`` elsewhere. Both compute the same function of each member's arrays.

Used by fine-tuning (S seeds of one task) and pre-training populations (N members).
"""

from __future__ import annotations

from typing import Callable

import jax

from minilm_jax.errors import UserError
import minilm_jax.model.target_platform as target_platform

MEMBER_STRATEGIES = ("auto", "vmap", "map")


def members_strategy(members: str = "auto", field: str = "members") -> str:
    """``vmap`` or ``map`` for ``members`` (``auto``: ``map`` on CPU, ``vmap`` on accelerators);
    a one-line error naming the config ``field`` for anything else."""
    if members not in MEMBER_STRATEGIES:
        raise UserError(f"{field}={members!r}: must be one of {', '.join(MEMBER_STRATEGIES)}")
    if members == "auto":
        return "map" if target_platform.platform() == "cpu" else "vmap"
    return members


def over_members(fn: Callable, members: str, shared: int = 0) -> Callable:
    """``fn`` applied to every member: the leading axis of each argument but the last ``shared``
    ones (those are the same for every member), by ``vmap`` or ``lax.map`` (see the module doc)."""
    if members_strategy(members) == "vmap":
        def batched(*args):
            count = len(args) - shared
            return jax.vmap(fn, in_axes=(0,) * count + (None,) * shared)(*args)
        return batched

    def looped(*args):
        count = len(args) - shared
        per_member, common = args[:count], args[count:]
        return jax.lax.map(lambda xs: fn(*xs, *common), per_member)
    return looped
