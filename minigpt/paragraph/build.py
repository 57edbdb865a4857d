"""The one place the image-to-paragraph pipeline is put together from settings: `minigpt paragraph`
(cli/paragraph.py) and the gallery evaluation (paragraph/evaluation.py) both call `build_pipeline`, so a
stage, device or writer option means the same thing in both and a new one is added once.

The model is loaded lazily, once per device a model stage runs on: settings that turn the model stages
off never load it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from minigpt.agents.model_tools import ModelHandle, model_tools
from minigpt.inference.chat import GenerationOptions
from minigpt.paragraph.pipeline import ParagraphOptions, ParagraphPipeline, paragraph_stage_tools
from minigpt.paragraph.writers import EndpointWriter, ModelWriter, TemplateWriter, Writer

WRITERS = ("template", "model", "endpoint")


@dataclass
class PipelineSettings:
    options: ParagraphOptions = field(default_factory=ParagraphOptions)
    writer: str = "template"  # one of WRITERS
    llm_url: str | None = None  # the endpoint writer's OpenAI-compatible endpoint (.../v1)
    llm_model: str = "writer"  # the model name sent to it
    devices: dict[str, str] = field(default_factory=dict)  # model stage -> device; "cpu" when not named
    generation: GenerationOptions | None = None  # how the model answers; None: ModelHandle's default


def build_pipeline(settings: PipelineSettings,
                   load_model: Callable[[str], tuple] | None = None) -> ParagraphPipeline:
    """The pipeline `settings` ask for. `load_model(device) -> (model, image_processor)` runs when a model
    stage or the model writer first needs the model on `device`; without it only the segments stage can
    run. Raises ValueError for settings that cannot run (a segments device other than the CPU, a model
    stage or writer without a model, the endpoint writer without a URL)."""
    handles: dict[str, ModelHandle] = {}

    def tools_on(device: str):
        handles[device] = ModelHandle(lambda: load_model(device), settings.generation)
        return model_tools(handles[device], device)

    stage_tools = paragraph_stage_tools(tools_on if load_model is not None else None, settings.devices)
    return ParagraphPipeline(stage_tools, make_writer(settings, handles), settings.options)


def make_writer(settings: PipelineSettings, handles: dict[str, ModelHandle]) -> Writer:
    """The model writer asks the model of the first model stage's device, so it loads no model of its own."""
    if settings.writer == "template":
        return TemplateWriter()
    if settings.writer == "endpoint":
        if not settings.llm_url:
            raise ValueError("the endpoint writer needs the URL of an endpoint")
        return EndpointWriter(settings.llm_url, settings.llm_model, settings.options.timeout_s)
    if settings.writer == "model":
        if not handles:
            raise ValueError("the model writer needs a model")
        return ModelWriter(next(iter(handles.values())).ask)
    raise ValueError(f"unknown writer {settings.writer!r} (writers: {', '.join(WRITERS)})")
