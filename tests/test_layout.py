"""The package's layers, checked on the source: each imports only the layers before it.

    envs -> agents -> rundir -> eval -> train

so the evaluator never reaches into the trainer, a task never reaches into the engine, and no
checkpoint is ever loaded in a way that can run code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = ("envs", "agents", "rundir", "eval", "train")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved within its package), at any depth."""
    package = f"capgap.{path.parent.name}"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_the_layers_before_them(layer: str) -> None:
    later = LAYERS[LAYERS.index(layer) + 1:]
    for path in sorted((ROOT / layer).glob("*.py")):
        bad = sorted(m for m in imports(path) if any(m == f"capgap.{x}" or m.startswith(f"capgap.{x}.") for x in later))
        assert not bad, f"{path.relative_to(ROOT)} imports a later layer: {bad}"


def test_tasks_do_not_import_the_engine() -> None:
    """The Task interface (task.py) and every task file see the engine only through task.View."""
    engine = {"capgap.envs.core", "capgap.envs.core.GridCore", "capgap.envs.env"}
    for path in sorted((ROOT / "envs").glob("*.py")):
        if path.name in ("core.py", "env.py", "oracle.py", "__init__.py"):
            continue
        assert not imports(path) & engine, f"{path.name} imports the engine"


def test_no_checkpoint_is_loaded_with_pickle() -> None:
    sources = [p for d in (*LAYERS, "experiments", "benchmarks") for p in (ROOT / d).glob("*.py")]
    assert len(sources) > 20
    assert not [p.name for p in sources if "weights_only=False" in p.read_text()]
