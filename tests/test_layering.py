"""The package's layering, checked by walking every module's imports (module level and
inside functions): low packages never import high ones, and no command imports another.

    utilities   atomic, checkpoints, config_files, image_metrics, logs, video, sharding,
                stages, xla_workarounds
    leaves      render, diffusion, tracking          (utilities only)
    fourd       + render, diffusion                  (never models)
    models      utilities only
    data        + render
    pipeline    + models, render, diffusion
    training, reconstruction, evaluation, sampling, export   + any package below them
    commands    train, sample, turntable, ...        any package, never another command

A new top-level module or package must be given its place here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "t4a_jax"
UTILITIES = {"atomic", "checkpoints", "config_files", "image_metrics", "logs", "video",
             "sharding", "stages", "xla_workarounds"}
LEAVES = {"render", "diffusion", "tracking"}
COMMANDS = {"train", "sample", "turntable", "reconstruct", "animate", "evaluate"}
HELPERS = {"training", "reconstruction", "evaluation", "sampling", "export"}
BELOW_HELPERS = UTILITIES | LEAVES | {"fourd", "models", "data", "pipeline"}
ALLOWED = {
    **{name: set() for name in UTILITIES},
    **{name: set() for name in LEAVES},
    "fourd": {"render", "diffusion"},
    "models": set(),
    "data": {"render"},
    "pipeline": {"models", "render", "diffusion"},
    **{name: BELOW_HELPERS for name in HELPERS},
    **{name: BELOW_HELPERS | HELPERS for name in COMMANDS},
}


def _unit(path: pathlib.Path) -> str:
    """The layering unit of a file: its top-level package or module under t4a_jax."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_units(path: pathlib.Path) -> set[str]:
    """The t4a_jax units that the module at `path` imports anywhere in its body."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "t4a_jax" else [
                f"t4a_jax.{alias.name}" for alias in node.names]
        else:
            continue
        units.update(name.split(".")[1] for name in names
                     if name.startswith("t4a_jax.") and name != "t4a_jax")
    return units


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
                 or p.parent != PACKAGE)


def test_every_unit_has_a_place():
    units = {_unit(p) for p in MODULES}
    assert units <= set(ALLOWED), f"give {sorted(units - set(ALLOWED))} a layer here"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_the_layers(path):
    unit = _unit(path)
    imported = _imported_units(path) - {unit} - UTILITIES
    assert imported <= ALLOWED[unit], (
        f"t4a_jax/{path.relative_to(PACKAGE)} ({unit}) imports "
        f"{sorted(imported - ALLOWED[unit])}; allowed: {sorted(ALLOWED[unit])}")


def test_the_walk_sees_imports():
    """The checker itself: module-level, in-function and `from t4a_jax import x` forms."""
    source = PACKAGE / "evaluation" / "probe.py"
    assert {"data", "models", "pipeline", "tracking"} <= _imported_units(source)
