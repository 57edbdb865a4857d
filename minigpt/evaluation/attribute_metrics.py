"""Per-section scores on attribute words, for data sets whose answers name attribute values (the
synthetic faces: an expression, a Fitzpatrick type, yes / no ...).

A reference is {"section": name, "attributes": {attribute: value}}. The words an attribute can take are
all the values the references give it, so a wrong answer is recognised without a list written by hand.
Per answer:
    match   every reference value is named (as a whole word, any case) and no other value of its
            attributes: an answer that lists every value would otherwise always be right
    soft    the share of reference values named
    wrong   some other value of one of the attributes is named (a wrong expression, a wrong type)
Scores are given per section ("<section>/match" ...) and over all answers, with each section's chance
level: one over the number of values of its attribute (of its least varied one when it has several).
"""
from __future__ import annotations

import collections
import re


def _named(value: str, words: set[str]) -> bool:
    return all(part in words for part in value.lower().split())


def score_attributes(predictions: list[str], references: list[dict]) -> tuple[dict[str, float], list[dict]]:
    values: dict[str, set[str]] = collections.defaultdict(set)
    for reference in references:
        if "attributes" not in reference:
            raise ValueError("the attribute scores need 'attributes' in every test record; for free-text "
                             "references use metric: caption")
        for attribute, value in reference["attributes"].items():
            values[attribute].add(str(value).lower())
    per_item, by_section = [], collections.defaultdict(list)
    for prediction, reference in zip(predictions, references):
        words = set(re.findall(r"[a-z0-9]+", prediction.lower()))
        truth = {attribute: str(value).lower() for attribute, value in reference["attributes"].items()}
        named = [_named(value, words) for value in truth.values()]
        wrong = any(_named(other, words) for attribute, value in truth.items() for other in values[attribute]
                    if other != value)
        item = {"match": float(all(named) and not wrong), "soft": sum(named) / len(named), "wrong": float(wrong)}
        per_item.append(item)
        by_section[reference.get("section", "all")].append((item, truth))
    scores = {key: sum(item[key] for item in per_item) / max(1, len(per_item)) for key in ("match", "soft", "wrong")}
    for section, items in sorted(by_section.items()):
        for key in ("match", "soft", "wrong"):
            scores[f"{section}/{key}"] = sum(item[key] for item, _ in items) / len(items)
        scores[f"{section}/chance"] = 1 / min(len(values[attribute]) for attribute in items[0][1])
    return scores, per_item
