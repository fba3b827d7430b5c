"""The package's import arrows point one way (DESIGN.md, Layout): a lower layer never imports an
upper one, not even lazily inside a function, so the check walks every import statement."""
import ast
from pathlib import Path

import pytest

import neuropde

ROOT = Path(neuropde.__file__).parent

# (layer, layers it must not import)
FORBIDDEN = [
    ("optim", ("tasks", "run")),
    ("data", ("models", "tasks", "run")),
    ("pde", ("models", "tasks", "data", "run")),
    ("nn", ("models", "tasks", "run")),
    ("models", ("tasks", "run")),
    ("tasks", ("run",)),
    ("callbacks", ("tasks", "run")),
    ("solvers", ("tasks", "run")),
]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of the modules a source file under ``root`` (the neuropde package folder)
    imports, relative imports resolved."""
    package = ("neuropde." + ".".join(path.relative_to(root).with_suffix("").parts)).rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from neuropde import tasks` imports neuropde.tasks
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    return names


def violations(layer: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """'path imports module' for every import of a forbidden layer by a module of ``layer``."""
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        for name in sorted(imported_modules(path, root)):
            if any(name == f"neuropde.{f}" or name.startswith(f"neuropde.{f}.") for f in forbidden):
                bad.append(f"{path.relative_to(root.parent)} imports {name}")
    return bad


@pytest.mark.parametrize("layer, forbidden", FORBIDDEN, ids=[layer for layer, _ in FORBIDDEN])
def test_lower_layers_do_not_import_upper_ones(layer, forbidden):
    assert not violations(layer, forbidden)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "neuropde" / "data"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from ..models.fno import FNO\n    import neuropde.tasks.base\n")
    assert violations("data", ("models", "tasks"), tmp_path / "neuropde") == [
        "neuropde/data/x.py imports neuropde.models.fno",
        "neuropde/data/x.py imports neuropde.models.fno.FNO",
        "neuropde/data/x.py imports neuropde.tasks.base"]
