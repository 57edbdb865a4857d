"""Scores for paragraphs about scenes with known objects, independent of whatever wrote the paragraphs.

Mentions: a paragraph is cut into clauses (sentence ends, commas, "and"); a clause that names an object
word or a colour is a mention, with whichever colour, size, object and position words it holds (the
vocabulary is the scenes' own words plus common colour and size words). A mention is *consistent*
with a scene object when every attribute it names is that object's. Then:
    precision        mentions consistent with some object of the scene / mentions (a hallucination
                     is a mention that fits no object)
    recall           objects a consistent mention picks out alone (fits no other object) / objects
    attribute_recall of each object's four attributes (name, colour, size, position), the share named
                     by the consistent mentions that pick it out
Retrieval ranks by text similarity between each paragraph and each scene's truth rendered as text
(TF-IDF over words and word pairs, or a sentence encoder's embeddings): IR@1, paragraph -> scene; TR@1,
scene -> paragraph. A tie at the top counts 1 / (number tied) when the right one is among them, so a
paragraph that fits three scenes equally scores a third.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from minigpt.common.errors import MissingExtraError, optional_module
from minigpt.conversation.boxes import POSITION_WORDS

sklearn_text = optional_module("sklearn.feature_extraction.text")  # scikit-learn: the agents extra

COLOR_WORDS = ("red", "orange", "brown", "yellow", "green", "cyan", "blue", "purple", "magenta", "pink", "white",
               "gray", "grey", "black")
SIZE_WORDS = {"tiny": "small", "small": "small", "little": "small", "large": "large", "big": "large", "huge": "large"}
GENERIC_OBJECTS = ("region", "object", "shape", "thing")
ATTRIBUTES = ("name", "color", "size", "position")
POSITIONS = sorted((word for row in POSITION_WORDS for word in row), key=len, reverse=True)  # "top left" before "top"


def scene_text(objects: list[dict]) -> str:
    """A scene's truth as text, the other side of retrieval: "large red circle top left. ..." """
    return " ".join(f"{o.get('size', '')} {o.get('color', '')} {o['name']} {o.get('position', '')}.".replace("  ", " ")
                    for o in objects)


def clauses(paragraph: str) -> list[str]:
    text = re.sub(r"<p>|</p>|\{[^{}]*\}", " ", paragraph.lower())  # a grounded paragraph reads as its words
    return [part.strip() for part in re.split(r"[.;,!?]|\band\b", text) if part.strip()]


def mentions(paragraph: str, names: set[str]) -> list[dict]:
    """{attribute: word} for every clause that names an object or a colour."""
    found = []
    for clause in clauses(paragraph):
        words = re.findall(r"[a-z]+", clause)
        mention = {}
        for position in POSITIONS:
            if re.search(rf"\b{position}\b", clause):
                mention["position"] = position
                break
        for word in words:
            if word in names and "name" not in mention:
                mention["name"] = word
            elif word in COLOR_WORDS and "color" not in mention:
                mention["color"] = "gray" if word == "grey" else word
            elif word in SIZE_WORDS and "size" not in mention:
                mention["size"] = SIZE_WORDS[word]
        if "name" in mention or "color" in mention:
            found.append(mention)
    return found


def consistent(mention: dict, obj: dict) -> bool:
    return all(obj.get(attribute) == value for attribute, value in mention.items())


def score_paragraph(paragraph: str, objects: list[dict], names: set[str]) -> dict:
    """Counts for one paragraph about one scene: mentions, consistent ones, objects picked out, attributes."""
    said = mentions(paragraph, names)
    fitting = [m for m in said if any(consistent(m, o) for o in objects)]
    picked, attributes = 0, 0
    for obj in objects:
        alone = [m for m in fitting if consistent(m, obj) and sum(consistent(m, o) for o in objects) == 1]
        picked += bool(alone)
        attributes += len({attribute for m in alone for attribute in m})
    return {"mentions": len(said), "consistent": len(fitting), "objects": len(objects), "picked": picked,
            "attributes": attributes}


def fact_scores(paragraphs: list[str], scenes: list[list[dict]]) -> dict:
    """Micro-averaged precision, recall and attribute recall over paragraphs[i] about scenes[i]."""
    names = {obj["name"] for objects in scenes for obj in objects}
    counts = [score_paragraph(p, objects, names) for p, objects in zip(paragraphs, scenes)]
    total = {key: sum(c[key] for c in counts) for key in counts[0]} if counts else {}
    if not total or not total["objects"]:
        raise ValueError("no scene object to score against")
    return {"precision": total["consistent"] / total["mentions"] if total["mentions"] else 1.0,
            "recall": total["picked"] / total["objects"],
            "attribute_recall": total["attributes"] / (len(ATTRIBUTES) * total["objects"]),
            "mentions_per_scene": total["mentions"] / len(counts)}


def tfidf_similarity(queries: list[str], documents: list[str]) -> np.ndarray:
    """Cosine similarity [queries, documents] of TF-IDF vectors over words and word pairs."""
    if sklearn_text is None:
        raise MissingExtraError("TF-IDF retrieval scores", "scikit-learn", "agents")
    vectorizer = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"[a-z]+").fit(queries + documents)
    query_vectors, document_vectors = vectorizer.transform(queries), vectorizer.transform(documents)
    return (query_vectors @ document_vectors.T).toarray()


def encoder_similarity(encode: Callable[[list[str]], np.ndarray]) -> Callable[[list[str], list[str]], np.ndarray]:
    """Similarity by a sentence encoder: `encode(texts) -> [n, dim]` embeddings, compared by cosine."""
    def similarity(queries: list[str], documents: list[str]) -> np.ndarray:
        a, b = np.asarray(encode(queries), dtype=np.float64), np.asarray(encode(documents), dtype=np.float64)
        a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
        b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
        return a @ b.T
    return similarity


def recall_at_1(similarity: np.ndarray) -> float:
    """Row i's right column is i; a tie at the top shares the credit."""
    score = 0.0
    for row, values in enumerate(similarity):
        top = np.flatnonzero(np.isclose(values, values.max(), rtol=0, atol=1e-9))
        score += (row in top) / len(top)
    return score / len(similarity)


def retrieval_scores(paragraphs: list[str], truths: list[str],
                     similarity: Callable[[list[str], list[str]], np.ndarray] = tfidf_similarity) -> dict:
    """IR@1 (each paragraph finds its scene among all) and TR@1 (each scene finds its paragraph)."""
    matrix = similarity(paragraphs, truths)  # [paragraphs, scenes]
    return {"IR@1": recall_at_1(matrix), "TR@1": recall_at_1(matrix.T)}
