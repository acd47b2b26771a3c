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


def name_of(path: Path) -> str:
    return ".".join(["swarmlab", *path.relative_to(PACKAGE).with_suffix("").parts])


def imported(path: Path, module: str) -> set[str]:
    """The swarmlab modules that `path`, read as the module `module`, imports."""
    here = module.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level] if node.level else []
            source = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if not source.startswith("swarmlab"):
                continue
            for alias in node.names:  # `from swarmlab.lab import model` names a module
                candidate = f"{source}.{alias.name}"
                sub = PACKAGE.joinpath(*candidate.split(".")[1:])
                out.add(candidate if sub.with_suffix(".py").exists() or sub.is_dir() else source)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("swarmlab")}
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "deferred" and node.args
              and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("swarmlab")):
            out.add(node.args[0].value)  # the CLI's modules imported at first use (cli/deferred.py)
    return out


def test_no_module_imports_from_a_layer_after_its_own():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in ENTRY and path.parent == PACKAGE:
            continue
        me = name_of(path)
        for target in imported(path, me):
            if layer_of(target) > layer_of(me):
                wrong.append(f"{me} -> {target}")
    assert wrong == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The rule above must be able to fail: a core module importing the lab is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..lab import model\n")
    assert imported(probe, "swarmlab.core.probe") == {"swarmlab.lab.model"}
    assert layer_of("swarmlab.lab.model") > layer_of("swarmlab.core.probe")


def test_the_command_starts_without_loading_libvirt_ssh_http_or_templates():
    """`swarmlab --help`, a usage error, `class extend`: none needs them, and they were half a
    second of every start (each command loads its own at first use)."""
    import subprocess
    import sys
    heavy = ("libvirt", "fabric", "paramiko", "requests", "jinja2", "asyncssh", "aiohttp")
    probe = ("import sys; from swarmlab import cli; "
             f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == [], loaded.stdout
    used = subprocess.run([sys.executable, "-c", "from swarmlab.cli import deferred; "
                           "m = deferred.deferred('swarmlab.lab.model'); print(m.Lab.__module__)"],
                          capture_output=True, text=True, cwd=PACKAGE.parent)
    assert used.stdout.strip() == "swarmlab.lab.model", used.stderr
