"""The `fashion_scenes` caption grammar: the references a scene gets, and the parser that reads a
caption back (the `object_f1` and `relation_accuracy` metrics score captions with it).

Items are named in *reading order*: left to right by the centre of their box, ties
broken top to bottom, then by class id; never in the order the generator drew them. Nouns (singular /
plural) by class id: t-shirt, pair(s) of trousers, pullover, dress(es), coat, sandal, shirt, sneaker, bag,
ankle boot. An item is "a <noun>" ("an" before a vowel); k items of one class are "<k> <plural>" with k
written as a word ("two bags"). The relation of item A to item B compares the offset (dx, dy) from A's box
centre to B's (y down): if |dx| >= |dy|, A is "left of" B when dx > 0, else "right of"; otherwise A is
"above" B when dy > 0, else "below". The references of a scene of n >= 2 items, in this order:

1. chain, left to right: each item then the relation of it to the next item:
   "a bag left of a coat above a sneaker.";
2. counts: each class once, "<k> <noun>", in the reading order of its first item, joined with ", " and a
   final " and ": "two bags and a coat.";
3. order: "from left to right: a bag, a coat and a bag.";
4. chain, right to left: "a sneaker below a coat right of a bag.".

A scene of one item has two: "a bag." and "one bag.". `describe_scene` writes them and `parse_caption`
reads any caption back into the items named (class and count) and the relations stated between
consecutive items; the `object_f1` and `relation_accuracy` metrics score captions with it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

# (singular, plural) noun of each Fashion-MNIST class id.
NOUNS = (
    ("t-shirt", "t-shirts"), ("pair of trousers", "pairs of trousers"), ("pullover", "pullovers"),
    ("dress", "dresses"), ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"),
    ("sneaker", "sneakers"), ("bag", "bags"), ("ankle boot", "ankle boots"),
)
COUNT_WORDS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_ITEMS = len(COUNT_WORDS) - 1
RELATIONS = ("left of", "right of", "above", "below")


def reading_order(class_ids, boxes) -> list[int]:
    """Indices of the items left to right by box centre, ties top to bottom, then by class id."""
    return sorted(range(len(boxes)), key=lambda i: (boxes[i][0] + boxes[i][2], boxes[i][1] + boxes[i][3],
                                                    class_ids[i]))


def relation(box_a, box_b) -> str | None:
    """Relation of the item in `box_a` to the one in `box_b` (one of `RELATIONS`); None for equal centres."""
    # Doubled centres keep the arithmetic in integers.
    dx = (box_b[0] + box_b[2]) - (box_a[0] + box_a[2])
    dy = (box_b[1] + box_b[3]) - (box_a[1] + box_a[3])
    if dx == dy == 0:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def noun_phrase(class_id: int, count: int = 1) -> str:
    """ "a bag", "an ankle boot", "two bags"."""
    if count == 1:
        noun = NOUNS[class_id][0]
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return f"{COUNT_WORDS[count]} {NOUNS[class_id][1]}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _chain(class_ids, boxes, order) -> str:
    words = [noun_phrase(class_ids[order[0]])]
    for a, b in pairwise(order):
        words += [relation(boxes[a], boxes[b]), noun_phrase(class_ids[b])]
    return " ".join(words) + "."


def describe_scene(class_ids, boxes) -> list[str]:
    """The reference captions of a scene (the grammar above), from its items' classes and boxes."""
    order = reading_order(class_ids, boxes)
    if len(order) == 1:
        only = class_ids[order[0]]
        return [f"{noun_phrase(only)}.", f"one {NOUNS[only][0]}."]
    counts = Counter(class_ids[i] for i in order)  # keys in the reading order of each class's first item
    return [
        _chain(class_ids, boxes, order),
        _join([noun_phrase(c, k) for c, k in counts.items()]) + ".",
        "from left to right: " + _join([noun_phrase(class_ids[i]) for i in order]) + ".",
        _chain(class_ids, boxes, order[::-1]),
    ]


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption says: {class id: items named} and (class id, relation, class id) statements."""

    items: Counter
    relations: tuple[tuple[int, str, int], ...]


def _vocabulary() -> dict[tuple[str, ...], tuple[str, object]]:
    """{word tuple: (kind, value)}: nouns -> class id, count words -> count, relations."""
    vocab: dict[tuple[str, ...], tuple[str, object]] = {}
    for class_id, forms in enumerate(NOUNS):
        for form in forms:
            vocab[tuple(form.split())] = ("noun", class_id)
    for count, word in enumerate(COUNT_WORDS[1:], start=1):
        vocab[(word,)] = ("count", count)
    vocab[("a",)] = vocab[("an",)] = ("count", 1)
    for name in RELATIONS:
        vocab[tuple(name.split())] = ("relation", name)
    return vocab


_VOCABULARY = _vocabulary()
_LONGEST_PHRASE = max(map(len, _VOCABULARY))
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def parse_caption(caption: str) -> ParsedCaption:
    """Read a caption with the grammar's vocabulary; words outside it are skipped, so any string parses.

    Every noun phrase names items of its class (as many as its count word says, one without); a relation
    word between two noun phrases states that relation of the first to the second. Any other word
    between them (and, from, to, ...) breaks the link.
    """
    words = _WORD.findall(caption.lower())
    items, relations = Counter(), []
    count = pending = previous = None
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST_PHRASE, len(words) - i), 0, -1):
            entry = _VOCABULARY.get(tuple(words[i:i + length]))
            if entry:
                break
        else:
            length, entry = 1, ("other", None)
        kind, value = entry
        if kind == "noun":
            items[value] += count or 1
            if pending and previous is not None:
                relations.append((previous, pending, value))
            previous, pending, count = value, None, None
        elif kind == "count":
            count = value
        elif kind == "relation":
            pending, count = value, None
        else:
            pending = count = previous = None
        i += length
    return ParsedCaption(items, tuple(relations))
