"""Image to paragraph: colour segments, facts, the pipeline's stages and their failures, writers, the
template, the scores and the command line. A scripted stand-in answers the model's task modes from the
scene it drew, so every behaviour is checked against known answers without a trained model."""
import http.server
import json
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from minigpt.agents.classical import classical_tools, color_name
from minigpt.paragraph.facts import Fact, caption_facts, merge_facts, read_phrase
from minigpt.agents.images import ImageStore
from minigpt.agents.model_tools import model_tools
from minigpt.paragraph.pipeline import (ImageReadError, ParagraphOptions, ParagraphPipeline, StageError,
                                      grounded_paragraph, paragraph_stage_tools)
from minigpt.paragraph.tool import write_paragraph_tool
from minigpt.agents.templates import find_template
from minigpt.agents.tool import Toolbox
from minigpt.paragraph.writers import EndpointWriter, ModelWriter, WriterError
from minigpt.cli.main import main
from minigpt.common.errors import InputError
from minigpt.config.loader import load_config
from minigpt.conversation.boxes import box_tokens, parse_boxes
from minigpt.evaluation.paragraph_metrics import fact_scores, mentions, recall_at_1, retrieval_scores, scene_text
from minigpt.runners.eval_recipe import evaluate
from minigpt.synthetic.paragraphs import generate
from minigpt.synthetic.shapes import draw

SHAPES = [{"shape": "circle", "color": "red", "size": "large", "position": "top left", "bbox": [2, 2, 28, 28]},
          {"shape": "square", "color": "blue", "size": "small", "position": "bottom right", "bbox": [46, 46, 59, 59]}]
OBJECTS = [{"name": s["shape"], "color": s["color"], "size": s["size"], "position": s["position"], "box": s["bbox"]}
           for s in SHAPES]


class ScriptedModel:
    """Answers [caption] and [grounding] as a perfect model would for SHAPES (a crop: its main colour)."""

    memory_mb = 0

    def __init__(self, fail: str = "no task", grounding: str | None = None):
        self.fail, self.grounding, self.asked = fail, grounding, []

    def ask(self, image: np.ndarray, task: str | None, question: str) -> str:
        self.asked.append(task)
        if task == self.fail:
            raise RuntimeError("the GPU fell over")
        if task == "grounding":
            return self.grounding if self.grounding is not None else " and ".join(
                f"<p>a {s['size']} {s['color']} {s['shape']}</p> {box_tokens(*s['bbox'], 64, 64)}" for s in SHAPES)
        if image.shape[0] < 64:  # a region's crop
            colored = image.reshape(-1, 3)[image.reshape(-1, 3).min(axis=1) < 200]
            return f"a {color_name(colored.mean(axis=0).round())} shape."
        if task == "caption":
            return "a red circle and a blue square."
        return "A lovely picture of shapes."


def pipeline(model=None, **options) -> ParagraphPipeline:
    model = model or ScriptedModel()
    return ParagraphPipeline(paragraph_stage_tools(lambda device: model_tools(model, device)),
                             options=ParagraphOptions(**options))


@pytest.fixture
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    draw(SHAPES, 64).save(path)
    return path


def test_color_segments_find_each_shape_with_its_colour_and_place_and_nothing_on_a_plain_image(tmp_path):
    store = ImageStore(tmp_path)
    toolbox = Toolbox(classical_tools(), store)
    found = toolbox.call("color_segments", {"image": store.add(np.asarray(draw(SHAPES, 64)))}).result
    assert [(s["color"], s["position"]) for s in found["segments"]] == [("red", "top left"), ("blue", "bottom right")]
    assert found["background"] == "white" and found["segments"][0]["box"] == [2, 2, 28, 28]
    plain = toolbox.call("color_segments", {"image": store.add(np.full((40, 50, 3), 255, np.uint8))}).result
    assert plain["segments"] == [] and plain["count"] == 0


