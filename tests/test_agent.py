"""The agent layer: images by handle, the toolbox's guard rails, templates end to end, loading, the CLI."""
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from conftest import REPO
from minigpt.agents.classical import classical_tools, color_name
from minigpt.agents.images import ImageStore
from minigpt.agents.loading import AgentConfigError, build_toolbox, parse_load, plan_loading, user_tools
from minigpt.paragraph.tool import write_paragraph_tool
from minigpt.agents.templates import TemplateError, find_template, load_template, shipped_templates
from minigpt.agents.tool import BOX, IMAGE, Tool, Toolbox, ToolError, check_box
from minigpt.cli.main import main
from minigpt.inference.loading import image_processor_for
from minigpt.config.loader import load_config
from minigpt.conversation.boxes import box_iou
from minigpt.inference.loading import load_for_inference

GRAY, RED, BLUE = (128, 128, 128), (220, 30, 30), (30, 60, 220)
FACE_BOX = [177, 67, 270, 160]  # the astronaut's face, as the Haar tool finds it (tests/test_agent_classical.py)


def scene() -> np.ndarray:
    """A gray 120x160 image with a red square and two blue rectangles."""
    image = np.full((120, 160, 3), GRAY, dtype=np.uint8)
    image[20:60, 20:60] = RED
    image[70:100, 90:110] = BLUE
    image[10:30, 120:150] = BLUE
    return image


def stand_in_tools() -> list[Tool]:
    """refer, detect and caption without a model: colour regions and colour names stand in for them,
    so the model templates run end to end with known answers (and this module is a user-tool factory)."""
    phrase = {"type": "string", "minLength": 1}

    def detect(context, args):
        color = args["phrase"].split()[-1]
        found = Toolbox(classical_tools(), context.images).call("find_color_regions", {"image": args["image"], "color": color})
        if not found.ok:
            raise ToolError(found.error)
        return {"boxes": found.result["boxes"], "count": found.result["count"], "box_text": ""}

    def refer(context, args):
        boxes = detect(context, args)["boxes"]
        if not boxes:
            raise ToolError(f"nothing matches {args['phrase']!r}")
        return {"box": boxes[0], "box_text": ""}

    def caption(context, args):
        pixels = context.image(args["image"]).reshape(-1, 3)
        return {"text": f"a {color_name(pixels.mean(axis=0))} shape"}

    def schema(**properties):
        return {"type": "object", "properties": {"image": IMAGE, **properties}, "required": ["image", *properties],
                "additionalProperties": False}
    def grounding(context, args):
        found = Toolbox(classical_tools(), context.images).call("color_segments", {"image": args["image"]})
        return {"text": "", "objects": [{"phrase": f"a {s['color']} shape", "box": s["box"]}
                                        for s in found.result["segments"]]}

    return [Tool("detect", "stand-in detector", schema(phrase=phrase), detect),
            Tool("refer", "stand-in grounder", schema(phrase=phrase), refer),
            Tool("caption", "stand-in captioner", schema(), caption),
            Tool("grounding", "stand-in grounded description", schema(), grounding),
            Tool("vqa", "stand-in answerer", schema(question=phrase), lambda context, args: {"answer": "yes"})]


@pytest.fixture
def toolbox(tmp_path):
    return Toolbox(classical_tools() + stand_in_tools() + [write_paragraph_tool()], ImageStore(tmp_path / "conversation"),
                   timeout_s=20)


def test_images_have_handles_provenance_and_files(tmp_path):
    store = ImageStore(tmp_path)
    first = store.add(scene(), tool="input")
    second = store.add(np.zeros((4, 5), dtype=np.uint8), parent=first, tool="crop", arguments={"box": [0, 0, 5, 4]})
    assert (first, second) == ("img_0", "img_1") and store.get(second).shape == (4, 5, 3)
    assert np.array_equal(np.asarray(Image.open(store.path(first))), scene())
    lines = [json.loads(line) for line in (tmp_path / "provenance.jsonl").read_text().splitlines()]
    assert lines[1] == {"handle": "img_1", "parent": "img_0", "tool": "crop", "arguments": {"box": [0, 0, 5, 4]},
                        "file": "img_1.png"}
    with pytest.raises(KeyError, match=r"unknown image handle 'img_7' \(this conversation's images: img_0, img_1\)"):
        store.get("img_7")
    with pytest.raises(ValueError, match="must be uint8"):
        store.add(np.zeros((4, 4, 3), dtype=np.float32))


