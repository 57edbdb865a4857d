"""The web demo's Tools tab: a template or a tool on an uploaded image, each step's image shown."""
import numpy as np
from PIL import Image
from skimage import data

from minigpt.agents.classical import classical_tools
from minigpt.serving.web_agent import AgentTab


def test_the_tools_tab_runs_a_template_and_shows_each_steps_image(tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    tab = AgentTab(classical_tools(), tmp_path / "runs")
    choices = tab.choices()
    assert "template: blur_faces" in choices and "tool: crop" in choices
    assert "template: remove_object" not in choices  # its refer tool needs the model
    images, steps = tab.run(str(photo), "template: blur_faces", "{}")
    assert [caption for _, caption in images] == ["img_0: input", "img_1: blur_region"]
    assert np.asarray(Image.open(images[1][0])).shape == (512, 512, 3)
    assert steps.startswith("1. `face_detect(") and "2. `blur_region(" in steps and '"faces": 1' in steps

    images, steps = tab.run(str(photo), "tool: crop", '{"box": [0, 0, 900, 10]}')
    assert len(images) == 1 and "box [0, 0, 900, 10] is not inside the 512x512 image" in steps
    assert tab.run(str(photo), "tool: crop", "[1, 2]")[1].startswith("**The arguments must be a JSON object")
    assert tab.run(None, "tool: crop", "{}") == ([], "**Upload an image first.**")
    (tmp_path / "notes.txt").write_text("not an image")
    assert "is not an image" in tab.run(str(tmp_path / "notes.txt"), "tool: crop", "{}")[1]
