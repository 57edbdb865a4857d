"""The sections of the synthetic face annotations: which faces each applies to, its questions, and the
answers an annotator would write (several phrasings per fact), with the short reference and the
attribute values that the per-section scores check. Used by faces.py."""
from __future__ import annotations

import random

ROMAN = ("I", "II", "III", "IV", "V", "VI")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
INTENSITY_ADVERBS = {"slight": "a little", "moderate": "fairly", "strong": "very"}
EXPRESSION_PHRASES = {
    "happy": ("The person looks happy, smiling with the corners of the mouth turned up.",
              "A happy expression: a broad smile.", "They seem happy."),
    "sad": ("The person looks sad; the mouth turns down.", "A sad face, with drooping lips.", "They seem sad."),
    "surprised": ("The person looks surprised, the mouth open in a round O.", "A surprised expression.",
                  "They seem surprised."),
    "angry": ("The person looks angry: the eyebrows are drawn down and together.", "An angry frown.",
              "They seem angry."),
    "neutral": ("The face is neutral, with a relaxed, straight mouth.", "A neutral expression.",
                "They seem neutral, showing no particular emotion."),
}

# applies: "human" (one human face), "single" (one face, human or cat), "group" (two or three), "any"
SECTIONS = {
    "Facial Expression due to contextual cues": {"applies": "human", "questions": (
        "What expression does the person show?", "How does this person feel, judging by the face?",
        "Describe the facial expression.")},
    "Intensity of the emotion": {"applies": "human", "questions": (
        "How intense is the emotion shown on this face?", "Rate the intensity of the person's emotion.")},
    "Fitzpatrick": {"applies": "human", "questions": (
        "What is the person's skin type on the Fitzpatrick scale?", "Which Fitzpatrick type is this skin?")},
    "Human or not": {"applies": "single", "questions": (
        "Is the face in this image a human face?", "Is this a person's face?")},
    "Accessories": {"applies": "human", "questions": (
        "Is the person wearing glasses?", "Does this person wear glasses?")},
    "Posture": {"applies": "single", "questions": (
        "Describe the posture of the head.", "How is the head held?")},
    "Facial Characteristics Short": {"applies": "human", "questions": (
        "Briefly describe the person's facial characteristics.", "Summarise this face in one sentence.")},
    "Feature by Feature Description": {"applies": "human", "questions": (
        "Describe the face feature by feature.", "Go through the face feature by feature.")},
    "Number of Faces": {"applies": "any", "questions": (
        "How many faces are in the image?", "Count the faces in this picture.")},
    "Multi-Person Interaction": {"applies": "group", "questions": (
        "Describe the people in this image and how they look.", "Who is in this picture, and how do they seem?")},
}


def applies(section: str, faces: list[dict]) -> bool:
    kind = SECTIONS[section]["applies"]
    return (kind == "any" or (kind == "group" and len(faces) > 1)
            or (kind == "single" and len(faces) == 1) or (kind == "human" and len(faces) == 1 and faces[0]["human"]))


def tilt_words(face: dict) -> str:
    return "upright" if face["tilt"] == "upright" else f"tilted to the {face['tilt']}"