def slow(context, args):
    time.sleep(5)
    return {}


def broken(context, args):
    raise RuntimeError("the weights folder is empty")


def test_every_failure_is_an_observation_and_the_images_are_kept(tmp_path):
    schema = {"type": "object", "properties": {"image": IMAGE, "box": BOX}, "required": ["image"],
              "additionalProperties": False}
    tools = [Tool("slow", "hangs", {"type": "object"}, slow), Tool("broken", "raises", {"type": "object"}, broken),
             Tool("liar", "bad result", {"type": "object"}, lambda c, a: {"count": "many"},
                  result={"type": "object", "properties": {"count": {"type": "integer"}}}),
             Tool("boxed", "checks its box", schema, lambda c, a: {"box": list(check_box(a["box"], c.image(a["image"])))})]
    toolbox = Toolbox(tools, ImageStore(tmp_path), timeout_s=0.3)
    handle = toolbox.images.add(scene())
    errors = {
        "unknown tool 'paint' (tools: slow, broken, liar, boxed)": toolbox.call("paint", {}),
        "arguments must be a JSON object": toolbox.call("boxed", ["img_0"]),
        "invalid arguments for boxed: box: [1, 2] is too short": toolbox.call("boxed", {"image": handle, "box": [1, 2]}),
        "Additional properties are not allowed ('path' was unexpected)": toolbox.call("boxed", {"image": handle, "path": "/etc"}),
        "boxed: unknown image handle 'img_3' (this conversation's images: img_0)": toolbox.call("boxed", {"image": "img_3", "box": [0, 0, 1, 1]}),
        "boxed: box [0, 0, 500, 10] is not inside the 160x120 image": toolbox.call("boxed", {"image": handle, "box": [0, 0, 500, 10]}),
        "slow did not finish: timed out after 0.3 s": toolbox.call("slow", {}),
        "broken failed: RuntimeError: the weights folder is empty": toolbox.call("broken", {}),
        "liar returned a malformed result: 'many' is not of type 'integer'": toolbox.call("liar", {}),
    }
    for message, observation in errors.items():
        assert not observation.ok and message in observation.error, observation.error
    assert toolbox.call("boxed", {"image": handle, "box": [1, 2, 30, 40]}).result == {"box": [1, 2, 30, 40]}
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == len(errors) + 1 == len(toolbox.history) and steps[-1]["error"] is None
    assert (tmp_path / "img_0.png").exists()


def test_the_shipped_templates_check_against_their_tools(toolbox):
    assert set(shipped_templates()) >= {"blur_faces", "remove_object", "describe_regions", "count_objects"}
    for name in shipped_templates():
        template = find_template(name)
        template.check(toolbox)
        assert template.as_tool(toolbox).parameters["required"] == list(template.inputs)


