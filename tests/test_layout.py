"""The package's layout: each folder is one stage of the data flow and imports only from the
stages before it (and the shared core), there is no import cycle (at module level or inside
functions), and inference needs neither the trainer nor the optimizer."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bregflax"
# The stages in data-flow order; a module may import its own stage and those before it.
STAGES = ("core", "nn", "data", "configs", "training", "inference", "evaluation", "paper")
CORE = {
    "registry",
    "rundir",
    "echoes",
    "errors",
    "safe_io",
    "hostile",
    "paths",
    "compile_cache",
    "flags",
    "summary",
}
# Commands and the public API may import every stage.
ENTRY = {"__init__", "main", "cli", "evaluate", "reproduce", "predictor"}
TRAINER = ("bregflax.training.train", "bregflax.training.state", "bregflax.training.optim",
           "bregflax.training.logger", "bregflax.training.steps")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every bregflax module ``path`` imports, anywhere in the file (functions too)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "bregflax":
                found.add(name)
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "entry"  # the package's public API
    if len(parts) == 2 and parts[1] in ENTRY:
        return "entry"
    if len(parts) == 2 and parts[1] in CORE:
        return "core"
    return parts[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {m: imports(p, known) - {m} for m, p in modules().items()}


def test_every_module_has_a_stage(graph):
    unplaced = {m for m in graph if stage(m) not in (*STAGES, "entry")}
    assert not unplaced, f"modules outside the stages: {sorted(unplaced)}"


def test_each_stage_imports_only_the_stages_before_it(graph):
    bad = []
    for module, targets in graph.items():
        mine = stage(module)
        if mine == "entry":
            continue
        for target in targets:
            theirs = stage(target)
            if theirs == "entry" or STAGES.index(theirs) > STAGES.index(mine):
                bad.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle(graph):
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_inference_and_evaluation_never_import_the_trainer(graph):
    for module, targets in graph.items():
        if stage(module) == "inference":
            assert not targets & set(TRAINER), f"{module}: {sorted(targets & set(TRAINER))}"
        if stage(module) == "evaluation":
            assert "bregflax.training.train" not in targets, module


# Longer modules that are one concept each.
ONE_CONCEPT = {"bregflax.evaluation.metrics": "the paper's metrics, each checked against sklearn"}


def test_no_module_is_over_about_350_lines():
    lines = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    long = {m: n for m, n in lines.items() if n > 400 and m not in ONE_CONCEPT}
    assert not long, long


def test_loading_the_shipped_model_imports_no_trainer_and_installs_no_hook():
    code = (
        "import logging, sys, warnings\n"
        "hook = sys.unraisablehook\n"
        "import bregflax\n"
        "from bregflax.inference.predictor import Predictor\n"
        "p = Predictor.from_pretrained()\n"
        "p.predict_faces(__import__('numpy').zeros((1, 48, 48, 1), 'uint8'))\n"
        "assert sys.unraisablehook is hook\n"
        "assert not [f for f in warnings.filters if 'device_put' in str(f[1])]\n"
        "assert not logging.getLogger('asyncio').filters\n"
        "print(sorted(m for m in sys.modules if m.startswith(('optax', 'bregflax.training'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
