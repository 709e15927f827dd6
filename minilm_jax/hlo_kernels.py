"""Kernels per step: the launches of one run of an optimized HLO module, counted from its text
(``compiled.as_text()`` or XLA's ``*after_optimizations.txt`` dump), by part of the training step,
so a step's launches can be read beside its bytes and FLOPs (``python -m minilm_jax.bench``,
``python -m minilm_jax.aot``) and compared between two trees (``launch/device_check.sh``).

The rule: every instruction of the entry computation counts one launch (a fusion, a custom call
such as a cuBLAS GEMM or a Pallas kernel, a collective, a copy, an unfused op), except values,
views, tuples and ordering tokens (``_NOT_LAUNCHED``) and the ``-done`` halves of asynchronous
pairs; a ``while`` counts its condition's and body's launches times its trip count where XLA knows
it (``known_trip_count``), once where it does not, and the dispatch loop of ``steps_per_dispatch``
(an entry-level ``while`` of that trip count) once: one step. A ``conditional`` counts its largest
branch, a ``call`` its callee (XLA:GPU's command buffers are calls). Computations called inside a
fusion or as a reducer launch nothing.

On a TPU there are no kernel launches: a program's steps are its fusions, run one after another
by the TensorCore, while asynchronous copies and slices (``copy-start``, ``slice-start``: DMAs)
and the unfused elementwise ops of scalars and tiny vectors (the random keys' arithmetic) run
beside them. There (``platform="tpu"``) a step counts what the core runs as programs of their own:
fusions, custom calls, convolutions, dots, collectives and sorts (``_TPU_PROGRAMS``).

Bytes per launch: its result arrays and its operands, each whole, except where a loop fusion reads
one element of an operand per output element (elementwise ops, slices, gathers, broadcasts:
no reduction or product inside), which counts no more of an operand than its largest output
has (one leaf sliced out of a raveled vector counts as that leaf). Estimates, not XLA's cost
analysis (which a compile-only device does not give): on an H100 the default `paper-1.25m` step
counts 0.79 GB here against XLA's 0.84 GB on the device.

Parts come from the named scopes the step is traced under (``masking``, ``embeddings``,
``encoder``, ``output_layer``, ``optimizer``: :mod:`minilm_jax.train.step`,
:mod:`minilm_jax.model.encoder`, :mod:`minilm_jax.model.models`), read from each instruction's
``op_name``; a backward op carries ``transpose(`` there.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter

# Instructions of an optimized HLO module that launch nothing: values, views, tuples, ordering
# tokens and the second halves of asynchronous pairs (the ``-start`` half is the launch).
_NOT_LAUNCHED = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
    "add-dependency", "opt-barrier", "domain", "partition-id", "replica-id", "async-update"})
_TPU_PROGRAMS = ("fusion", "custom-call", "convolution", "dot", "sort", "all-reduce",
                 "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COMPUTATION = re.compile(r"^(ENTRY )?%?([^\s(]+) \(.*\) -> .*\{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([^\s=]+) = (.*)$")
_CALLED = re.compile(r"\b(body|condition|to_apply|true_computation|false_computation)=%?([^\s,}]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_ARRAY = re.compile(r"\b(pred|[subf]\d+|bf16|f8e\w+|c64|c128)\[([\d,]*)\]")

PARTS = ("masking", "embeddings", "encoder forward", "encoder backward", "output layer",
         "optimizer", "other")
# named scope -> part; the encoder's backward is told from its forward by ``transpose(``
_SCOPES = (("masking", "masking"), ("embeddings", "embeddings"), ("output_layer", "output layer"),
           ("optimizer", "optimizer"), ("encoder", "encoder"))
_BITS = {"pred": 8, "bf16": 16, "c64": 64, "c128": 128}
_FUSED = re.compile(r"\bcalls=%?([^\s,}]+)")
# ops inside a fusion that read many elements of an operand for one output element
_MANY_READS = frozenset({"reduce", "reduce-window", "dot", "convolution", "sort", "scatter",
                         "select-and-scatter", "custom-call", "fft", "cholesky",
                         "triangular-solve"})


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    opcode: str
    rest: str  # the text after the opcode's name: operands, attributes, metadata
    shape: str  # the result shape's text


@dataclasses.dataclass(frozen=True)
class Launch:
    """One launching instruction of the step: its name, opcode, part, how many times one step runs
    it, and the bytes it writes and reads (its result and operand arrays)."""

    name: str
    opcode: str
    part: str
    times: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class StepKernels:
    """The launches of one step, in program order (``times`` summed: :attr:`total`)."""

    launches: tuple[Launch, ...]

    @property
    def total(self) -> int:
        return sum(launch.times for launch in self.launches)

    def _per_part(self, each) -> dict[str, int]:
        """``each(launch) * launch.times`` summed per part (:data:`PARTS`' order)."""
        sums = Counter()
        for launch in self.launches:
            sums[launch.part] += each(launch) * launch.times
        return {part: sums.get(part, 0) for part in PARTS}

    def by_part(self) -> dict[str, int]:
        return self._per_part(lambda launch: 1)

    def bytes_by_part(self) -> dict[str, int]:
        """Bytes the launches of each part write and read in one step."""
        return self._per_part(lambda launch: launch.bytes)

    def largest(self, n: int = 5) -> list[Launch]:
        """The ``n`` launches that move the most bytes."""
        return sorted(self.launches, key=lambda launch: -launch.bytes * launch.times)[:n]


def _opcode(rhs: str) -> tuple[str, str, str]:
    """(opcode, text after it, result shape) of an instruction's right-hand side ``shape
    opcode(operands), ...`` (a tuple shape is parenthesised and may hold spaces)."""
    start = 0
    if rhs.startswith("("):
        depth = 0
        for start, char in enumerate(rhs):
            depth += (char == "(") - (char == ")")
            if depth == 0:
                break
    cut = rhs.index(" ", start)
    rest = rhs[cut + 1:]
    return rest[:rest.index("(")], rest, rhs[:cut]


def _elements(shape_text: str) -> list[tuple[int, int]]:
    """(elements, bits per element) of each array of a shape's text."""
    return [(math.prod(int(d) for d in dims.split(",") if d),
             _BITS.get(dtype) or int(re.match(r"[a-z]+(\d+)", dtype)[1]))  # f8e4m3fn: 8
            for dtype, dims in _ARRAY.findall(shape_text)]


def _array_bytes(shape_text: str) -> int:
    return sum(n * bits // 8 for n, bits in _elements(shape_text))


def _elements_read(ins: Instruction, computations: dict[str, list[Instruction]]) -> int | None:
    """The most elements ``ins`` reads of any one operand where that is known: the elements of its
    largest output, for a loop fusion (``kind=kLoop``: one thread per output element) of
    elementwise ops, slices, gathers, broadcasts and reshapes only, with no reduction, product,
    sort or scatter inside (one element of each operand per output element); else None."""
    if ins.opcode != "fusion" or "kind=kLoop" not in ins.rest:
        return None
    fused = _FUSED.search(ins.rest)
    body = computations.get(fused[1]) if fused else None
    if body is None or any(op.opcode in _MANY_READS for op in body):
        return None
    return max((n for n, _ in _elements(ins.shape)), default=0)


def _read_bytes(operand_shape: str, limit: int | None) -> int:
    """Bytes read of one operand: the whole array, or no more than ``limit`` elements of each of
    its arrays (:func:`_elements_read`); so a fusion that slices one leaf out of a long raveled
    vector counts that leaf only."""
    return sum((n if limit is None else min(n, limit)) * bits // 8
               for n, bits in _elements(operand_shape))


def part_of(op_name: str) -> str:
    """The step part an instruction's ``op_name`` belongs to (:data:`PARTS`)."""
    for scope, part in _SCOPES:
        if re.search(rf"(^|[/(]){scope}([/)]|$)", op_name):
            if part == "encoder":
                return "encoder backward" if "transpose(" in op_name else "encoder forward"
            return part
    return "other"


def _parse(hlo_text: str) -> tuple[dict[str, list[Instruction]], str]:
    computations: dict[str, list[Instruction]] = {}
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
            current.append(Instruction(instruction[1], *_opcode(instruction[2])))
    if entry is None:
        raise ValueError("no ENTRY computation in this HLO text")
    return computations, entry


def _launches_a_kernel(opcode: str, platform: str) -> bool:
    if platform == "tpu":
        return opcode.removesuffix("-start") in _TPU_PROGRAMS
    return opcode not in _NOT_LAUNCHED and not opcode.endswith("-done")


def step_kernels(hlo_text: str, steps_per_dispatch: int = 1, platform: str = "gpu") -> StepKernels:
    """The launches of one step of an optimized HLO module (the rule: the module docstring;
    ``platform`` ``tpu``: the programs the TensorCore runs)."""
    computations, entry = _parse(hlo_text)
    shapes = {ins.name: ins.shape for body in computations.values() for ins in body}
    expanded: dict[str, list[Launch]] = {}

    def launches(name: str, top: bool) -> list[Launch]:
        if name in expanded:
            return expanded[name]
        expanded[name] = []  # a computation that calls itself counts once
        found: list[Launch] = []
        for ins in computations.get(name, []):
            called = dict(_CALLED.findall(ins.rest))
            if ins.opcode == "while":
                trips = _TRIP_COUNT.search(ins.rest)
                times = int(trips[1]) if trips else 1
                if top and times == steps_per_dispatch:
                    times = 1  # the dispatch loop: one step
                inner = launches(called["condition"], False) + launches(called["body"], False)
                found += [dataclasses.replace(launch, times=launch.times * times)
                          for launch in inner]
            elif ins.opcode == "conditional":
                branches = _BRANCHES.search(ins.rest)
                names = ([b.strip().lstrip("%") for b in branches[1].split(",")] if branches
                         else [called["true_computation"], called["false_computation"]])
                found += max((launches(b, False) for b in names),
                             key=lambda ls: sum(launch.times for launch in ls))
            elif ins.opcode == "call":
                found += launches(called["to_apply"], top)
            elif _launches_a_kernel(ins.opcode, platform):
                op_name = _OP_NAME.search(ins.rest)
                operands = re.findall(r"%([^\s,()]+)", ins.rest[:ins.rest.find(")")])
                limit = _elements_read(ins, computations)
                size = _array_bytes(ins.shape) + sum(_read_bytes(shapes.get(o, ""), limit)
                                                     for o in operands)
                found.append(Launch(ins.name, ins.opcode, part_of(op_name[1] if op_name else ""),
                                    1, size))
        expanded[name] = found
        return found

    return StepKernels(tuple(launches(entry, True)))


def kernels_per_step(hlo_text: str, steps_per_dispatch: int = 1, platform: str = "gpu") -> int:
    """Kernel launches of one step of an optimized HLO module (:func:`step_kernels`' total)."""
    return step_kernels(hlo_text, steps_per_dispatch, platform).total


def compiled_kernels(jitted, *args, steps_per_dispatch: int = 1) -> int:
    """:func:`kernels_per_step` of ``jitted`` compiled for ``args`` (after :func:`compiled_cost`
    of the same arguments, JAX returns the compiled executable without compiling again)."""
    return kernels_per_step(jitted.lower(*args).compile().as_text(), steps_per_dispatch)
