"""The code's layers: the import-linter contract in pyproject.toml holds, and no modules of
ex_app import each other in a circle (imports inside functions included)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent


def circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (Tarjan's strongly
    connected components of more than one module, and modules importing themselves)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(imports):
        if start in order:
            continue
        work = [(start, iter(sorted(imports[start])))]
        order[start] = low[start] = len(order)
        stack.append(start)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in order:
                    order[target] = low[target] = len(order)
                    stack.append(target)
                    work.append((target, iter(sorted(imports.get(target, ())))))
                elif target in stack:
                    low[module] = min(low[module], order[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == order[module]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1 or module in imports.get(module, ()):
                    found.append(sorted(group))
    return found


def test_circles_are_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}, "b": set()}) == [["a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_layers_contract_holds():
    # its own process: import-linter changes the logging of the process it runs in
    checked = subprocess.run([Path(sys.executable).parent / "lint-imports", "--no-cache"], cwd=REPO,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_no_modules_import_each_other_in_a_circle():
    graph = grimp.build_graph("ex_app", cache_dir=None)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert circles(imports) == []
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    allowed = {  # the contract's listed exceptions, each to be removed by a move under way
        tuple(part.strip() for part in line.split("->"))
        for contract in contracts
        for line in contract.get("ignore_imports", [])
    }
    packages: dict[str, set[str]] = {}  # the same, a level up: ex_app.work, ex_app.store ...
    for module, targets in imports.items():
        packages.setdefault(".".join(module.split(".")[:2]), set()).update(
            ".".join(target.split(".")[:2]) for target in targets if (module, target) not in allowed
        )
    for package, targets in packages.items():
        targets.discard(package)
    assert circles(packages) == []
