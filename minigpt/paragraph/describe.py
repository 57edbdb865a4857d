"""Many images described into one output folder, so that a long run over a folder can be stopped and
started again: each image adds a line to OUT/paragraphs.jsonl (written and flushed as soon as it is
done) and a picture OUT/pictures/<name>.png, and a run started again skips the images already there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from minigpt.common.errors import InputError
from minigpt.paragraph.picture import paragraph_picture
from minigpt.paragraph.pipeline import ImageReadError, ParagraphPipeline, StageError
from minigpt.paragraph.writers import WriterError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass
class DescribeSummary:
    results: Path  # OUT/paragraphs.jsonl
    described: int = 0
    already_done: int = 0
    skipped: list[str] = field(default_factory=list)  # why each unreadable image was skipped


def image_files(folder: Path) -> list[Path]:
    """Every image under `folder`, sorted by path, so that runs over one folder agree on the order."""
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def done_images(results: Path) -> set[str]:
    """Images already described in an earlier run into the same folder (a cut last line is ignored)."""
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                done.add(json.loads(line)["image"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


def describe_one(pipeline: ParagraphPipeline, path: Path, name: str, out: Path) -> dict:
    """One image: its tool calls and images kept in OUT/work/<name>/, its picture in OUT/pictures/."""
    folder = out / "work" / name
    result = pipeline.describe(path, folder)
    segments = result.images.get("segments")
    picture = out / "pictures" / f"{name}.png"
    paragraph_picture(result, result.store.get(result.images["input"]),
                      result.store.get(segments) if segments else None).save(picture)
    return {"image": str(path), **result.as_dict(), "picture": str(picture)}


def output_name(path: Path, root: Path | None) -> str:
    """Unique within a folder run: the path under `root` with "/" as "__", without its suffix."""
    name = str(path.relative_to(root)).replace("/", "__") if root is not None else path.stem
    return name.rsplit(".", 1)[0]


def describe_images(pipeline: ParagraphPipeline, paths: list[Path], out: Path, root: Path | None = None,
                    strict: bool = False, echo: Callable[[str], None] | None = None) -> DescribeSummary:
    """Describe the `paths` not yet in OUT/paragraphs.jsonl (`root`: the folder they were found in).
    An unreadable image is skipped and counted, unless `strict`; a failing stage or writer stops the run,
    naming the image. `echo` is given each paragraph as it is written."""
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    summary = DescribeSummary(out / "paragraphs.jsonl")
    done = done_images(summary.results)
    todo = [path for path in paths if str(path) not in done]
    summary.already_done = len(paths) - len(todo)
    with open(summary.results, "a") as sink:
        for path in tqdm(todo, desc="paragraphs", disable=len(todo) < 2):
            try:
                line = describe_one(pipeline, path, output_name(path, root), out)
            except ImageReadError as error:
                if strict:
                    raise
                summary.skipped.append(str(error))
                continue
            except (StageError, WriterError) as error:
                raise InputError(f"{path}: {error}") from None
            sink.write(json.dumps(line) + "\n")
            sink.flush()
            summary.described += 1
            if echo is not None:
                echo(line["paragraph"])
    return summary
