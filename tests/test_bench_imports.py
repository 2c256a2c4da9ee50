"""The benchmarks import what the code still has: a name moved or merged away in ex_app/
breaks a bench that no test runs, so every ``from ex_app... import name`` in bench/ is
looked up here."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
IMPORTS = sorted({
    (path.name, node.module, alias.name)
    for path in BENCH.rglob("*.py")
    for node in ast.walk(ast.parse(path.read_text()))
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ex_app")
    for alias in node.names
})


def test_the_benches_import_from_ex_app():
    assert len(IMPORTS) > 20


@pytest.mark.parametrize(("bench", "module", "name"), IMPORTS)
def test_a_bench_import_resolves(bench, module, name):
    imported = importlib.import_module(module)
    assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), (bench, name)
