"""Describe images in one paragraph each: caption, regions and colour segments, fused (docs/paragraph.md).

    minigpt paragraph --image photo.jpg --cfg-path minigptv2_eval
    minigpt paragraph --folder photos/ --cfg-path minigptv2_eval --out output/paragraphs   (resumable)
    minigpt paragraph --image photo.jpg --stages segments                                  (no model at all)
    minigpt paragraph --folder photos/ --cfg-path minigptv2_eval --llm-url http://localhost:8000/v1

Each image gets a line in OUT/paragraphs.jsonl (paragraph, grounded paragraph, facts, each stage's
status and time, the writer) and a picture OUT/pictures/<name>.png. A folder run started again skips
the images already in paragraphs.jsonl. An unreadable image in a folder is skipped and counted
(--strict stops instead); a failing stage stops the run with its name, unless --missing-ok.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from minigpt.paragraph.facts import STAGES
from minigpt.agents.loading import AgentConfigError, check_device
from minigpt.agents.model_tools import ModelHandle, model_tools
from minigpt.paragraph.pipeline import (ImageReadError, ParagraphOptions, ParagraphPipeline, StageError,
                                      paragraph_stage_tools)
from minigpt.paragraph.picture import paragraph_picture
from minigpt.paragraph.writers import EndpointWriter, ModelWriter, TemplateWriter, WriterError
from minigpt.cli.agent import model_loader
from minigpt.cli.options import add_model_arguments
from minigpt.common.errors import InputError
from minigpt.inference.loading import pick_device

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="image file(s)")
    source.add_argument("--folder", help="every image in a folder (sorted by name)")
    parser.add_argument("--cfg-path", help="a MiniGPT-v2 chat config: the captioner, grounder (and --writer model)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"stages to run, of {','.join(STAGES)}")
    parser.add_argument("--stage-device", action="append", default=[], metavar="STAGE=DEVICE",
                        help="run a model stage on its own device, e.g. regions=cuda:1 (default: the model's)")
    parser.add_argument("--no-region-captions", action="store_true", help="do not caption each region's crop")
    parser.add_argument("--writer", choices=("template", "model", "endpoint"), help="who writes the paragraph "
                        "(default: endpoint with --llm-url, else template)")
    parser.add_argument("--llm-url", help="an OpenAI-compatible endpoint (.../v1) that writes the paragraph")
    parser.add_argument("--llm-model", default="writer", help="the model name sent to --llm-url")
    parser.add_argument("--fallback-template", action="store_true",
                        help="when the writer fails (endpoint down, garbage answer), the template writer writes")
    parser.add_argument("--missing-ok", action="store_true", help="report a failing stage as missing and go on")
    parser.add_argument("--no-plain-check", action="store_true", help="ask the stages even about a one-colour image")
    parser.add_argument("--max-side", type=int, default=1024, help="larger images are scaled down to this first")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each tool call may take")
    parser.add_argument("--strict", action="store_true", help="an unreadable image stops the run")
    parser.add_argument("--out", help="output folder (default: output/paragraph/<time>)")
    add_model_arguments(parser)


def stage_devices(args: argparse.Namespace, stages: tuple[str, ...]) -> dict[str, str]:
    default = "cpu" if args.cpu else str(pick_device(args.gpu_id))
    devices = {stage: default for stage in ("caption", "regions")}
    for item in args.stage_device:
        stage, _, device = item.partition("=")
        if stage not in STAGES or not device:
            raise InputError(f"--stage-device {item!r}: expected STAGE=DEVICE with STAGE one of {', '.join(STAGES)}")
        try:
            check_device(device, stage)
        except AgentConfigError as error:
            raise InputError(str(error).replace("--load", "--stage-device")) from None
        devices[stage] = device
    return devices


def build_pipeline(args: argparse.Namespace) -> ParagraphPipeline:
    """Stages, tools and writer as asked, each checked before any model loads."""
    stages = tuple(stage.strip() for stage in args.stages.split(",") if stage.strip())
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown or not stages:
        raise InputError(f"--stages {args.stages!r}: stages are some of {', '.join(STAGES)}")
    writer_name = args.writer or ("endpoint" if args.llm_url else "template")
    needs_model = [stage for stage in stages if stage != "segments"]
    needs_model += ["--writer model"] if writer_name == "model" else []
    if needs_model and not args.cfg_path:
        raise InputError(f"{needs_model[0]} needs a model: give --cfg-path, or run --stages segments")
    if writer_name == "endpoint" and not args.llm_url:
        raise InputError("--writer endpoint needs --llm-url")
    devices = stage_devices(args, stages)
    handles: dict[str, ModelHandle] = {}

    def tools_on(device: str):
        on_cpu = argparse.Namespace(**{**vars(args), "cpu": args.cpu or device == "cpu"})
        handles[device] = ModelHandle(lambda: model_loader(on_cpu)(device))
        return model_tools(handles[device], device)

    try:
        stage_tools = paragraph_stage_tools(tools_on if args.cfg_path else None, devices)
    except ValueError as error:
        raise InputError(f"--stage-device: {error}") from None
    writer = {"template": TemplateWriter,
              "endpoint": lambda: EndpointWriter(args.llm_url, args.llm_model, args.timeout),
              "model": lambda: ModelWriter(next(iter(handles.values())).ask)}[writer_name]()
    options = ParagraphOptions(stages, not args.no_region_captions, args.missing_ok, not args.no_plain_check,
                               args.max_side, args.fallback_template, args.timeout)
    return ParagraphPipeline(stage_tools, writer, options)


def image_paths(args: argparse.Namespace) -> list[Path]:
    if args.image:
        return [Path(path) for path in args.image]
    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"--folder {folder}: not a folder")
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


def run(args: argparse.Namespace) -> int:
    pipeline = build_pipeline(args)
    paths = image_paths(args)
    out = Path(args.out or f"output/paragraph/{datetime.now():%Y%m%d-%H%M%S}")
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    results = out / "paragraphs.jsonl"
    done = done_images(results)
    todo = [path for path in paths if str(path) not in done]
    skipped = []
    with open(results, "a") as sink:
        for path in tqdm(todo, desc="paragraphs", disable=len(todo) < 2):
            name = str(path.relative_to(args.folder)).replace("/", "__") if args.folder else path.stem
            try:
                line = describe_one(pipeline, path, name.rsplit(".", 1)[0], out)
            except ImageReadError as error:
                if args.strict or args.image:
                    raise
                skipped.append(str(error))
                continue
            except (StageError, WriterError) as error:
                raise InputError(f"{path}: {error}") from None
            sink.write(json.dumps(line) + "\n")
            sink.flush()
            if args.image:
                print(line["paragraph"])
    print(f"{len(todo) - len(skipped)} described, {len(paths) - len(todo)} already done, {len(skipped)} skipped "
          f"-> {results}")
    for reason in skipped[:10]:
        print(f"skipped: {reason}")
    return 0
