"""The package's folders are layers: a module imports from its own folder and the layers
before it, never from one after it (ast-read, so lazy imports inside functions count too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "swarmlab"
LAYERS = ["", "core", "adapters", "host", "lab", "teach", "classroom", "cli"]  # "": swarmlab/ itself
ENTRY = {"__init__", "__main__"}  # the package's face and `python -m swarmlab` sit above everything


def layer_of(module: str) -> int:
    parts = module.split(".")[1:]  # swarmlab.<folder>.<module> or swarmlab.<module>
    return LAYERS.index(parts[0]) if len(parts) > 1 and parts[0] in LAYERS else 0


def imported(path: Path) -> set[str]:
    here = ["swarmlab", *path.relative_to(PACKAGE).with_suffix("").parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if not module.startswith("swarmlab"):
                continue
            for alias in node.names:  # `from swarmlab.lab import model` names a module
                candidate = f"{module}.{alias.name}"
                sub = PACKAGE.joinpath(*candidate.split(".")[1:])
                out.add(candidate if sub.with_suffix(".py").exists() or sub.is_dir() else module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("swarmlab")}
    return out


def test_no_module_imports_from_a_layer_after_its_own():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in ENTRY and path.parent == PACKAGE:
            continue
        me = "swarmlab." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target in imported(path):
            if layer_of(target) > layer_of(me):
                wrong.append(f"{me} -> {target}")
    assert wrong == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The rule above must be able to fail: a core module importing the lab is caught."""
    fake = PACKAGE / "core" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..lab import model\n")
    try:
        assert layer_of("swarmlab.core._layer_probe") < max(layer_of(t) for t in imported(fake))
    finally:
        fake.unlink()
