"""Face descriptions written by a GPT-4V-class annotator, grouped by section.

Schema (a JSON list, or JSON Lines), one question-answer pair per record:

    {"id": "0001-gender",            unique record id
     "image": "faces/0001.jpg",      path under build_info.image_path
     "section": "Gender",            which kind of description this is
     "question": "...",              optional: without it, one of the section's instructions is asked
     "answer": "..."}                the annotator's text

Records in the ShareGPT4V layout ({"id", "image", "conversations", "section"?}) are accepted too.
`sections` in the YAML gives each section its instructions and a weight (expected copies of each of its
records per pass: 2.0 doubles it, 0.5 keeps a half drawn anew each pass, 0 drops it); `select` restricts training to
some sections. The per-section counts are printed when the data set loads.

Section names match whatever their case and runs of spaces ("fitzpatrick", "Human  or not"); a record
takes the config's spelling. An id that repeats with another question, answer or section is an error;
an exact repeat is left out and counted. `require_face: true` skips (and counts) samples whose image has
no face OpenCV's detector finds. Held-out records may carry "attributes" {name: value}: eval.py then
scores each section on those words (evaluation/attribute_metrics.py).
"""
from __future__ import annotations

import collections
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from minigpt.common.registry import register_builder
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError, load_records, parse_conversation, require, require_text
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig
from minigpt.processors.faces import detect_faces

UNSECTIONED = "unsectioned"  # section of ShareGPT4V-layout records that name none


@dataclass
class FaceSection:
    weight: float = 1.0
    instructions: List[str] = field(default_factory=list)


@dataclass
class FaceConfig(AnnotationConfig):
    sections: Dict[str, FaceSection] = field(default_factory=dict)
    select: Optional[List[str]] = None  # train on these sections only (default: every section)
    default_instructions: List[str] = field(default_factory=lambda: ["Describe the person in this image."])
    require_face: bool = False  # skip (and count) samples whose image has no face OpenCV can find


def section_key(name: str) -> str:
    """Section names match whatever their case and spacing: "Human  or NOT" is "Human or not"."""
    return " ".join(str(name).split()).casefold()


def no_face_reason(image: Image.Image) -> str | None:
    return None if detect_faces(np.asarray(image.convert("RGB")), min_size=20) else "no face found in the image"


@register_builder("face_annotations")
class FaceAnnotationBuilder(AnnotationBuilder):
    config_class = FaceConfig
    counts_printed = False

    @property
    def image_check(self):
        return no_face_reason if self.cfg.require_face else None

    def parse(self, ann_path):
        records, seen, dropped = [], {}, 0
        spellings = {section_key(name): name for name in self.cfg.sections}  # the config's spelling wins
        for index, record in enumerate(load_records(ann_path)):
            parsed = self.parse_record(record, ann_path, index)
            parsed["section"] = spellings.setdefault(section_key(parsed["section"]), parsed["section"])
            content = {key: value for key, value in parsed.items() if key != "notes"}
            if parsed["id"] in seen:
                first, first_content = seen[parsed["id"]]
                if first_content != content:
                    raise AnnotationError(ann_path, index, f"id repeats record {first} with a different "
                                          "question, answer or section; give each record its own id", parsed["id"])
                dropped += 1
                continue
            seen[parsed["id"]] = (index, content)
            records.append(parsed)
        if dropped:
            print(f"{self.name}: {ann_path}: {dropped} exact repeats of earlier records left out")
        return records

    @staticmethod
    def parse_record(record: dict, ann_path: str, index: int) -> dict:
        record_id = str(require(record, "id", ann_path, index))
        image = require_text(record, "image", ann_path, index)
        if "conversations" in record:
            turns, notes = parse_conversation(record["conversations"], ann_path, index, record_id)
            return {"id": record_id, "image": image, "turns": turns, "notes": notes,
                    "section": record.get("section", UNSECTIONED)}
        section = require_text(record, "section", ann_path, index)
        answer = require_text(record, "answer", ann_path, index)
        parsed = {"id": record_id, "image": image, "section": section, "question": record.get("question"),
                  "answer": answer.strip()}
        if "attributes" in record:  # held-out records: the attribute values the answer should name
            parsed["attributes"] = record["attributes"]
        return parsed

    def arrange(self, records: list[dict], rng: random.Random) -> list[dict]:
        """Select and re-weight sections for one pass: weight 2.5 gives every record twice plus a half
        of them drawn anew each pass. The counts per section are printed the first time."""
        by_section: dict[str, list[dict]] = collections.defaultdict(list)
        for record in records:
            by_section[record["section"]].append(record)
        present = {section_key(section): section for section in by_section}
        select = {section_key(name) for name in self.cfg.select} if self.cfg.select is not None else None
        unknown = [name for name in self.cfg.select or [] if section_key(name) not in present]
        if unknown:
            raise AnnotationError(self.ann_path(), None, f"select names sections with no records: {unknown}; "
                                  f"sections present: {sorted(by_section)}")
        arranged, lines = [], []
        for section, section_records in sorted(by_section.items()):
            weight = self.section(section).weight if select is None or section_key(section) in select else 0.0
            whole, fraction = divmod(weight, 1.0)
            copies = [dict(r, id=f"{r['id']}#{n}" if n else r["id"]) for n in range(int(whole)) for r in section_records]
            extra = rng.sample(section_records, round(fraction * len(section_records)))
            copies += [dict(r, id=f"{r['id']}#{int(whole)}" if whole else r["id"]) for r in extra]
            arranged += copies
            lines.append(f"  {section}: {len(section_records)} records x {weight:g} -> {len(copies)} samples per pass")
        if not self.counts_printed and int(os.environ.get("RANK", 0)) == 0:
            print(f"{self.name}: {len(arranged)} samples from {len(by_section)} sections\n" + "\n".join(lines))
            self.counts_printed = True
        if not arranged:
            raise AnnotationError(self.ann_path(), None, "no sample left after select and section weights")
        return arranged

    def section(self, name: str) -> FaceSection:
        return self.cfg.sections.get(name) or FaceSection(instructions=list(self.cfg.default_instructions))

    def make_sample(self, record, rng):
        if "turns" in record:
            return {"turns": record["turns"], "task": None}
        question = record["question"]
        if not question:
            question = rng.choice(list(self.section(record["section"]).instructions or self.cfg.default_instructions))
        return {"turns": [(USER, question), (ASSISTANT, record["answer"])], "task": None}

    # ---- evaluation: answers scored on the attribute words of each section ----
    def eval_metric(self) -> str:
        return "attributes"

    def extra_reference(self, record: dict) -> dict:
        return {"section": record["section"], **({"attributes": record["attributes"]} if "attributes" in record else {})}
