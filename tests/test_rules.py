"""The shipped rules.yml against the real ImageNet label list and photos, and the rules engine."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ex_app.config import RULES_PATH
from ex_app.tagging.rules import LabelIdFormat, RulesError, TagRules

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LABELS_TSV = SHARED / "models" / "imagenet.labels.tsv"
IMAGES = SHARED / "data" / "images"

REQUIRED_TAGS = {
    "Animal", "Dog", "Cat", "Bird", "Fish", "Insect", "Reptile", "Food", "Fruit", "Vegetable",
    "Flower", "Plant", "Beach", "Mountain", "Water", "Nature", "Vehicle", "Car", "Boat",
    "Aircraft", "Train", "Bicycle", "Building", "Architecture", "Document", "People", "Sport",
    "Music instrument", "Clothing", "Furniture", "Electronics", "Tool", "Kitchen", "Landscape",
}  # fmt: skip


@pytest.fixture(scope="module")
def rules() -> TagRules:
    return TagRules.load(RULES_PATH)


@pytest.fixture(scope="module")
def imagenet() -> list[tuple[str, str]]:
    """(WordNet id, name) for each classifier output, in index order."""
    return [tuple(line.split("\t")) for line in LABELS_TSV.read_text().splitlines()]


@pytest.fixture(scope="module")
def wnid_of(imagenet: list[tuple[str, str]]):
    """WordNet id of a class name that occurs once in ImageNet."""

    def lookup(name: str) -> str:
        (wnid,) = [wnid for wnid, label in imagenet if label == name]
        return wnid

    return lookup


# --- The shipped rules ----------------------------------------------------------------------


def test_rules_cover_exactly_the_imagenet_classes(rules, imagenet):
    wnids = {wnid for wnid, _ in imagenet}
    assert len(wnids) == 1000
    assert rules.covered_label_ids() - wnids == set(), "rules for labels the classifier lacks"
    assert wnids - rules.covered_label_ids() == set(), "classes with neither tags nor ignore"


def test_label_names_match_imagenet(rules, imagenet):
    mismatched = [
        (wnid, name, rules.labels[wnid].name)
        for wnid, name in imagenet
        if rules.labels[wnid].name != name
    ]
    assert mismatched == []


def test_ignored_labels_are_few_and_explained(rules):
    ignored = rules.ignored_label_ids()
    assert 0 < len(ignored) < 0.15 * len(rules.labels)
    for wnid in ignored:
        rule = rules.labels[wnid]
        assert rule.ignore_reason and rule.ignore_reason.strip()
        assert rules.tags_for([(wnid, 1.0)]) == []
    tagged = rules.covered_label_ids() - ignored
    assert all(rules.labels[wnid].tags for wnid in tagged)


def test_vocabulary_has_required_tags_and_no_unused_ones(rules):
    assert REQUIRED_TAGS <= set(rules.tags)
    assert 40 <= len(rules.tags) <= 70
    used = {
        tag
        for rule in rules.labels.values()
        for given in rule.tags
        for tag in rules.implied_tags(given)
    }
    assert set(rules.tags) - used == set()


def test_every_dog_breed_is_a_dog_and_an_animal(rules, imagenet, wnid_of):
    ids = [wnid for wnid, _ in imagenet]
    breeds = ids[ids.index(wnid_of("Chihuahua")) : ids.index(wnid_of("Mexican hairless")) + 1]
    assert len(breeds) == 118
    for wnid in breeds:
        tags = rules.tags_for([(wnid, 0.9)])
        assert {"Dog", "Mammal", "Animal"} <= set(tags), rules.labels[wnid].name
        assert tags.index("Dog") < tags.index("Animal")


def test_wild_canids_and_big_cats_are_not_pets(rules, wnid_of):
    for name in ("timber wolf", "red fox", "hyena", "lion", "tiger", "cheetah"):
        tags = rules.tags_for([(wnid_of(name), 0.9)])
        assert "Mammal" in tags and not {"Dog", "Cat", "Pet"} & set(tags), name


@pytest.mark.parametrize(
    ("label", "expected", "forbidden"),
    [
        ("Irish setter", {"Dog", "Pet", "Animal"}, {"Cat"}),
        ("Persian cat", {"Cat", "Pet", "Animal"}, {"Dog"}),
        ("pizza", {"Food"}, {"Fruit", "Vegetable"}),
        ("Granny Smith", {"Fruit", "Food"}, {"Vegetable"}),
        ("broccoli", {"Vegetable", "Food"}, {"Fruit"}),
        ("castle", {"Building", "Architecture"}, {"Landscape"}),
        ("aircraft carrier", {"Boat", "Vehicle"}, {"Aircraft"}),
        ("airliner", {"Aircraft", "Vehicle"}, {"Boat"}),
        ("seashore", {"Beach", "Landscape", "Water", "Nature"}, {"Mountain"}),
        ("volcano", {"Mountain", "Landscape"}, {"Beach"}),
        ("coral reef", {"Underwater", "Marine life"}, {"Mountain"}),
        ("scuba diver", {"People", "Underwater"}, set()),
        ("groom", {"People"}, set()),
        ("ballplayer", {"People", "Sport"}, set()),
        ("envelope", {"Document"}, set()),
        ("web site", {"Document"}, set()),
        ("crossword puzzle", {"Document"}, set()),
        ("daisy", {"Flower", "Plant", "Nature"}, {"Food"}),
        ("bullet train", {"Train", "Vehicle"}, set()),
        ("mountain bike", {"Bicycle", "Vehicle"}, {"Mountain"}),
        ("sports car", {"Car", "Vehicle"}, set()),
        ("grand piano", {"Music instrument"}, {"Furniture"}),
        ("tree frog", {"Amphibian", "Animal"}, {"Reptile"}),
        ("Indian cobra", {"Reptile", "Animal"}, set()),
        ("monarch", {"Insect", "Animal"}, set()),
        ("goldfinch", {"Bird", "Animal"}, set()),
        ("tiger shark", {"Fish", "Animal"}, set()),
        ("pirate", {"Boat"}, {"People"}),  # the pirate ship
        ("plane", {"Tool"}, {"Aircraft", "Vehicle"}),  # the carpenter's plane
        ("notebook", {"Computer", "Electronics"}, {"Document"}),  # the notebook computer
        ("grille", {"Car"}, {"Kitchen"}),  # a car's radiator grille
        ("frying pan", {"Kitchen"}, set()),
        ("studio couch", {"Furniture"}, set()),
        ("laptop", {"Computer", "Electronics"}, set()),
        ("jersey", {"Clothing"}, {"Sport"}),  # the T-shirt
    ],
)
def test_sensible_mappings(rules, wnid_of, label, expected, forbidden):
    tags = set(rules.tags_for([(wnid_of(label), 1.0)]))
    assert expected <= tags
    assert not forbidden & tags


def test_same_named_classes_map_to_their_own_meaning(rules, imagenet):
    names = dict(imagenet)
    bird_crane, machine_crane = "n02012849", "n03126707"
    assert names[bird_crane] == names[machine_crane] == "crane"
    assert "Bird" in rules.tags_for([(bird_crane, 1.0)])
    machine = rules.tags_for([(machine_crane, 1.0)])
    assert "Bird" not in machine and "Vehicle" in machine
    leotard, swimsuit = "n03710637", "n03710721"
    assert names[leotard] == names[swimsuit] == "maillot"
    assert "Clothing" in rules.tags_for([(leotard, 1.0)])
    assert "Clothing" in rules.tags_for([(swimsuit, 1.0)])


def test_landmark_categories(rules, wnid_of):
    for name in ("castle", "church", "triumphal arch", "suspension bridge", "obelisk"):
        assert "architecture" in rules.categories_for([(wnid_of(name), 0.9)]), name
    for name in ("seashore", "alp", "volcano"):
        assert "scenery" in rules.categories_for([(wnid_of(name), 0.9)]), name
    for name in ("pizza", "Irish setter", "laptop"):
        assert rules.categories_for([(wnid_of(name), 0.9)]) == [], name


def test_every_photo_class_yields_a_tag_unless_ignored(rules):
    photos = sorted(IMAGES.glob("*.JPEG"))
    assert len(photos) == 100
    for photo in photos:
        wnid, name = photo.stem.split("_", 1)
        rule = rules.labels[wnid]
        assert rule.name.replace(" ", "_") == name
        tags = rules.tags_for([(wnid, 1.0)])
        assert bool(tags) != rule.ignored, photo.name


# --- The engine -----------------------------------------------------------------------------


def test_threshold_is_the_minimum_score(rules, wnid_of):
    for name in ("pizza", "honeycomb"):
        wnid = wnid_of(name)
        threshold = rules.labels[wnid].threshold
        assert rules.tags_for([(wnid, threshold - 0.01)]) == []
        assert rules.tags_for([(wnid, threshold)]) != []
    assert rules.labels[wnid_of("honeycomb")].threshold > rules.labels[wnid_of("pizza")].threshold


def test_unknown_and_ignored_labels_give_nothing(rules):
    ignored = next(iter(rules.ignored_label_ids()))
    assert rules.tags_for([("n99999999", 1.0), ("not a label", 1.0), (ignored, 1.0)]) == []
    assert rules.categories_for([("n99999999", 1.0)]) == []


def test_tags_are_ordered_by_priority_then_score(rules, wnid_of):
    seashore, setter, burger = wnid_of("seashore"), wnid_of("Irish setter"), wnid_of("cheeseburger")
    priority = {wnid: rules.labels[wnid].priority for wnid in (seashore, setter, burger)}
    assert priority[seashore] > priority[setter] == priority[burger]
    tags = rules.tags_for([(burger, 0.5), (setter, 0.6), (seashore, 0.3)])
    assert tags.index("Beach") < tags.index("Dog") < tags.index("Food")
    tags = rules.tags_for([(burger, 0.7), (setter, 0.6)])
    assert tags.index("Food") < tags.index("Dog")


def test_a_tag_given_twice_takes_its_best_rank_and_appears_once(rules, wnid_of):
    hen, setter = wnid_of("hen"), wnid_of("Irish setter")
    tags = rules.tags_for([(hen, 0.5), (setter, 0.9)])
    assert tags.count("Animal") == 1
    # Animal came first from the hen but ranks with the setter, after the more specific Dog.
    assert tags.index("Dog") < tags.index("Animal") < tags.index("Bird")


# --- Validation -----------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "defaults": {"threshold": 0.2, "priority": 50},
    "categories": {"architecture": "Buildings."},
    "tags": {"Animal": {}, "Dog": {"parents": ["Animal"], "aliases": ["Puppy"]}, "Building": None},
    "labels": {
        "n02100877": {"name": "Irish setter", "tags": ["Dog"]},
        "n02980441": {
            "name": "castle",
            "tags": ["Building"],
            "threshold": 0.5,
            "categories": ["architecture"],
        },
        "n03627232": {"name": "knot", "ignore": True, "reason": "any rope"},
    },
}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_small_valid_file_loads(tmp_path):
    rules = TagRules.load(write(tmp_path, VALID))
    assert rules.covered_label_ids() == set(VALID["labels"])
    assert rules.ignored_label_ids() == {"n03627232"}
    assert rules.tags_for([("n02100877", 0.2), ("n02980441", 0.4)]) == ["Dog", "Animal"]
    assert rules.categories_for([("n02980441", 0.5)]) == ["architecture"]


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(("labels", "n02100877", "tags"), ["Dog", "Unicorn"]), "unknown tag 'Unicorn'"),
        (_with(("labels", "n02100877"), {"name": "Irish setter"}), "needs `tags`"),
        (_with(("labels", "n02100877"), {"name": "Irish setter", "tags": []}), "needs `tags`"),
        (_with(("labels", "n03627232"), {"name": "knot", "ignore": True}), "needs a `reason`"),
        (_with(("labels", "n03627232", "tags"), ["Dog"]), "ignored label takes no tags"),
        (_with(("labels", "n02100877", "threshold"), 1.5), r"n02100877\.threshold: .* less than"),
        (_with(("labels", "n02100877", "tag"), ["Dog"]), r"n02100877\.tag: Extra inputs"),
        (_with(("labels", "n02100877", "categories"), ["landmark"]), "unknown category 'landmark'"),
        (_with(("labels", "dog"), {"name": "dog", "tags": ["Dog"]}), "not a WordNet id"),
        (_with(("tags", "Dog", "parents"), ["Mammal"]), "unknown parent tag 'Mammal'"),
        (_with(("tags", "Animal"), {"parents": ["Dog"]}), "implies itself"),
        (_with(("tags", "Building"), {"aliases": ["puppy"]}), "alias 'puppy' already"),
        (_with(("defaults",), {"threshold": 0.2}), "defaults.priority"),
    ],
)
def test_malformed_rules_are_rejected(tmp_path, data, message):
    with pytest.raises(RulesError, match=message):
        TagRules.load(write(tmp_path, data))


def test_other_label_ids_need_their_own_format(tmp_path):
    words = LabelIdFormat(re.compile(r"[a-z]+"), "a lowercase word like dog")
    data = copy.deepcopy(VALID)
    data["labels"] = {
        "dog": {"name": "dog", "tags": ["Dog"]},
        "n02980441": {"name": "castle", "tags": ["Building"]},
    }
    with pytest.raises(RulesError, match=r"labels\.n02980441: not a lowercase word like dog$"):
        TagRules.load(write(tmp_path, data), words)
    del data["labels"]["n02980441"]
    assert TagRules.load(write(tmp_path, data), words).tags_for([("dog", 0.3)]) == ["Dog", "Animal"]
    with pytest.raises(RulesError, match=r"labels\.dog: not a WordNet id like n01440764"):
        TagRules.load(write(tmp_path, data))


def test_a_label_given_twice_is_rejected(tmp_path):
    text = yaml.safe_dump(VALID, sort_keys=False)
    text += "  n02100877: {name: Irish setter, tags: [Animal]}\n"
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(RulesError, match="duplicate key 'n02100877'"):
        TagRules.load(path)
