"""The import directions of lmr_jax's modules (DESIGN.md section 1), read from their source with
`ast` (every import, also those inside functions, counts): no module imports one that imports
it back, and prediction does not reach up into training or evaluation."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lmr_jax")


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, str]:
    """lmr_jax module name -> its file."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                found[_module_name(os.path.join(root, name))] = os.path.join(root, name)
    return found


MODULES = _modules()


def imports(module: str) -> set[str]:
    """The lmr_jax modules `module` imports directly: `from lmr_jax.a import b` imports the
    module lmr_jax.a.b when there is one, else (b is a name in it) lmr_jax.a. The package
    __init__ files that Python runs before any submodule are not counted."""
    with open(MODULES[module]) as f:
        tree = ast.parse(f.read())
    package = module if MODULES[module].endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))  # fmt: skip
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


def reachable(module: str) -> set[str]:
    """Every lmr_jax module importing `module` can import (its imports, theirs, ...)."""
    seen, todo = set(), [module]
    while todo:
        for name in imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_the_reader_sees_imports():
    assert {"lmr_jax.models", "lmr_jax.smpl", "lmr_jax.data.pipeline"} <= imports("lmr_jax.train")
    assert "lmr_jax.smpl.procedural" in imports("lmr_jax.smpl")  # `from lmr_jax.smpl.x import`


@pytest.mark.parametrize(
    "module,above",
    [
        ("lmr_jax.checkpoints", "lmr_jax.train"),
        ("lmr_jax.smpl.model", "lmr_jax.smpl.procedural"),
        ("lmr_jax.predict", "lmr_jax.train"),
        ("lmr_jax.predict", "lmr_jax.evaluate"),
        ("lmr_jax.predict_io", "lmr_jax.train"),
        ("lmr_jax.evaluate", "lmr_jax.train"),
        ("lmr_jax.runner", "lmr_jax.train"),
        ("lmr_jax.runner", "lmr_jax.evaluate"),
        ("lmr_jax.runner", "lmr_jax.predict"),
        ("lmr_jax.train_state", "lmr_jax.checkpoints"),
        ("lmr_jax.models", "lmr_jax.data"),
        ("lmr_jax.models", "lmr_jax.checkpoints"),
        ("lmr_jax.smpl", "lmr_jax.models"),
    ],
)
def test_module_does_not_reach_up(module, above):
    assert above not in reachable(module), f"{module} imports {above} (directly or through others)"


@pytest.mark.parametrize(
    "pair",
    [("lmr_jax.checkpoints", "lmr_jax.train"), ("lmr_jax.smpl.model", "lmr_jax.smpl.procedural")],
)
def test_no_two_modules_import_each_other(pair):
    first, second = pair
    assert not (second in imports(first) and first in imports(second))


def test_no_import_cycles_but_the_known_one():
    """torch_weights and torch_maps import each other (torch_maps lazily, in a function); every
    other module sits strictly above what it imports."""
    cycles = sorted(m for m in MODULES if m in reachable(m))
    assert cycles == ["lmr_jax.torch_maps", "lmr_jax.torch_weights"]
