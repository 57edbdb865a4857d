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
from datetime import datetime
from pathlib import Path

from minigpt.agents.loading import AgentConfigError, check_device
from minigpt.cli.options import add_model_arguments, toolbox_model_from
from minigpt.common.errors import InputError
from minigpt.inference.loading import pick_device
from minigpt.paragraph.build import WRITERS, PipelineSettings, build_pipeline
from minigpt.paragraph.describe import describe_images, image_files
from minigpt.paragraph.facts import STAGES
from minigpt.paragraph.pipeline import ParagraphOptions


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
    parser.add_argument("--writer", choices=WRITERS, help="who writes the paragraph "
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


def stage_devices(args: argparse.Namespace) -> dict[str, str]:
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


def settings_from(args: argparse.Namespace) -> PipelineSettings:
    """The pipeline the flags ask for, each flag checked (and named when wrong) before any model loads."""
    stages = tuple(stage.strip() for stage in args.stages.split(",") if stage.strip())
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown or not stages:
        raise InputError(f"--stages {args.stages!r}: stages are some of {', '.join(STAGES)}")
    writer = args.writer or ("endpoint" if args.llm_url else "template")
    needs_model = [stage for stage in stages if stage != "segments"]
    needs_model += ["--writer model"] if writer == "model" else []
    if needs_model and not args.cfg_path:
        raise InputError(f"{needs_model[0]} needs a model: give --cfg-path, or run --stages segments")
    if writer == "endpoint" and not args.llm_url:
        raise InputError("--writer endpoint needs --llm-url")
    options = ParagraphOptions(stages, not args.no_region_captions, args.missing_ok, not args.no_plain_check,
                               args.max_side, args.fallback_template, args.timeout)
    return PipelineSettings(options, writer, args.llm_url, args.llm_model, stage_devices(args))


def image_paths(args: argparse.Namespace) -> list[Path]:
    if args.image:
        return [Path(path) for path in args.image]
    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"--folder {folder}: not a folder")
    return image_files(folder)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    load_model, _ = toolbox_model_from(args)
    try:
        pipeline = build_pipeline(settings, load_model)
    except ValueError as error:  # the flags are checked above; only a stage's device can still be refused
        raise InputError(f"--stage-device: {error}") from None
    paths = image_paths(args)
    out = Path(args.out or f"output/paragraph/{datetime.now():%Y%m%d-%H%M%S}")
    summary = describe_images(pipeline, paths, out, Path(args.folder) if args.folder else None,
                              strict=args.strict or bool(args.image), echo=print if args.image else None)
    print(f"{summary.described} described, {summary.already_done} already done, {len(summary.skipped)} skipped "
          f"-> {summary.results}")
    for reason in summary.skipped[:10]:
        print(f"skipped: {reason}")
    return 0
