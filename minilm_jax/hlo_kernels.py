"""Kernels per step: the launches of one run of an optimized HLO module, counted from its text
(``compiled.as_text()`` or XLA's ``*after_optimizations.txt`` dump), so a step's launches can be
read beside its bytes and FLOPs (``python -m minilm_jax.bench``) and compared between two trees
(``launch/device_check.sh``)."""

from __future__ import annotations

import re


# Instructions of an optimized HLO module that launch nothing: values, views, tuples, ordering
# tokens and the second halves of asynchronous pairs (the ``-start`` half is the launch).
_NOT_LAUNCHED = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
    "add-dependency", "opt-barrier", "domain", "partition-id", "replica-id", "async-update"})
_COMPUTATION = re.compile(r"^(ENTRY )?%?([^\s(]+) \(.*\) -> .*\{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?[^\s=]+ = (.*)$")
_CALLED = re.compile(r"\b(body|condition|to_apply|true_computation|false_computation)=%?([^\s,}]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")


def _opcode(rhs: str) -> tuple[str, str]:
    """(opcode, attributes text) of an instruction's right-hand side ``shape opcode(operands), ...``
    (a tuple shape is parenthesised and may hold spaces)."""
    start = 0
    if rhs.startswith("("):
        depth = 0
        for start, char in enumerate(rhs):
            depth += (char == "(") - (char == ")")
            if depth == 0:
                break
    rest = rhs[rhs.index(" ", start) + 1:]
    opcode = rest[:rest.index("(")]
    return opcode, rest


def kernels_per_step(hlo_text: str) -> int:
    """Kernel launches of one run of an optimized HLO module (``compiled.as_text()`` or XLA's
    ``*after_optimizations.txt`` dump). The rule: every instruction of the entry computation counts
    one (a fusion, a custom call such as a cuBLAS GEMM or a Pallas kernel, a collective, a copy, an
    unfused op), except those in ``_NOT_LAUNCHED`` and the ``*-done`` halves of asynchronous pairs;
    a ``while`` counts its condition's and its body's launches once each (not times the trip count,
    as XLA's cost analysis counts a loop body once, so a dispatch that scans K steps counts one
    step), a ``conditional`` its largest branch's, a ``call`` its callee's (XLA:GPU's command
    buffers are calls). Computations called inside a fusion or as a reducer launch nothing."""
    computations: dict[str, list[tuple[str, str]]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = computations.setdefault(header[2], [])
            entry = header[2] if header[1] else entry
            continue
        if line.startswith("}"):
            current = None
        elif current is not None and (instruction := _INSTRUCTION.match(line)):
            current.append(_opcode(instruction[1]))
    if entry is None:
        raise ValueError("no ENTRY computation in this HLO text")
    counted: dict[str, int] = {}

    def launches(name: str) -> int:
        if name not in counted:
            counted[name] = 0  # a computation that calls itself counts once
            total = 0
            for opcode, rest in computations.get(name, []):
                called = dict((key, value) for key, value in _CALLED.findall(rest))
                if opcode == "while":
                    total += launches(called["condition"]) + launches(called["body"])
                elif opcode == "conditional":
                    branches = _BRANCHES.search(rest)
                    names = ([b.strip().lstrip("%") for b in branches[1].split(",")] if branches
                             else [called["true_computation"], called["false_computation"]])
                    total += max(launches(b) for b in names)
                elif opcode == "call":
                    total += launches(called["to_apply"])
                elif opcode not in _NOT_LAUNCHED and not opcode.endswith("-done"):
                    total += 1
            counted[name] = total
        return counted[name]

    return launches(entry)


def compiled_kernels(jitted, *args) -> int:
    """:func:`kernels_per_step` of ``jitted`` compiled for ``args`` (after :func:`compiled_cost`
    of the same arguments, JAX returns the compiled executable without compiling again)."""
    return kernels_per_step(jitted.lower(*args).compile().as_text())
