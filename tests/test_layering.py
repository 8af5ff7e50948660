"""The suite's layering (``DESIGN.md``), read from every module's imports with ``ast``.

The core (``emae``) imports nothing above it; the adapters and the decoder analyses build on the core alone and
never on the training loop; the report reads records and imports nothing that builds a model.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("emae", "evaluation", "detection", "segmentation", "analysis", "results", "experiments", "benchmarks")
ABOVE_CORE = frozenset(PACKAGES) - {"emae"}
# package -> the packages of this suite it must not import (the core modules it must not import, for results)
FORBIDDEN: dict[str, frozenset[str]] = {
    "emae": ABOVE_CORE,
    "evaluation": ABOVE_CORE - {"evaluation"} | {"emae.engine"},
    "detection": ABOVE_CORE - {"detection"} | {"emae.engine"},
    "segmentation": ABOVE_CORE - {"segmentation"} | {"emae.engine"},
    "analysis": ABOVE_CORE - {"analysis"} | {"emae.engine"},
    # the report reads records and logs: no model, checkpoint, data or training code
    "results": ABOVE_CORE - {"results"} | {"emae.engine", "emae.models", "emae.checkpoint", "emae.data",
                                            "emae.reconstruct", "emae.export"},
    "experiments": frozenset({"benchmarks"}),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, those inside functions included; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base:
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name)  # from pkg import module
                      for alias in node.names]
    return found


def breaks(module: str, forbidden: frozenset[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package):
    files = modules_of(package)
    assert files, f"no modules found in {package}/"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in files
             for line, module in imported_modules(path) if breaks(module, FORBIDDEN[package])]
    assert not wrong, "layering broken:\n" + "\n".join(wrong)


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    """A lazy import in a function, ``from pkg import module`` and a relative import are all seen."""
    pkg = tmp_path / "emae"
    pkg.mkdir()
    (pkg / "bad.py").write_text("def f():\n    from results import report\n    from .. import detection\n"
                                "import evaluation.knn as knn\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    seen = [m for _, m in imported_modules(pkg / "bad.py") if breaks(m, FORBIDDEN["emae"])]
    assert {"results", "results.report", "detection", "evaluation.knn"} <= set(seen)
