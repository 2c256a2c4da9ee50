"""Tagging rules: which human tags a classifier's labels give.

The image rules live in ``rules.yml`` at the project root (its header documents the format),
the music rules in ``genres.yml``. :class:`TagRules` loads and checks them, then turns a
classifier's (label id, score) pairs into ordered tags, with the parent tags they imply, and
into categories that later stages act on (for example whether a landmark recogniser is worth
running). Label ids are WordNet ids unless the loader is given another :class:`LabelIdFormat`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


@dataclass(frozen=True)
class LabelIdFormat:
    """What a rules file's label ids must look like, and how to say so in an error."""

    pattern: re.Pattern[str]  # must match a whole id
    description: str  # e.g. "a WordNet id like n01440764"


WORDNET_IDS = LabelIdFormat(re.compile(r"n\d{8}"), "a WordNet id like n01440764")


class RulesError(ValueError):
    """A rules file that cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Tag:
    """One tag of the vocabulary."""

    name: str
    parents: tuple[str, ...]  # tags this one implies
    aliases: tuple[str, ...]  # other words people search for


@dataclass(frozen=True)
class LabelRule:
    """What one classifier label means; an ignored label has no tags and a reason."""

    label_id: str
    name: str
    tags: tuple[str, ...]
    threshold: float
    priority: int
    categories: tuple[str, ...]
    ignore_reason: str | None

    @property
    def ignored(self) -> bool:
        return self.ignore_reason is not None


class TagRules:
    """The checked contents of a rules file, and the lookups the tagger needs."""

    def __init__(self, tags: Mapping[str, Tag], labels: Mapping[str, LabelRule],
                 categories: Mapping[str, str]):
        self.tags = MappingProxyType(dict(tags))  # the tag vocabulary by name
        self.labels = MappingProxyType(dict(labels))  # every label's rule, ignored ones too
        self.categories = MappingProxyType(dict(categories))  # declared ones, with their meaning
        self._implied = {name: _implied(name, self.tags) for name in self.tags}
        self._depth = {name: _depth(name, self.tags) for name in self.tags}

    @classmethod
    def load(cls, path: Path, label_ids: LabelIdFormat = WORDNET_IDS) -> TagRules:
        """Read and check a rules file; raises :class:`RulesError` naming each problem."""
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
            parsed = _RulesFile.model_validate(data)
        except yaml.YAMLError as error:
            raise RulesError(f"{path}: not valid YAML: {error}") from error
        except ValidationError as error:
            raise RulesError(f"{path}: {_describe(error)}") from error
        problems = _cross_reference_problems(parsed, label_ids)
        if problems:
            raise RulesError(f"{path}: " + "\n".join(problems))
        tags = {name: Tag(name, tuple(entry.parents), tuple(entry.aliases))
                for name, entry in parsed.tags.items()}
        labels = {
            label_id: LabelRule(
                label_id=label_id, name=entry.name, tags=tuple(entry.tags),
                threshold=parsed.defaults.threshold if entry.threshold is None else entry.threshold,
                priority=parsed.defaults.priority if entry.priority is None else entry.priority,
                categories=tuple(entry.categories),
                ignore_reason=entry.reason if entry.ignore else None)
            for label_id, entry in parsed.labels.items()}
        return cls(tags, labels, parsed.categories)

    def covered_label_ids(self) -> set[str]:
        """Label ids the rules decide on: tagged or deliberately ignored."""
        return set(self.labels)

    def ignored_label_ids(self) -> set[str]:
        """Label ids that deliberately give no tag."""
        return {label_id for label_id, rule in self.labels.items() if rule.ignored}

    def implied_tags(self, name: str) -> tuple[str, ...]:
        """The tag itself, then every tag it implies through its parents."""
        return self._implied[name]

    def tags_for(self, labels: Iterable[tuple[str, float]]) -> list[str]:
        """Tags for classifier output: (label id, score) pairs, in any order.

        A label counts when its score reaches its threshold; unknown and ignored labels
        give nothing. Each tag brings the tags it implies. Tags are ordered by the highest
        priority, then the highest score, of the labels giving them; on a tie a more
        specific tag comes before the tags it implies.
        """
        ranked = self._rank(
            labels, lambda rule: (implied for tag in rule.tags for implied in self._implied[tag]))
        return sorted(ranked, key=lambda tag: (*ranked[tag], -self._depth[tag]))

    def categories_for(self, labels: Iterable[tuple[str, float]]) -> list[str]:
        """Categories for classifier output, counted and ordered as :meth:`tags_for` does."""
        ranked = self._rank(labels, lambda rule: rule.categories)
        return sorted(ranked, key=lambda category: ranked[category])

    def _rank(self, labels: Iterable[tuple[str, float]],
              names_of: Callable[[LabelRule], Iterable[str]]) -> dict[str, tuple[int, float]]:
        """Sort key per name, (-priority, -score) of the best counted label giving it."""
        ranked: dict[str, tuple[int, float]] = {}
        for label_id, score in labels:
            rule = self.labels.get(label_id)
            if rule is None or rule.ignored or score < rule.threshold:
                continue
            key = (-rule.priority, -score)
            for name in names_of(rule):
                if name not in ranked or key < ranked[name]:
                    ranked[name] = key
        return ranked


def _implied(name: str, tags: Mapping[str, Tag]) -> tuple[str, ...]:
    """``name`` and its ancestors, nearest first, each once (the graph is acyclic)."""
    order = [name]
    for current in order:
        order.extend(parent for parent in tags[current].parents if parent not in order)
    return tuple(order)


def _depth(name: str, tags: Mapping[str, Tag]) -> int:
    """Length of the longest parent chain above ``name``."""
    return max((1 + _depth(parent, tags) for parent in tags[name].parents), default=0)


# --- The file's schema ---------------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Defaults(_Entry):
    threshold: float = Field(ge=0, le=1)
    priority: int


class _TagEntry(_Entry):
    parents: list[str] = []
    aliases: list[str] = []


class _LabelEntry(_Entry):
    name: str = Field(min_length=1)
    tags: list[str] = []
    ignore: bool = False
    reason: str | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    priority: int | None = None
    categories: list[str] = []

    @model_validator(mode="after")
    def _tagged_or_ignored(self) -> _LabelEntry:
        if self.ignore:
            overrides = (self.threshold, self.priority)
            if self.tags or self.categories or overrides != (None, None):
                raise ValueError("an ignored label takes no tags, categories, threshold, priority")
            if not (self.reason and self.reason.strip()):
                raise ValueError("an ignored label needs a `reason`")
        else:
            if not self.tags:
                raise ValueError("a label needs `tags`, or `ignore: true` with a `reason`")
            if self.reason is not None:
                raise ValueError("`reason` belongs to ignored labels only")
        return self


class _RulesFile(_Entry):
    defaults: _Defaults
    categories: dict[str, str] = {}
    tags: dict[str, _TagEntry]
    labels: dict[str, _LabelEntry]

    @field_validator("tags", mode="before")
    @classmethod
    def _bare_tag_names(cls, tags: Any) -> Any:
        """A tag with nothing to say may be written ``Nature:`` as well as ``Nature: {}``."""
        if isinstance(tags, dict):
            return {name: {} if entry is None else entry for name, entry in tags.items()}
        return tags


def _cross_reference_problems(rules: _RulesFile, label_ids: LabelIdFormat) -> list[str]:
    """Problems that span entries: unknown names, bad ids, clashing aliases, parent cycles."""
    problems: list[str] = []
    tags = rules.tags
    for name, entry in tags.items():
        problems += [f"tags.{name}: unknown parent tag {parent!r}"
                     for parent in entry.parents if parent not in tags]
    for label_id, label in rules.labels.items():
        if not label_ids.pattern.fullmatch(label_id):
            problems.append(f"labels.{label_id}: not {label_ids.description}")
        problems += [f"labels.{label_id}: unknown tag {t!r}" for t in label.tags if t not in tags]
        problems += [f"labels.{label_id}: unknown category {c!r}"
                     for c in label.categories if c not in rules.categories]
    owners: dict[str, str] = {name.casefold(): name for name in tags}
    for name, entry in tags.items():
        for alias in entry.aliases:
            owner = owners.setdefault(alias.casefold(), name)
            if owner != name:
                problems.append(f"tags.{name}: alias {alias!r} already names or aliases {owner!r}")
    problems += [f"tags.{name}: implies itself through its parents" for name in _cyclic_tags(tags)]
    return problems


def _cyclic_tags(tags: Mapping[str, _TagEntry]) -> list[str]:
    """Tags that reach themselves by following parents (unknown parents are skipped)."""
    cyclic = []
    for start in tags:
        stack, seen = list(tags[start].parents), set()
        while stack:
            current = stack.pop()
            if current == start:
                cyclic.append(start)
                break
            if current in tags and current not in seen:
                seen.add(current)
                stack.extend(tags[current].parents)
    return cyclic


def _describe(error: ValidationError) -> str:
    """One line per schema error, located like ``labels.n01440764.tags``."""
    return "\n".join(f"{'.'.join(str(part) for part in problem['loc']) or 'file'}: {problem['msg']}"
                     for problem in error.errors())


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice (plain PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                    key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