def test_phrases_read_as_attributes_and_an_object_and_stages_merge_into_one_fact():
    assert read_phrase("a large red circle") == (["large", "red"], "circle")
    assert read_phrase("the") is None
    assert [(f.attributes, f.object) for f in caption_facts("A red circle and a blue square.")] == [
        (["red"], "circle"), (["blue"], "square")]
    region = Fact("circle", ["large"], "top left", [2, 2, 28, 28], ["regions"])
    segment = Fact("region", ["red"], "top left", [2, 2, 27, 27], ["segments"])
    elsewhere = Fact("region", ["blue"], "bottom right", [46, 46, 59, 59], ["segments"])
    merged = merge_facts([region, segment, elsewhere, *caption_facts("a red circle")])
    assert [(f.noun_phrase, f.sources) for f in merged] == [
        ("large red circle", ["regions", "segments", "caption"]), ("blue region", ["segments"])]
    wrong_colour = merge_facts([Fact("circle", ["green"], None, [2, 2, 28, 28], ["regions"]), segment])
    assert len(wrong_colour) == 2  # a red segment does not become part of a green circle
    table = Fact("table", [], "center", [0, 0, 40, 40], ["regions"])
    twice = Fact("region", ["white"], "top left", [0, 0, 40, 38], ["segments"])
    inside = merge_facts([table, twice, segment, elsewhere])  # a region takes one segment; a part stays apart
    assert [(f.noun_phrase, f.sources) for f in inside] == [
        ("white table", ["regions", "segments"]), ("red region", ["segments"]), ("blue region", ["segments"])]


