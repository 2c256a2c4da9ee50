"""Lines of code in ex_app/, side by side: before the layered redesign, that code with the
features built beside the redesign, and now.

Lines of code are counted as cloc counts Python: lines holding code, not comments, docstrings
or blank lines (the same figures as `cloc --include-lang=Python ex_app`); then the same after
one formatter (`ruff format`, 100 columns) has wrapped every tree alike, so that how the code
was wrapped by hand does not count; plain lines (`wc -l`) are printed too.

The redesign (issue 14) was made from BEFORE; three features (issue 16: sensitive photos,
video faces, names from contacts) were built at the same time on branches from BEFORE and
merged into the redesign later. "before + features" merges those branches' last commits before
they met the redesign onto BEFORE (only the README conflicts: code is counted, the README is
not), so it is the old design doing what the code does now.
"""

from __future__ import annotations

import argparse
import ast
import io
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

BEFORE = "5209eb7"  # the last commit before the redesign
FEATURE_BRANCHES = {  # each feature branch's last commit before it met the redesign
    "sensitive photos": "3805375",
    "video faces": "29e90f9",
    "names from contacts": "b227550",
}
SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
           tokenize.ENDMARKER}


def code_lines(source: str) -> int:
    """Lines holding a Python token other than a comment or a docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in SKIPPED:
            lines.update(set(range(token.start[0], token.end[0] + 1)) - docstrings)
    return len(lines)


def sources(folder: Path) -> list[str]:
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("ex_app/**/*.py"))]


def count(folder: Path) -> tuple[int, int, int, int]:
    """(files, lines of code, lines of code once formatted, plain lines) of folder/ex_app."""
    texts = sources(folder)
    formatted = folder / "formatted"
    shutil.copytree(folder / "ex_app", formatted / "ex_app")
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", "--isolated",
                    "--line-length", "100", str(formatted)], check=True)  # fmt: skip
    return (len(texts), sum(map(code_lines, texts)), sum(map(code_lines, sources(formatted))),
            sum(text.count("\n") for text in texts))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def checkout(repo: Path, into: Path, commit: str, merge: tuple[str, ...] = ()) -> Path:
    """A detached worktree of commit at into, with the given commits merged into it."""
    git("worktree", "add", "--quiet", "--detach", str(into), commit, cwd=repo)
    for other in merge:
        done = subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "merge",
             "--quiet", "--no-edit", other], cwd=into, capture_output=True, text=True,
        )  # fmt: skip
        conflicts = git("diff", "--name-only", "--diff-filter=U", cwd=into).split()
        if done.returncode and not conflicts:
            raise RuntimeError(f"merging {other}: {done.stdout}{done.stderr}")
        if any(path.startswith("ex_app/") for path in conflicts):
            raise RuntimeError(f"merging {other}: code conflicts in {conflicts}")
        if conflicts:  # prose only: either side will do, it is not counted
            git("checkout", "--ours", "--", *conflicts, cwd=into)
            git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit",
                "--quiet", "-am", f"merge {other}", cwd=into)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--now", default="HEAD", help="the commit measured as now")
    args = parser.parse_args()
    repo = Path(git("rev-parse", "--show-toplevel", cwd=Path(__file__).parent).strip())
    rows = []
    with tempfile.TemporaryDirectory(prefix="loc-") as scratch:
        trees = {
            f"before ({BEFORE})": (BEFORE, ()),
            "before + features": (BEFORE, tuple(FEATURE_BRANCHES.values())),
            f"now ({args.now})": (args.now, ()),
        }
        for number, (label, (commit, merged)) in enumerate(trees.items()):
            tree = Path(scratch) / str(number)
            try:
                rows.append((label, *count(checkout(repo, tree, commit, merged))))
            finally:
                git("worktree", "remove", "--force", str(tree), cwd=repo)
    base = rows[1][2:]
    print(f"{'ex_app/':<22} {'files':>5} {'code':>6} {'formatted':>9} {'plain':>6}   "
          f"{'code ×':>7} {'formatted ×':>11} {'plain ×':>7}")
    for label, files, *figures in rows:
        code, formatted, plain = (f / b for f, b in zip(figures, base, strict=True))
        print(f"{label:<22} {files:>5} {figures[0]:>6} {figures[1]:>9} {figures[2]:>6}   "
              f"{code:>7.3f} {formatted:>11.3f} {plain:>7.3f}")
    print("(× : against 'before + features', the same behaviour on the old design)")


if __name__ == "__main__":
    main()
