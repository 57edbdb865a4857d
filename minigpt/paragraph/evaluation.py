"""eval.py's image-to-paragraph task: every scene of a `paragraph_gallery` section through the pipeline
once, a paragraph per variant (a variant writes from the outputs of some stages only, exactly as if the
others were turned off), then fact precision / recall and retrieval IR@1 / TR@1 per variant
(evaluation/paragraph_metrics.py). Returns each scene's paragraphs and stage statuses (predictions.json)
and the scores as "<variant>/<score>".

The task is registered as the "paragraph" evaluation task, the metric the gallery builder names, which
is how runners/eval_recipe.py finds it without knowing about paragraphs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from minigpt.agents.images import ImageStore
from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.common.registry import register_eval_task
from minigpt.evaluation.paragraph_metrics import (encoder_similarity, fact_scores, retrieval_scores, scene_text,
                                                   tfidf_similarity)
from minigpt.inference.chat import GenerationOptions
from minigpt.paragraph.build import PipelineSettings, build_pipeline
from minigpt.paragraph.facts import STAGES
from minigpt.paragraph.pipeline import ParagraphOptions, ParagraphPipeline, load_image


def sentence_encoder(folder: str):
    """A sentence-transformers model from a local folder, as a similarity function."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError(f"encoder {folder}: install sentence-transformers to use a sentence encoder") from None
    model = SentenceTransformer(str(resolve_path(folder)), local_files_only=True)
    return encoder_similarity(lambda texts: model.encode(texts, convert_to_numpy=True))


def describe_gallery(records: list[dict], image_root: Path, pipeline: ParagraphPipeline, variants: dict) -> list[dict]:
    """One prediction per scene: its paragraph under each variant and the stage reports."""
    predictions = []
    with tempfile.TemporaryDirectory() as scratch:
        for record in tqdm(records, desc="paragraphs"):
            pixels = load_image(image_root / record["image"], pipeline.options.max_side)
            outputs, reports, handles = pipeline.gather(pixels, ImageStore(Path(scratch) / record["id"]))
            paragraphs = {variant: pipeline.write(outputs, reports, handles, tuple(stages), pixels).paragraph
                          for variant, stages in variants.items()}
            predictions.append({"id": record["id"], "paragraphs": paragraphs, "objects": record["objects"],
                                "stages": {stage: report.status for stage, report in reports.items()}})
    return predictions


def gallery_settings(section: DictConfig, variants: dict[str, list[str]], max_new_tokens: int) -> PipelineSettings:
    """Every stage some variant uses runs once per scene; a failing stage is reported and scored as
    missing rather than stopping the evaluation."""
    used = tuple(stage for stage in STAGES if any(stage in stages for stages in variants.values()))
    options = ParagraphOptions(stages=used, region_captions=section.region_captions, plain_check=section.plain_check,
                               missing_ok=True)
    return PipelineSettings(options, section.writer, generation=GenerationOptions(max_new_tokens=max_new_tokens))


def evaluate_gallery(model, image_processor, section: DictConfig, records: list[dict], name: str,
                     max_new_tokens: int) -> tuple[dict, list[dict]]:
    """(scores, predictions) of one paragraph_gallery section."""
    variants = {variant: list(stages) for variant, stages in section.variants.items()}
    pipeline = build_pipeline(gallery_settings(section, variants, max_new_tokens),
                              lambda device: (model, image_processor))
    predictions = describe_gallery(records, resolve_path(section.build_info.image_path), pipeline, variants)
    similarity = sentence_encoder(section.encoder) if section.encoder else tfidf_similarity
    truths = [scene_text(p["objects"]) for p in predictions]
    scenes = [p["objects"] for p in predictions]
    scores = {}
    for variant in variants:
        paragraphs = [p["paragraphs"][variant] for p in predictions]
        found = {**fact_scores(paragraphs, scenes), **retrieval_scores(paragraphs, truths, similarity)}
        scores.update({f"{variant}/{key}": value for key, value in found.items()})
    return scores, predictions


@register_eval_task("paragraph")
class ParagraphGalleryTask:
    """A gallery section is scored as a whole (retrieval compares every paragraph with every scene), on
    one process: eval.py runs it on rank 0 while the other ranks wait."""

    def __init__(self, name: str, section: DictConfig):
        self.name, self.section = name, section

    def evaluate(self, model, image_processor, records: list[dict]) -> tuple[dict, list[dict]]:
        """-> (scores, predictions)."""
        return evaluate_gallery(model, image_processor, self.section, records, self.name,
                                self.section.max_new_tokens)