def test_the_pipeline_fuses_all_stages_into_a_paragraph_with_boxes(tmp_path, scene_png):
    result = pipeline().describe(scene_png, tmp_path / "run")
    assert result.paragraph.startswith("The image shows a red circle and a blue square.")
    assert "large red circle at the top left" in result.paragraph and "small blue square" in result.paragraph
    assert {s: r.status for s, r in result.stages.items()} == {"caption": "ok", "regions": "ok", "segments": "ok"}
    assert [sorted(f.sources) for f in result.facts] == [["caption", "regions", "segments"]] * 2
    assert [f.detail for f in result.facts] == ["a red shape.", "a blue shape."]  # each region captioned from its crop
    boxes = parse_boxes(result.grounded, 64, 64).boxes
    assert [b.label for b in boxes] == ["large red circle", "small blue square"]
    assert [[round(v) for v in b.box] for b in boxes] == [[2, 2, 28, 28], [46, 46, 59, 59]]
    steps = [json.loads(line)["tool"] for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert steps == ["caption", "grounding", "crop", "caption", "crop", "caption", "color_segments"]


def test_a_stage_turned_off_is_never_asked(tmp_path, scene_png):
    model = ScriptedModel()
    result = pipeline(model, stages=("segments",)).describe(scene_png, tmp_path)
    assert model.asked == [] and result.stages["caption"].status == "off"
    assert result.paragraph == "There is a red region at the top left. There is a blue region at the bottom right."
    with pytest.raises(ValueError, match="stage 'caption' is on but has no tools"):
        ParagraphPipeline(paragraph_stage_tools(None), options=ParagraphOptions(stages=("caption",)))
    with pytest.raises(ValueError, match="classical and runs on the CPU"):
        paragraph_stage_tools(None, {"segments": "cuda:0"})


def test_a_failing_stage_stops_the_run_by_name_or_is_reported_missing(tmp_path, scene_png):
    with pytest.raises(StageError, match="stage 'regions' failed: grounding failed: RuntimeError: the GPU fell over"):
        pipeline(ScriptedModel(fail="grounding")).describe(scene_png, tmp_path / "a")
    result = pipeline(ScriptedModel(fail="grounding"), missing_ok=True).describe(scene_png, tmp_path / "b")
    assert result.stages["regions"].status == "missing" and "GPU fell over" in result.stages["regions"].error
    assert result.stages["segments"].status == "ok" and "red region at the top left" in result.paragraph


def test_a_region_stage_that_finds_nothing_says_so_and_invents_nothing(tmp_path, scene_png):
    result = pipeline(ScriptedModel(grounding="I cannot tell."), stages=("regions",)).describe(scene_png, tmp_path)
    assert result.stages["regions"].status == "empty" and result.facts == []
    assert result.paragraph == "The image shows no distinct object."


def test_a_plain_image_gets_a_short_honest_paragraph_without_asking_the_model(tmp_path):
    model = ScriptedModel()
    result = pipeline(model).describe(np.full((64, 64, 3), 250, np.uint8), tmp_path)
    assert model.asked == [] and result.facts == []
    assert result.paragraph == "The image is plain white, with no distinct object in it."
    assert {r.status for r in result.stages.values()} == {"skipped"}


def test_not_an_image_is_named_and_a_huge_image_is_scaled(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not pixels")
    with pytest.raises(ImageReadError, match="notes.jpg: not an image"):
        pipeline().describe(bad, tmp_path / "bad")
    huge = tmp_path / "huge.jpg"
    Image.fromarray(np.asarray(draw(SHAPES, 64).resize((9000, 9000), Image.Resampling.NEAREST))).save(huge, quality=80)
    result = pipeline(stages=("segments",), max_side=512).describe(huge, tmp_path / "huge")
    assert (result.outputs.width, result.outputs.height) == (512, 512)
    assert [f.position for f in result.facts] == ["top left", "bottom right"]


class Endpoint(http.server.BaseHTTPRequestHandler):
    reply: bytes = b""

    def do_POST(self):  # noqa: N802 (the http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.HTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_llm_writers_answer_or_fail_by_name_and_the_template_writer_can_stand_in(tmp_path, scene_png, endpoint):
    server, url = endpoint
    facts = [Fact("circle", ["red"], "top left", [2, 2, 28, 28], ["regions"])]
    Endpoint.reply = json.dumps({"choices": [{"message": {"content": "A red circle sits at the top left."}}]}).encode()
    assert EndpointWriter(url).write(facts, None) == "A red circle sits at the top left."
    Endpoint.reply = json.dumps({"choices": [{"message": {"content": "{}"}}]}).encode()
    with pytest.raises(WriterError, match="not a paragraph"):
        EndpointWriter(url).write(facts, None)
    Endpoint.reply = b"<html>oops</html>"
    with pytest.raises(WriterError, match="not a chat completion"):
        EndpointWriter(url).write(facts, None)
    down = EndpointWriter("http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(WriterError, match="endpoint writer failed"):
        down.write(facts, None)
    stand_in = ParagraphPipeline(paragraph_stage_tools(None), down, ParagraphOptions(stages=("segments",),
                                                                                      fallback_to_template=True))
    result = stand_in.describe(scene_png, tmp_path)
    assert result.writer.startswith("template (fallback: the endpoint writer failed")
    assert "red region at the top left" in result.paragraph
    assert ModelWriter(ScriptedModel().ask).write(facts, None, np.zeros((64, 64, 3), np.uint8)).startswith("A lovely")
    with pytest.raises(WriterError, match="model writer"):
        ModelWriter(lambda image, task, question: " ...").write(facts, None, np.zeros((64, 64, 3), np.uint8))


def test_grounded_paragraph_marks_each_fact_once_even_when_phrases_repeat():
    facts = [Fact("region", ["red"], None, [0, 0, 10, 10]), Fact("region", ["red"], None, [20, 20, 30, 30])]
    grounded = grounded_paragraph("A red region here. A red region there.", facts, 40, 40)
    assert [[round(v) for v in b.box] for b in parse_boxes(grounded, 40, 40).boxes] == [[0, 0, 10, 10], [20, 20, 30, 30]]


def test_the_template_chains_the_stage_tools_into_the_same_paragraph(tmp_path):
    store = ImageStore(tmp_path)
    toolbox = Toolbox(classical_tools() + model_tools(ScriptedModel()) + [write_paragraph_tool()], store)
    template = find_template("image_to_paragraph")
    template.check(toolbox)
    output = template.run(toolbox, {"image": store.add(np.asarray(draw(SHAPES, 64)))})
    assert "large red circle at the top left" in output["paragraph"]
    assert [sorted(f["sources"]) for f in output["facts"]] == [["caption", "regions", "segments"]] * 2
    assert len(parse_boxes(output["grounded"], 64, 64).boxes) == 2
    unpaired = toolbox.call("write_paragraph", {"image": "img_0", "objects": [{"box": [2, 2, 28, 28]}],
                                                 "details": [{"text": "a red shape."}] * 2})
    assert not unpaired.ok and "details gives 2 captions for 1 objects" in unpaired.error


def test_scores_count_hallucinations_and_objects_picked_out_and_ties_share_retrieval_credit():
    assert mentions("A large red circle at the top left, and a green triangle.", {"circle", "triangle"}) == [
        {"position": "top left", "name": "circle", "color": "red", "size": "large"}, {"name": "triangle", "color": "green"}]
    scores = fact_scores(["There is a large red circle at the top left. There is a green triangle."], [OBJECTS])
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["attribute_recall"] == 0.5
    assert fact_scores(["a red region on the left"], [OBJECTS])["precision"] == 0.0  # the red one is top left
    assert recall_at_1(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.2, 0.1, 0.0]])) == pytest.approx((0.5 + 1) / 3)
    other = [{**OBJECTS[0], "position": "bottom left"}, OBJECTS[1]]
    truths = [scene_text(OBJECTS), scene_text(other)]
    same_caption = retrieval_scores(["a red circle and a blue square"] * 2, truths)
    assert same_caption == {"IR@1": 0.5, "TR@1": 0.5}
    placed = retrieval_scores(["a red circle at the top left", "a red circle at the bottom left"], truths)
    assert placed == {"IR@1": 1.0, "TR@1": 1.0}