def answer(rng: random.Random, section: str, faces: list[dict]) -> tuple[str, str, dict]:
    """(an annotator's answer, the short reference, {attribute: value}) of one section about the faces."""
    face, count = faces[0], COUNT_WORDS[len(faces)]
    if section == "Facial Expression due to contextual cues":
        return rng.choice(EXPRESSION_PHRASES[face["expression"]]), face["expression"], {"expression": face["expression"]}
    if section == "Intensity of the emotion":
        if face["intensity"] is None:
            return rng.choice(("Intensity: none, the face is calm.", "None: no emotion shows.")), "none", {"intensity": "none"}
        level, adverb = face["intensity"], INTENSITY_ADVERBS[face["intensity"]]
        text = rng.choice((f"The emotion is {level}: the person looks {adverb} {face['expression']}.",
                           f"{level.capitalize()}; {adverb} {face['expression']}."))
        return text, level, {"intensity": level}
    if section == "Fitzpatrick":
        skin = face["skin"]
        text = rng.choice((f"Type {skin} on the Fitzpatrick scale.", f"Fitzpatrick type {skin}.",
                           f"The skin tone matches Fitzpatrick type {skin}."))
        return text, f"type {skin}", {"skin": skin.lower()}
    if section == "Human or not":
        if face["human"]:
            return rng.choice(("Yes, this is a human face.", "Yes: a person's face.")), "yes", {"human": "yes"}
        return rng.choice((f"No, it is the face of a {face['fur']} cat.", "No, this is a cat's face, with pointed ears "
                           "and whiskers.")), "no", {"human": "no"}
    if section == "Accessories":
        if face["glasses"]:
            return rng.choice(("Yes, the person wears glasses.", "Yes: round dark glasses.")), "yes", {"glasses": "yes"}
        return rng.choice(("No, the person wears no glasses.", "No glasses: no.")), "no", {"glasses": "no"}
    if section == "Posture":
        return f"The head is {tilt_words(face)}.", face["tilt"], {"tilt": face["tilt"]}
    if section == "Facial Characteristics Short":
        glasses = " and glasses" if face["glasses"] else ""
        article = "An" if face["expression"][0] in "aeiou" else "A"
        text = f"{article} {face['expression']} face with {face['hair']} hair, {face['eyes']} eyes{glasses}."
        return text, f"{face['expression']}, {face['hair']} hair, {face['eyes']} eyes", {
            "expression": face["expression"], "hair": face["hair"], "eyes": face["eyes"]}
    if section == "Feature by Feature Description":
        glasses = "round glasses" if face["glasses"] else "no glasses"
        text = (f"Hair: {face['hair']}. Eyes: {face['eyes']}, behind {glasses}. Mouth: {face['expression']}. "
                f"Head: {tilt_words(face)}.")
        return text, f"{face['hair']} hair, {face['eyes']} eyes", {"hair": face["hair"], "eyes": face["eyes"]}
    if section == "Number of Faces":
        noun, verb = ("face", "is") if count == "one" else ("faces", "are")
        return rng.choice((f"There {verb} {count} {noun} in the image.", f"{count.capitalize()} {noun}.")), count, {"count": count}
    moods = " and ".join(f"the person on the {place} looks {f['expression']}"
                         for place, f in zip(("left", "middle", "right") if len(faces) == 3 else ("left", "right"), faces))
    return f"{count.capitalize()} people side by side: {moods}.", count, {"count": count}


def annotate(rng: random.Random, image_id: str, image: str, faces: list[dict], test: bool) -> list[dict]:
    """One record per section that applies to the image: the annotator's answer for training, the short
    reference and attributes for a held-out image."""
    records = []
    for section in SECTIONS:
        if not applies(section, faces):
            continue
        text, reference, attributes = answer(rng, section, faces)
        record = {"id": f"{image_id}-{section.lower().replace(' ', '-')}", "image": image, "section": section,
                  "question": rng.choice(SECTIONS[section]["questions"])}
        records.append({**record, "answer": reference, "attributes": attributes} if test else {**record, "answer": text})
    return records


def describe(rng: random.Random, faces: list[dict]) -> str:
    """A detailed description of the whole image, as a GPT-4V-style caption would give it."""
    if not faces[0]["human"]:
        return f"The image shows the face of a {faces[0]['fur']} cat, its head {tilt_words(faces[0])}, on a white background."
    parts = []
    for face in faces:
        glasses = ", wearing glasses" if face["glasses"] else ""
        article = "an" if face["expression"][0] in "aeiou" else "a"
        parts.append(f"{article} {face['expression']} person with {face['hair']} hair and {face['eyes']} eyes{glasses}, "
                     f"skin of Fitzpatrick type {face['skin']}, head {tilt_words(face)}")
    faces_words = f"{COUNT_WORDS[len(faces)]} face{'s' if len(faces) > 1 else ''}"
    opening = rng.choice(("The image shows", "We see", "In this picture there " + ("are" if len(faces) > 1 else "is")))
    return f"{opening} {faces_words}: " + "; ".join(parts) + "."
