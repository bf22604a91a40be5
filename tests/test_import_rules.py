"""Each rec_core subpackage declares in its `__init__` what it must never import (MUST_NOT_IMPORT);
this walks the source (AST, nothing is imported) and follows rec_core-internal imports
transitively, so a forbidden module reached through a sibling fails too. Lazy imports inside
functions count: they load the module as surely as top-level ones do."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rec_core"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names (absolute form)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; the rule check needs absolute imports")
            names.add(node.module)
            # `from rec_core.models import names` imports the submodule rec_core.models.names
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
DIRECT = {name: imports_of(path) for name, path in MODULES.items()}


def reached(start: str) -> dict[str, str]:
    """Every module `start` loads, transitively through rec_core -> the rec_core module that imports it."""
    seen, todo = {}, [start]
    while todo:
        current = todo.pop()
        for name in DIRECT[current]:
            if name in seen:
                continue
            seen[name] = current
            if name in MODULES:
                todo.append(name)
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = name.split(".")
            for depth in range(1, len(parts)):
                parent = ".".join(parts[:depth])
                if parent in MODULES and parent not in seen:
                    seen[parent] = current
                    todo.append(parent)
    return seen


def rules() -> dict[str, tuple[str, ...]]:
    found = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MUST_NOT_IMPORT" for t in node.targets):
                found[module_name(init)] = ast.literal_eval(node.value)
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for name in sorted(MODULES):
        if name != package and not name.startswith(package + "."):
            continue
        for target, importer in reached(name).items():
            if target.startswith(package + ".") or target == package:
                continue  # a package may use itself
            if any(target == rule or target.startswith(rule + ".") for rule in forbidden):
                found.append(f"{name} reaches {target} (imported by {importer})")
    return found


def test_every_subpackage_declares_its_rules():
    packages = {module_name(init) for init in PACKAGE.glob("*/__init__.py")}
    assert packages == set(rules()), f"subpackages without MUST_NOT_IMPORT: {packages - set(rules())}"
    assert {"rec_core.data", "rec_core.models", "rec_core.eval", "rec_core.llm"} <= packages


@pytest.mark.parametrize("package", sorted(rules()))
def test_no_forbidden_import(package):
    assert violations(package, rules()[package]) == []


def test_nothing_in_rec_core_imports_jobs():
    assert [name for name in MODULES if any(t == "jobs" or t.startswith("jobs.") for t in reached(name))] == []


def test_the_check_catches_a_forbidden_import_through_a_sibling(monkeypatch):
    # models.multi_interest imports interests.alignment; make alignment import the LLM stage
    monkeypatch.setitem(DIRECT, "rec_core.interests.alignment",
                        DIRECT["rec_core.interests.alignment"] | {"rec_core.llm.stage"})
    found = violations("rec_core.models", rules()["rec_core.models"])
    assert any("rec_core.models.multi_interest reaches rec_core.llm.stage" in line for line in found), found