def test_command_line_over_a_folder_resumes_and_counts_unreadable_images(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        draw(SHAPES[index % 2:], 64).save(folder / f"scene_{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    assert main(["paragraph", "--folder", str(folder), "--stages", "segments", "--out", str(out)]) == 0
    assert "3 described, 0 already done, 1 skipped" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "paragraphs.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all((out / "pictures" / f"scene_{i}.png").exists() for i in range(3))
    assert lines[0]["stages"]["segments"]["status"] == "ok" and lines[0]["facts"][0]["sources"] == ["segments"]
    assert main(["paragraph", "--folder", str(folder), "--stages", "segments", "--out", str(out)]) == 0
    assert "0 described, 3 already done, 1 skipped" in capsys.readouterr().out
    assert main(["paragraph", "--folder", str(folder), "--stages", "segments", "--out", str(out), "--strict"]) == 2
    assert "broken.png: not an image" in capsys.readouterr().err
    assert main(["paragraph", "--image", str(folder / "scene_0.png"), "--out", str(out)]) == 2
    assert "caption needs a model: give --cfg-path" in capsys.readouterr().err


def test_eval_scores_each_variant_on_a_gallery_and_names_bad_gallery_records(tmp_path):
    """eval.py's paragraph task end to end with an untrained tiny model: every variant is scored, and the
    classical segments alone pick out every object (colour and place are unique in these scenes)."""
    data = tmp_path / "paragraphs"
    generate(data, seed=0, train_images=20, gallery_groups=2)
    common = [f"model.tokenizer={data}/tokenizer", "model.ckpt=null", f"run.output_dir={tmp_path / 'eval'}",
              f"evaluation_datasets.gallery.build_info.ann_path={data}/gallery.json",
              f"evaluation_datasets.gallery.build_info.image_path={data}/images",
              "evaluation_datasets.gallery.max_new_tokens=8"]
    cfg = str(REPO / "eval_configs/tiny_paragraph_eval.yaml")
    config = load_config(cfg, common, for_training=False, for_evaluation=True)
    scores = evaluate(config, cfg)["gallery"]["scores"]
    assert {key.split("/")[0] for key in scores} == {"caption_only", "regions_only", "segments_only", "all"}
    assert scores["segments_only/recall"] == 1.0 and scores["segments_only/precision"] == 1.0
    predictions = json.loads((tmp_path / "eval" / "gallery" / "predictions.json").read_text())
    assert len(predictions) == 6 and set(predictions[0]["paragraphs"]) == {"caption_only", "regions_only",
                                                                           "segments_only", "all"}
    with pytest.raises(InputError, match="variants.odd: stages must be some of caption, regions, segments"):
        load_config(cfg, [*common, "evaluation_datasets.gallery.variants.odd=[colour]"], for_training=False,
                    for_evaluation=True)
    records = json.loads((data / "gallery.json").read_text())
    records[1]["objects"][0].pop("name")
    (data / "gallery.json").write_text(json.dumps(records))
    with pytest.raises(InputError, match=r"gallery.json: record 1 \(id 'gallery_000001'\): objects\[0\] needs a 'name'"):
        evaluate(load_config(cfg, common, for_training=False, for_evaluation=True), cfg)


def test_stage_devices_are_checked_before_any_model_loads(tmp_path, capsys, scene_png):
    cfg = ["--cfg-path", "tiny_paragraph_eval", "--out", str(tmp_path)]
    assert main(["paragraph", "--image", str(scene_png), *cfg, "--stage-device", "regions=cuda:7"]) == 2
    assert "regions: cuda:7 asked for, but" in capsys.readouterr().err
    assert main(["paragraph", "--image", str(scene_png), *cfg, "--stage-device", "segments=cpu",
                 "--stage-device", "colour=cpu"]) == 2
    assert "--stage-device 'colour=cpu': expected STAGE=DEVICE" in capsys.readouterr().err
    assert main(["paragraph", "--image", str(scene_png), "--stages", "segments,depth", "--out", str(tmp_path)]) == 2
    assert "--stages 'segments,depth': stages are some of caption, regions, segments" in capsys.readouterr().err
