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
"""
from __future__ import annotations

import collections
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from minigpt.common.registry import register_builder
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError, load_records, parse_conversation, require, require_text
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig

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


@register_builder("face_annotations")
class FaceAnnotationBuilder(AnnotationBuilder):
    config_class = FaceConfig
    counts_printed = False

    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path)):
            record_id = str(require(record, "id", ann_path, index))
            image = require_text(record, "image", ann_path, index)
            if "conversations" in record:
                turns, notes = parse_conversation(record["conversations"], ann_path, index, record_id)
                section = record.get("section", UNSECTIONED)
                parsed = {"id": record_id, "image": image, "turns": turns, "notes": notes, "section": section}
            else:
                section = require(record, "section", ann_path, index)
                answer = require_text(record, "answer", ann_path, index)
                parsed = {"id": record_id, "image": image, "section": section, "question": record.get("question"),
                          "answer": answer.strip()}
            records.append(parsed)
        return records

    def arrange(self, records: list[dict], rng: random.Random) -> list[dict]:
        """Select and re-weight sections for one pass: weight 2.5 gives every record twice plus a half
        of them drawn anew each pass. The counts per section are printed the first time."""
        by_section: dict[str, list[dict]] = collections.defaultdict(list)
        for record in records:
            by_section[record["section"]].append(record)
        select = set(self.cfg.select) if self.cfg.select is not None else None
        unknown = select - set(by_section) if select else set()
        if unknown:
            raise AnnotationError(self.ann_path(), None, f"select names sections with no records: {sorted(unknown)}; "
                                  f"sections present: {sorted(by_section)}")
        arranged, lines = [], []
        for section, section_records in sorted(by_section.items()):
            weight = self.section(section).weight if select is None or section in select else 0.0
            whole, fraction = divmod(weight, 1.0)
            copies = [dict(r, id=f"{r['id']}#{n}" if n else r["id"]) for n in range(int(whole)) for r in section_records]
            extra = rng.sample(section_records, round(fraction * len(section_records)))
            copies += [dict(r, id=f"{r['id']}#{int(whole)}" if whole else r["id"]) for r in extra]
            arranged += copies
            lines.append(f"  {section}: {len(section_records)} records x {weight:g} -> {len(copies)} samples per pass")
        if not self.counts_printed and int(os.environ.get("RANK", 0)) == 0:
            print(f"{self.name}: {len(arranged)} samples from {len(by_section)} sections\n" + "\n".join(lines))
            self.counts_printed = True
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
