"""Where a compiled JAX function spends its time on XLA:CPU: thunk times from a
`jax.profiler` trace, grouped by the JAX operation each HLO instruction came from.

    table = op_times(compiled, args, runs=2)       # {(kind, operation): ms per run}
    print(format_table(table, top=25))

XLA:CPU runs one thunk per HLO instruction (a fusion, a library call such as a YNNPACK
dot, a while loop's body, ...) on its thread pool; the trace records each on the thread
that ran it. Times are thread time per run summed over threads, so with several threads
they can add up to more than the wall time, and work a library splits onto other
threads (Eigen's convolutions and dots) counts once, on the launching thread. Each
instruction is named by its thunk kind (the instruction name without its number:
`ynn_fusion`, `dot`, `add_reduce_fusion`, ...) and its JAX operation (the `op_name`
metadata without the function name: `transpose(jvp())/reduce_sum` is a reduction in the
backward pass). `categories` folds those into a few families for a summary.
"""

from __future__ import annotations

import collections
import pathlib
import re
import tempfile
from typing import Callable, Sequence

import jax
from jax.profiler import ProfileData

_SKIPPED_EVENTS = ("ThunkExecutor", "while", "SlinkyThreadPool", "end: ")


def _instruction_operations(hlo_text: str) -> dict[str, str]:
    """{HLO instruction name: its op_name metadata without the leading `jit(f)/`}; an
    instruction XLA made without metadata (a reduction it split into windows, a layout
    copy) takes the operation of its first operand that has one."""
    operations, operands = {}, {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ [\w\-]+\(([^)]*)\)", line)
        if match:
            op = re.search(r'op_name="([^"]*)"', line)
            operations[match.group(1)] = re.sub(r"^jit\([^)]*\)/", "", op.group(1) if op else "")
            operands[match.group(1)] = re.findall(r"%([\w.\-]+)", match.group(2))

    def named(name: str, depth: int = 0) -> str:
        if operations.get(name) or depth == 4:
            return operations.get(name, "")
        return next(filter(None, (named(o, depth + 1) for o in operands.get(name, ()))), "")

    return {name: named(name) for name in operations}


def op_times(compiled: jax.stages.Compiled, args: Sequence, runs: int = 2,
             ) -> dict[tuple[str, str], float]:
    """Thunk thread time in ms per run of `compiled(*args)` (after one untraced call),
    keyed by (thunk kind, JAX operation); see the module docstring."""
    operations = _instruction_operations(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(runs):
            jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        trace = next(pathlib.Path(folder).rglob("*.xplane.pb"))
        profile = ProfileData.from_file(str(trace))
    totals: collections.Counter = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):
                continue
            for event in line.events:
                if event.name.startswith(_SKIPPED_EVENTS):
                    continue
                kind = re.sub(r"[.\d]+$", "", event.name)
                totals[kind, operations.get(event.name, "")] += event.duration_ns / 1e6 / runs
    return dict(totals)


_FAMILIES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("chunked attention (loop body)", lambda kind, op: "while/body" in op),
    ("convolutions", lambda kind, op: "conv_general_dilated" in op or "convolution" in kind),
    ("other matmuls", lambda kind, op: "dot_general" in op or kind in ("dot", "dot_general")),
    ("reductions", lambda kind, op: "reduce" in op or "reduce" in kind),
    ("erf / exp / other elementwise, copies", lambda kind, op: True),
)


def categories(table: dict[tuple[str, str], float]) -> dict[str, float]:
    """`op_times` folded into families (attention loop, convolutions, other matmuls,
    reductions, the rest), in ms per run."""
    out = {name: 0.0 for name, _ in _FAMILIES}
    for (kind, op), ms in table.items():
        name = next(name for name, test in _FAMILIES if test(kind, op))
        out[name] += ms
    return out


def format_table(table: dict[tuple[str, str], float], top: int = 25) -> str:
    """A Markdown table of the `top` entries of `op_times`, then the family sums."""
    total = sum(table.values())
    rows = ["| thread ms | share | thunk | JAX operation |", "|---:|---:|---|---|"]
    for (kind, op), ms in sorted(table.items(), key=lambda item: -item[1])[:top]:
        rows.append(f"| {ms:.1f} | {ms / total:.0%} | {kind} | {op[-70:] or '-'} |")
    rows += ["", "| family | thread ms | share |", "|---|---:|---:|"]
    for name, ms in categories(table).items():
        rows.append(f"| {name} | {ms:.1f} | {ms / total:.0%} |")
    rows.append(f"| total | {total:.1f} | |")
    return "\n".join(rows)
