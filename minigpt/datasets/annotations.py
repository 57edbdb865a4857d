"""Reading annotation files safely, with errors that name the file, the record and the field.

- JSON lists (or a list under one key, such as `{"annotations": [...]}`) and JSON Lines. A syntax
  error names the record it falls in, not just a line and column of a file that may be gigabytes.
- Pickles (RefCOCO's `refs(unc).p`) through an unpickler that refuses every global, so only plain
  lists, dicts, strings and numbers can come out: a pickle cannot run code on load.
- ShareGPT4V / LLaVA `conversations` into template-free turns, noting where the `<image>` marker is
  misplaced (python -m minigpt.check_dataset reports the notes; training strips the marker).
"""
from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path
from typing import Any

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.conversation.template import ASSISTANT, USER

IMAGE_MARKER = "<image>"
ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


class AnnotationError(InputError):
    """A problem in an annotation file, naming the file, the record index and id, and the field."""

    def __init__(self, path: str | Path, index: int | None, problem: str, record_id: Any = None):
        where = str(path) if index is None else f"{path}: record {index}"
        if record_id is not None:
            where += f" (id {record_id!r})"
        super().__init__(f"{where}: {problem}")


def require(record: dict, name: str, path: str | Path, index: int) -> Any:
    """record[name], or an AnnotationError naming the missing field and the record."""
    if not isinstance(record, dict):
        raise AnnotationError(path, index, f"expected an object, got {type(record).__name__}")
    if name not in record:
        raise AnnotationError(path, index, f"missing field '{name}'", record.get("id", record.get("question_id")))
    return record[name]


def text_value(value: Any, name: str, path: str | Path, index: int, record_id: Any = None) -> str:
    """A field that must hold text: a non-empty string (a JSON number is taken as its text, as answers
    like 2 are); null, a list or an empty string is an error naming the field."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(path, index, f"field '{name}' must be a non-empty string, got {value!r}", record_id)
    return value


def require_text(record: dict, name: str, path: str | Path, index: int) -> str:
    """record[name] as text (see text_value)."""
    return text_value(require(record, name, path, index), name, path, index, record.get("id", record.get("question_id")))


def optional_image(record: dict, path: str | Path, index: int, record_id: Any = None) -> str | None:
    """The record's one image file name, or None for a text-only record."""
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise AnnotationError(path, index, f"field 'image' must be one file name (one image per record), got {image!r}",
                              record_id)
    return image


def load_json(path: str | Path, key: str | None = None) -> Any:
    """A whole .json document; a syntax error names the record of the top-level list (or of the list
    under `key`) that it falls in."""
    path = resolve_path(str(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(path, None, f"cannot read: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        index = _record_at(text, error.pos, key)
        raise AnnotationError(path, index, f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except RecursionError:  # Python's parser recurses once per level of [ or {
        raise AnnotationError(path, None, "JSON nested too deeply to parse (thousands of levels of [ or {): "
                                          "not an annotation file") from None


def load_records(path: str | Path, key: str | None = None) -> list:
    """Records of a .json file (a list, or a list under `key`) or a .jsonl file (one record per line)."""
    path = resolve_path(str(path))
    if Path(path).suffix == ".jsonl":
        records = []
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 may sit in a string
        except (OSError, UnicodeDecodeError) as error:
            raise AnnotationError(path, None, f"cannot read: {error}") from None
        for line_number, line in enumerate(lines):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise AnnotationError(path, len(records), f"malformed JSON on line {line_number + 1}: {error.msg}") from None
                except RecursionError:
                    raise AnnotationError(path, len(records), f"line {line_number + 1} is JSON nested too deeply "
                                                              "to parse") from None
        return records
    data = load_json(path, key)
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise AnnotationError(path, None, f"expected an object with a '{key}' list")
        data = data[key]
    if not isinstance(data, list):
        raise AnnotationError(path, None, f"expected a list of records{f' under {key!r}' if key else ''}")
    return data


def _record_at(text: str, error_pos: int, key: str | None) -> int | None:
    """Index of the list element that holds `error_pos`, found by decoding elements one at a time."""
    decoder = json.JSONDecoder()
    if key:
        start = text.find("[", text.find(f'"{key}"'))
    else:  # only a top-level list has records; in an object the error gets a line and column only
        start = len(text) - len(text.lstrip())
        if not text[start:start + 1] == "[":
            return None
    if start < 0 or start > error_pos:
        return None
    pos, index = start + 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return index
        if pos > error_pos:
            return index
        index += 1


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def load_plain_pickle(path: str | Path) -> Any:
    """Lists, dicts, strings and numbers from a pickle; any class or function in it is refused."""
    path = resolve_path(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise AnnotationError(path, None, f"cannot read: {error}") from None
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise AnnotationError(path, None, f"unsafe or broken pickle: {error or type(error).__name__}") from None


def parse_conversation(conversations: Any, path: str | Path, index: int, record_id: Any = None) -> tuple[list, list[str]]:
    """ShareGPT4V / LLaVA turns -> ([(role, text)], notes). The `<image>` marker is removed from the
    text (the collator places the image); notes say where it was misplaced."""
    if not isinstance(conversations, list) or not conversations:
        raise AnnotationError(path, index, "field 'conversations' must be a non-empty list", record_id)
    turns, notes = [], []
    for turn_index, turn in enumerate(conversations):
        where = f"conversations[{turn_index}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise AnnotationError(path, index, f"{where} needs 'from' and 'value'", record_id)
        role = ROLES.get(turn["from"])
        if role is None:
            raise AnnotationError(path, index, f"{where}.from is {turn['from']!r}, expected human or gpt", record_id)
        text = turn["value"]
        if not isinstance(text, str) or (role == ASSISTANT and not text.strip()):
            raise AnnotationError(path, index, f"{where}.value must be a{' non-empty' if role == ASSISTANT else ''} string, "
                                               f"got {text!r}", record_id)
        markers = text.count(IMAGE_MARKER)
        if markers and (turn_index > 0 or role != USER):
            notes.append(f"{where}: <image> marker outside the first human turn")
        elif markers > 1:
            notes.append(f"{where}: {markers} <image> markers (one image per record)")
        elif markers == 1 and not (text.startswith(IMAGE_MARKER) or text.endswith(IMAGE_MARKER)):
            notes.append(f"{where}: <image> marker in the middle of the text")
        turns.append((role, text.replace(IMAGE_MARKER, "").strip()))
    return turns, notes


def subsample(records: list[dict], count: int | None, ids: list | str | None, seed: int = 0) -> list[dict]:
    """Keep the records whose id is listed (a list, or a file of ids: JSON list or one per line), then at
    most `count` of them, drawn reproducibly from the seed."""
    if ids is not None:
        if isinstance(ids, str):
            text = resolve_path(ids).read_text()
            ids = json.loads(text) if text.lstrip().startswith("[") else text.split()
        wanted = {str(i) for i in ids}
        records = [r for r in records if str(r["id"]) in wanted]
    if count is not None and count < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), count))
        records = [records[i] for i in keep]
    return records
