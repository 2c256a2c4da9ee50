"""Label files made from the data files of the registry packages that ship them.

Each converter writes the exact bytes the manifest pins (deterministic): nothing is imported
from the packages, their files are only read.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

IMAGENET_CLASSES = 1000


def _write_lines(path: Path, lines: list[str]) -> None:
    Path(path).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def imagenet_labels(names_json: Path, wnids_json: Path, output: Path) -> None:
    """``imagenet.labels.tsv``: WordNet id TAB first class name, one line per class index.

    From ``imagenet-classes``' ``imagenet1k_label_to_names.json`` ("0": "tench, Tinca tinca",
    ...) and ``imagenet1k_to_21k.json`` ("0": "n01440764", ...).
    """
    names = json.loads(Path(names_json).read_text(encoding="utf-8"))
    wnids = json.loads(Path(wnids_json).read_text(encoding="utf-8"))
    lines = []
    for index in range(IMAGENET_CLASSES):
        name, wnid = names.get(str(index)), wnids.get(str(index))
        if not isinstance(name, str) or not isinstance(wnid, str):
            raise ValueError(f"class {index} has no name or WordNet id")
        lines.append(f"{wnid}\t{name.split(', ')[0]}")
    _write_lines(output, lines)


def _assigned_list(source: Path, variable: str) -> list[str]:
    """The literal list of strings assigned to ``variable`` in a Python file (never run)."""
    tree = ast.parse(Path(source).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == variable for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return value
    raise ValueError(f"{source} assigns no list of strings to {variable}")


def musicnn_msd_labels(configuration: Path, output: Path) -> None:
    """``musicnn_msd.labels.txt`` from ``musicnn/configuration.py``'s MSD_LABELS."""
    _write_lines(output, _assigned_list(configuration, "MSD_LABELS"))


def musicnn_mtt_labels(configuration: Path, output: Path) -> None:
    """``musicnn_mtt.labels.txt`` from ``musicnn/configuration.py``'s MTT_LABELS."""
    _write_lines(output, _assigned_list(configuration, "MTT_LABELS"))