def test_blur_faces_blurs_the_face_and_nothing_else(toolbox):
    photo = data.astronaut()
    result = find_template("blur_faces").run(toolbox, {"image": toolbox.images.add(photo)})
    assert result["faces"] == 1 and box_iou(result["boxes"][0], FACE_BOX) > 0.8
    blurred = toolbox.images.get(result["image"])
    x1, y1, x2, y2 = result["boxes"][0]
    outside = np.ones(photo.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(blurred[outside], photo[outside])
    inside_change = np.abs(blurred[y1:y2, x1:x2].astype(int) - photo[y1:y2, x1:x2]).mean()
    assert inside_change > 3  # the face's detail is gone
    assert toolbox.images.provenance[result["image"]].tool == "blur_region"


def test_blur_faces_without_faces_returns_the_image_unchanged(toolbox):
    handle = toolbox.images.add(scene())
    result = find_template("blur_faces").run(toolbox, {"image": handle})
    assert result == {"image": handle, "faces": 0, "boxes": []}


def test_remove_object_fills_the_red_square_from_its_surroundings(toolbox):
    image = scene()
    result = find_template("remove_object").run(toolbox, {"image": toolbox.images.add(image), "object": "the red"})
    assert result["box"] == [20, 20, 60, 60]
    filled = toolbox.images.get(result["image"])
    region = filled[20:60, 20:60].reshape(-1, 3)
    assert np.abs(region.astype(int) - GRAY).max() < 40  # gray, not red, where the square was
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[15:65, 15:65] = False
    assert np.array_equal(filled[outside], image[outside])


def test_describe_regions_and_count_objects(toolbox):
    handle = toolbox.images.add(scene())
    described = find_template("describe_regions").run(toolbox, {"image": handle, "object": "blue"})
    assert sorted(described["boxes"]) == [[90, 70, 110, 100], [120, 10, 150, 30]]
    assert [c["text"] for c in described["captions"]] == ["a blue shape", "a blue shape"]
    counted = find_template("count_objects").run(toolbox, {"image": handle, "object": "blue"})
    assert counted["count"] == 2
    drawn = toolbox.images.get(counted["image"])
    assert not np.array_equal(drawn[70, 90:110], scene()[70, 90:110])  # the box's top edge is drawn


def test_a_failing_step_stops_the_template_with_its_name(toolbox):
    handle = toolbox.images.add(scene())
    with pytest.raises(ToolError, match=r"template remove_object, step 'found': refer: nothing matches 'a green'"):
        find_template("remove_object").run(toolbox, {"image": handle, "object": "a green"})
    with pytest.raises(TemplateError, match=r"template remove_object: arguments: 'object' is a required property"):
        find_template("remove_object").run(toolbox, {"image": handle})


@pytest.mark.parametrize("steps, message", [
    ("[{id: a, tool: paint, args: {image: $image}}]", "step 'a': tool 'paint' is not loaded"),
    ("[{id: a, tool: crop, args: {image: $image, size: 3}}]", "crop takes no argument 'size'"),
    ("[{id: a, tool: crop, args: {image: $image}}]", "crop needs box"),
    ("[{id: a, tool: crop, args: {image: $image, box: $b.box}}]", r"\$b.box names no input or earlier step"),
    ("[{id: a, tool: crop, args: {image: $image, box: [1, 2]}}]", r"argument 'box': \[1, 2\] is too short"),
    ("[{id: a, tool: face_detect, args: {image: $image}}, {id: b, tool: crop, args: {image: $image, box: $item}}]",
     r"\$item outside a for_each step"),
    ("[{id: a, tool: face_detect, args: {image: $image}}, {id: b, tool: crop, args: {image: $a.picture, box: [0, 0, 1, 1]}}]",
     "step 'a' gives no 'picture'"),
])
def test_template_mistakes_are_found_when_it_is_checked(toolbox, tmp_path, steps, message):
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\ninputs: {{image: image}}\nsteps: {steps}\n")
    with pytest.raises(TemplateError, match=message):
        load_template(path).check(toolbox)


def test_load_requests_are_parsed_on_the_last_underscore_and_checked_before_loading():
    assert [(r.name, r.device) for r in parse_load("face_detect_cpu, caption_cuda:0")] == [
        ("face_detect", "cpu"), ("caption", "cuda:0")]
    with pytest.raises(AgentConfigError, match="'facedetect' is not NAME_DEVICE"):
        parse_load("facedetect")
    tools = classical_tools()
    with pytest.raises(AgentConfigError, match="no tool 'caption' can load here"):
        plan_loading(tools, parse_load("caption_cpu"))
    with pytest.raises(AgentConfigError, match=r"face_detect: cuda:3 asked for, but \d GPU\(s\) are visible"):
        plan_loading(tools, parse_load("face_detect_cuda:3"))
    with pytest.raises(AgentConfigError, match="device 'gpu' is not cpu, cuda or cuda:N"):
        plan_loading(tools, parse_load("face_detect_gpu"))


def test_user_tools_plug_in_by_import_path(tmp_path):
    assert [tool.name for tool in user_tools("test_agent:stand_in_tools")] == ["detect", "refer", "caption", "grounding", "vqa"]
    with pytest.raises(AgentConfigError, match="cannot import 'nowhere.tools:make'"):
        user_tools("nowhere.tools:make")
    with pytest.raises(AgentConfigError, match="two tools share the name 'crop'"):
        build_toolbox(tmp_path, user_paths=["test_agent:clashing_tools"])
    printed = []
    toolbox, handle = build_toolbox(tmp_path, "face_detect_cpu", user_paths=["test_agent:stand_in_tools"],
                                    print_line=printed.append)
    assert handle is None  # no model config: no model tools
    assert printed == ["face_detect on cpu: about 50 MB"]
    assert {"face_detect", "detect", "refer", "caption"} <= set(toolbox.tools)


def clashing_tools() -> Tool:
    return Tool("crop", "another crop", {"type": "object"}, lambda context, args: {})


def test_agent_command_runs_a_template_and_a_tool(tmp_path, capsys):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    assert main(["agent", "--template", "blur_faces", "--image", str(photo), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "step 0: face_detect" in printed and "step 1: blur_region" in printed
    assert sorted(p.name for p in (tmp_path / "run").glob("img_*.png")) == ["img_0.png", "img_1.png"]
    assert main(["agent", "--tool", "crop", "--image", str(photo), "--arg", "box=[0, 0, 600, 10]",
                 "--out", str(tmp_path / "bad")]) == 1
    assert "box [0, 0, 600, 10] is not inside the 512x512 image" in capsys.readouterr().out
    assert main(["agent", "--template", "describe_regions", "--image", str(photo), "--out", str(tmp_path / "x"),
                 "--arg", "object=a face"]) == 2  # no model config: detect is not loaded
    assert "tool 'detect' is not loaded" in capsys.readouterr().err


def test_model_tools_answer_through_the_chat_engine_and_bad_answers_are_observations(shapes_dir, tmp_path, capsys):
    """A tiny MiniGPT-v2 with random weights: its caption is text, and a [refer] answer without a
    readable box is an error observation, not a crash."""
    image = tmp_path / "shapes.png"
    Image.fromarray(scene()).save(image)
    common = ["--image", str(image), "--cfg-path", str(REPO / "eval_configs/tiny_v2_eval.yaml"), "--cpu",
              "--options", "model.ckpt=null", f"model.tokenizer={shapes_dir}/tokenizer"]
    assert main(["agent", "--tool", "caption", "--load", "caption_cpu", "--out", str(tmp_path / "a"), *common]) == 0
    printed = capsys.readouterr().out
    assert '"text":' in printed
    estimate = re.search(r"caption on cpu: about (\d+) MB", printed)  # the tiny LLM's weights in fp32, before loading
    assert estimate and 0 < int(estimate.group(1)) < 100
    code = main(["agent", "--tool", "refer", "--arg", "phrase=the red square", "--out", str(tmp_path / "b"), *common])
    printed = capsys.readouterr().out
    assert code == 0 and '"box": [' in printed or code == 1 and "holds no readable box" in printed



@pytest.mark.slow
def test_model_tools_share_one_model_loaded_once_up_front_or_on_first_use(shapes_dir, tmp_path, monkeypatch):
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", ["model.ckpt=null", f"model.tokenizer={shapes_dir}/tokenizer"],
                         for_training=False)
    loads = []

    def loader(device):
        loads.append(device)
        return load_for_inference(config, torch.device(device)).eval(), image_processor_for(config)

    toolbox, handle = build_toolbox(tmp_path / "lazy", "", loader)
    assert loads == [] and {"caption", "vqa", "refer", "detect", "count", "identify", "grounding"} <= set(toolbox.tools)
    image = toolbox.images.add(scene())
    assert toolbox.call("caption", {"image": image}).ok and toolbox.call("vqa", {"image": image, "question": "Which colors?"}).ok
    assert loads == ["cpu"]  # one model for every model tool, loaded when the first needed it
    build_toolbox(tmp_path / "eager", "caption_cpu,vqa_cpu", loader)
    assert loads == ["cpu", "cpu"]  # --load: loaded up front, once
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # pretend GPUs: the request itself is wrong
    with pytest.raises(AgentConfigError, match="the model tools share one model, asked on cpu, cuda:0"):
        plan_loading(list(toolbox.tools.values()), parse_load("caption_cpu,vqa_cuda:0"))


def test_an_image_file_that_is_not_an_image_is_refused(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["agent", "--tool", "edges", "--image", str(tmp_path / "notes.png"), "--out", str(tmp_path / "r")]) == 2
    assert "not a readable image" in capsys.readouterr().err
