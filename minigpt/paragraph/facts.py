"""Facts about an image, gathered from the image-to-paragraph stages: what object, with which attributes,
where (a position word and a box), and which stages said so.

A phrase such as "a large red circle" is read as attributes ("large", "red") and an object ("circle"):
colour and size words are attributes, articles and numbers are dropped, and the last word is the
object. Facts from different stages about one thing are merged: a segment whose box overlaps a region's
box adds its colour and its stage to that region; a caption phrase naming a region's object adds its
stage. What no other stage confirms stays a fact of its own.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from minigpt.agents.classical import COLOR_NAMES
from minigpt.conversation.boxes import box_iou, position_word

SIZE_WORDS = ("tiny", "small", "little", "medium", "large", "big", "huge")
DROPPED_WORDS = {"a", "an", "the", "some", "one", "two", "three", "several", "many", "of", "with", "there", "is", "are"}
STAGES = ("caption", "regions", "segments")


@dataclass
class Fact:
    object: str  # the noun: "circle", "dog"; "region" for a segment with nothing but a colour
    attributes: list[str] = field(default_factory=list)  # colour and size words first, as read
    position: str | None = None  # "top left" ... "bottom right", from the box
    box: list[int] | None = None  # pixels [x1, y1, x2, y2]
    sources: list[str] = field(default_factory=list)  # the stages that said it
    phrase: str = ""  # the words a stage used, e.g. "a large red circle"
    detail: str | None = None  # what the region's crop was captioned, when it was

    @property
    def noun_phrase(self) -> str:
        """e.g. "large red circle"; what a writer names the thing by."""
        return " ".join([*self.attributes, self.object])

    def as_dict(self) -> dict:
        return asdict(self)


def read_phrase(phrase: str) -> tuple[list[str], str] | None:
    """"a large red circle" -> (["large", "red"], "circle"); None when no object word is left."""
    words = [word for word in re.findall(r"[a-z][a-z-]*", phrase.lower()) if word not in DROPPED_WORDS]
    if not words:
        return None
    return words[:-1], words[-1]


def caption_phrases(caption: str) -> list[str]:
    """A caption cut into its noun phrases at commas, "and", "with", "next to" and sentence ends."""
    parts = re.split(r"[.,;]|\band\b|\bwith\b|\bnext to\b|\bnear\b|\bbeside\b", caption.lower())
    return [part.strip() for part in parts if part.strip()]


def caption_facts(caption: str) -> list[Fact]:
    facts = []
    for phrase in caption_phrases(caption):
        read = read_phrase(phrase)
        if read is not None:
            facts.append(Fact(read[1], read[0], sources=["caption"], phrase=phrase))
    return facts


def region_facts(objects: list[dict], width: int, height: int, details: list[str | None] | None = None) -> list[Fact]:
    """[grounding] / [detection] objects {"phrase", "box"} as facts; `details` are their crops' captions."""
    facts = []
    for index, found in enumerate(objects):
        read = read_phrase(found.get("phrase") or "") or ([], "object")
        detail = details[index] if details else None
        attributes = list(read[0])
        detail_read = read_phrase(detail) if detail else None
        detail_colors = [word for word in (detail_read[0] if detail_read else []) if word in COLOR_NAMES]
        if detail_colors and not any(word in COLOR_NAMES for word in attributes):
            attributes.append(detail_colors[0])  # the crop saw a colour the region's phrase did not name
        facts.append(Fact(read[1], attributes, position_word(found["box"], width, height), list(found["box"]),
                          ["regions"], found.get("phrase") or "", detail))
    return facts


def segment_facts(segments: list[dict]) -> list[Fact]:
    return [Fact("region", [segment["color"]], segment["position"], list(segment["box"]), ["segments"],
                 f"a {segment['color']} region") for segment in segments]


def _colors(fact: Fact) -> set[str]:
    return {word for word in fact.attributes if word in COLOR_NAMES}


def colors_agree(a: Fact, b: Fact) -> bool:
    """False only when both name colours and no colour is in both."""
    return not (_colors(a) and _colors(b)) or bool(_colors(a) & _colors(b))


def absorb(into: Fact, fact: Fact) -> None:
    into.attributes += [word for word in fact.attributes if word not in into.attributes]
    into.sources += [source for source in fact.sources if source not in into.sources]


def merge_facts(facts: list[Fact], overlap: float = 0.3) -> list[Fact]:
    """One fact per thing: segments and caption phrases fold into the region they describe. A segment
    joins a region only when both boxes cover about the same extent (IoU >= `overlap`): a wrong region
    box then never swallows a right segment. A region takes one segment at most."""
    regions = [fact for fact in facts if "regions" in fact.sources]
    merged = list(regions)
    for fact in (fact for fact in facts if "regions" not in fact.sources):
        if fact.box is not None:  # a segment: the agreeing region it overlaps most, if enough
            agreeing = [region for region in regions if "segments" not in region.sources
                        and box_iou(region.box, fact.box) >= overlap and colors_agree(region, fact)]
            target = max(agreeing, key=lambda region: box_iou(region.box, fact.box), default=None)
        else:  # a caption phrase: the first region of its object that the caption has not confirmed yet
            target = next((region for region in regions if region.object == fact.object
                           and "caption" not in region.sources and colors_agree(region, fact)), None)
        if target is None:
            merged.append(fact)
        else:
            absorb(target, fact)
    return merged
