"""The classical visual tools on real photos that ship with scikit-image and scikit-learn, and on
numpy-drawn shapes whose right answers are known to the pixel; bad input goes through the Toolbox."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data
from sklearn.datasets import load_sample_image

from minigpt.agents.classical import COLORS, classical_tools, color_mask, color_name
from minigpt.agents.images import ImageStore
from minigpt.agents.tool import Toolbox
from minigpt.conversation.boxes import box_iou
from minigpt.processors import faces

# Measured once with face_detect on skimage.data.astronaut() and checked by eye on the drawn box.
ASTRONAUT_FACE = [177, 67, 270, 160]
RED_SQUARE = [30, 40, 80, 90]  # [x1, y1, x2, y2] in shapes_image()
WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def shapes_image() -> np.ndarray:
    """300x200 white, one red square and two blue shapes (a disc and a rectangle)."""
    image = np.full((200, 300, 3), WHITE, dtype=np.uint8)
    x1, y1, x2, y2 = RED_SQUARE
    image[y1:y2, x1:x2] = RED
    cv2.circle(image, (200, 60), 25, BLUE, thickness=-1)
    image[120:170, 150:260] = BLUE
    return image


@pytest.fixture
def toolbox(tmp_path) -> Toolbox:
    return Toolbox(classical_tools(), ImageStore(tmp_path))


def call(toolbox: Toolbox, name: str, **arguments) -> dict:
    observation = toolbox.call(name, arguments)
    assert observation.ok, observation.error
    return observation.result


def test_every_tool_is_there_with_strict_arguments():
    tools = classical_tools()
    assert [tool.name for tool in tools] == [
        "face_detect", "find_color_regions", "superpixels", "dominant_colors", "color_segments", "edges", "crop",
        "blur_region", "pixelate_region", "inpaint_region", "cutout", "draw_boxes", "resize", "rotate", "sketch", "stylize"]
    for tool in tools:
        assert tool.parameters["additionalProperties"] is False, tool.name
        assert "image" in tool.parameters["required"], tool.name


def test_color_names_give_every_pixel_exactly_one_name():
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    names_per_pixel = sum(color_mask(pixels, name).astype(int) for name in COLORS)
    assert (names_per_pixel == 1).all()
    assert {name: color_name(color.rgb) for name, color in COLORS.items()} == {name: name for name in COLORS}
    assert color_name([250, 245, 240]) == "white" and color_name([20, 10, 30]) == "black"


def test_face_detect_finds_the_astronaut_and_nothing_elsewhere(toolbox):
    astronaut = call(toolbox, "face_detect", image=toolbox.images.add(skimage.data.astronaut()))
    assert astronaut["count"] == 1 and len(astronaut["boxes"]) == 1
    assert box_iou(astronaut["boxes"][0], ASTRONAUT_FACE) >= 0.8
    for photo in (skimage.data.coffee(), np.full((240, 320, 3), 255, dtype=np.uint8)):
        assert call(toolbox, "face_detect", image=toolbox.images.add(photo)) == {"boxes": [], "count": 0}


def test_face_detect_says_how_to_get_a_missing_cascade(toolbox, monkeypatch, tmp_path):
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path / "none") + "/")
    faces.face_cascade.cache_clear()
    try:
        observation = toolbox.call("face_detect", {"image": toolbox.images.add(shapes_image())})
    finally:
        monkeypatch.undo()
        faces.face_cascade.cache_clear()
    assert not observation.ok and "opencv-python-headless<5" in observation.error


def test_find_color_regions_finds_the_red_square_and_both_blue_shapes(toolbox):
    handle = toolbox.images.add(shapes_image())
    red = call(toolbox, "find_color_regions", image=handle, color="red")
    assert red["count"] == 1 and red["boxes"] == [RED_SQUARE] and red["areas"] == [50 * 50]
    blue = call(toolbox, "find_color_regions", image=handle, color="blue")
    assert blue["count"] == 2
    assert blue["boxes"][0] == [150, 120, 260, 170]  # the rectangle is larger than the disc
    assert max(abs(found - true) for found, true in zip(blue["boxes"][1], [175, 35, 226, 86])) <= 1
    assert call(toolbox, "find_color_regions", image=handle, color="green") == {"boxes": [], "areas": [], "count": 0}
    assert call(toolbox, "find_color_regions", image=handle, color="blue", min_area=3000)["count"] == 1


def test_dominant_colors_of_half_red_half_blue(toolbox):
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, :50], image[:, 50:] = RED, BLUE
    handle = toolbox.images.add(image)
    colors = call(toolbox, "dominant_colors", image=handle, k=2)["colors"]
    assert {color["name"] for color in colors} == {"red", "blue"}
    assert [color["share"] for color in colors] == pytest.approx([0.5, 0.5], abs=0.01)
    assert {tuple(color["rgb"]) for color in colors} == {RED, BLUE}
    only_red = call(toolbox, "dominant_colors", image=handle, k=5, box=[0, 0, 50, 100])["colors"]
    assert only_red == [{"name": "red", "rgb": list(RED), "share": 1.0}]


def test_dominant_colors_of_a_photo_are_sorted_shares_of_the_whole(toolbox):
    colors = call(toolbox, "dominant_colors", image=toolbox.images.add(skimage.data.coffee()), k=4)["colors"]
    shares = [color["share"] for color in colors]
    assert len(colors) == 4 and shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1, abs=0.01)
    assert all(color["name"] == color_name(color["rgb"]) for color in colors)


def test_crop_is_exactly_the_sub_array(toolbox):
    image = skimage.data.chelsea()
    cropped = call(toolbox, "crop", image=toolbox.images.add(image), box=[100, 20, 251, 170])["image"]
    assert np.array_equal(toolbox.images.get(cropped), image[20:170, 100:251])


@pytest.mark.parametrize("name, options", [("blur_region", {"strength": 5}), ("pixelate_region", {"block": 8}),
                                           ("inpaint_region", {})])
def test_local_edits_change_only_inside_the_box(toolbox, name, options):
    image = skimage.data.astronaut()
    x1, y1, x2, y2 = ASTRONAUT_FACE
    edited = toolbox.images.get(call(toolbox, name, image=toolbox.images.add(image), box=ASTRONAUT_FACE,
                                     **options)["image"])
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(edited[outside], image[outside])
    changed = np.any(edited[y1:y2, x1:x2] != image[y1:y2, x1:x2], axis=2)
    assert changed.mean() > 0.5


def test_new_images_record_where_they_came_from(toolbox):
    handle = toolbox.images.add(shapes_image())
    edited = call(toolbox, "blur_region", image=handle, box=RED_SQUARE)["image"]
    provenance = toolbox.images.provenance[edited]
    assert (provenance.parent, provenance.tool, provenance.arguments) == (
        handle, "blur_region", {"image": handle, "box": RED_SQUARE})


def test_cutout_separates_a_square_from_a_plain_background(toolbox):
    image = np.full((160, 200, 3), (200, 220, 190), dtype=np.uint8)
    image[50:110, 70:130] = (30, 60, 200)  # a 60x60 square
    image = (image.astype(int) + np.random.default_rng(0).integers(-6, 7, image.shape)).astype(np.uint8)
    result = call(toolbox, "cutout", image=toolbox.images.add(image), box=[55, 35, 145, 125])
    assert abs(result["mask_area"] - 60 * 60) <= 0.05 * 60 * 60
    assert max(abs(found - true) for found, true in zip(result["box"], [70, 50, 130, 110])) <= 2
    cut = toolbox.images.get(result["image"])
    assert (cut[:30] == 255).all() and np.array_equal(cut[60:100, 80:120], image[60:100, 80:120])


def test_edges_trace_the_square_border(toolbox):
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[30:70, 30:70] = WHITE
    edges = toolbox.images.get(call(toolbox, "edges", image=toolbox.images.add(image))["image"])
    assert edges.shape == (100, 100, 3) and (edges[:, :, 0] == edges[:, :, 2]).all()
    rows, cols = np.nonzero(edges[:, :, 0])
    assert len(rows) >= 4 * 35 and set(np.unique(edges)) == {0, 255}
    near_border = np.minimum(np.minimum(abs(rows - 30), abs(rows - 69)), np.minimum(abs(cols - 30), abs(cols - 69)))
    assert near_border.max() <= 1 and edges[45:55, 45:55].max() == 0
    swapped = toolbox.call("edges", {"image": "img_0", "low": 200, "high": 100})
    assert not swapped.ok and "low (200) must be below high (100)" in swapped.error


def test_draw_boxes_paints_a_frame_just_inside_the_box(toolbox):
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    handle = toolbox.images.add(image)
    result = call(toolbox, "draw_boxes", image=handle, boxes=[[20, 30, 100, 90]], color="green")
    drawn = toolbox.images.get(result["image"])
    frame = np.zeros(image.shape[:2], dtype=bool)
    frame[30:90, 20:100] = True
    frame[32:88, 22:98] = False  # 2 pixels thick on a 160x120 image
    assert (drawn[frame] == COLORS["green"].rgb).all() and (drawn[~frame] == 128).all()
    labelled = call(toolbox, "draw_boxes", image=handle, boxes=[[20, 30, 100, 90]], labels=["cat"])
    assert (toolbox.images.get(labelled["image"]) != drawn).any()
    mislabelled = toolbox.call("draw_boxes", {"image": handle, "boxes": [[20, 30, 100, 90]], "labels": ["a", "b"]})
    assert not mislabelled.ok and "2 labels for 1 boxes" in mislabelled.error


def test_resize_keeps_the_aspect_ratio_when_one_side_is_given(toolbox):
    handle = toolbox.images.add(skimage.data.coffee())  # 600x400

    def shape(**size) -> tuple[int, ...]:
        return toolbox.images.get(call(toolbox, "resize", image=handle, **size)["image"]).shape

    assert shape(width=300) == (200, 300, 3)
    assert shape(height=100) == (100, 150, 3)
    assert shape(scale=1.5) == (600, 900, 3)
    assert shape(width=64, height=64) == (64, 64, 3)
    mixed = toolbox.call("resize", {"image": handle, "scale": 2, "width": 10})
    assert not mixed.ok and "not both" in mixed.error
    assert not toolbox.call("resize", {"image": handle}).ok


def test_rotate_shapes(toolbox):
    image = skimage.data.chelsea()  # 451x300
    handle = toolbox.images.add(image)
    quarter = toolbox.images.get(call(toolbox, "rotate", image=handle, angle=90)["image"])
    assert np.array_equal(quarter, np.rot90(image))
    same_canvas = toolbox.images.get(call(toolbox, "rotate", image=handle, angle=30, expand=False)["image"])
    assert same_canvas.shape == image.shape and (same_canvas[0, 0] == 0).all()
    grown = toolbox.images.get(call(toolbox, "rotate", image=handle, angle=30)["image"])
    sin, cos = math.sin(math.radians(30)), math.cos(math.radians(30))
    assert grown.shape == (math.ceil(300 * cos + 451 * sin), math.ceil(300 * sin + 451 * cos), 3)


def test_superpixels_cover_the_image(toolbox):
    image = load_sample_image("china.jpg")
    result = call(toolbox, "superpixels", image=toolbox.images.add(image), segments=30)
    assert 10 <= result["count"] == len(result["segments"]) <= 60
    assert sum(segment["area"] for segment in result["segments"]) == image.shape[0] * image.shape[1]
    for segment in result["segments"]:
        x1, y1, x2, y2 = segment["box"]
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        assert segment["area"] <= (x2 - x1) * (y2 - y1) and segment["color"] == color_name(segment["mean_rgb"])
    outlined = toolbox.images.get(result["image"])
    assert outlined.shape == image.shape and (outlined == (255, 255, 0)).all(axis=2).sum() > 1000


def test_sketch_and_styles_make_a_new_picture_of_the_same_size(toolbox):
    image = skimage.data.astronaut()
    handle = toolbox.images.add(image)
    drawn = toolbox.images.get(call(toolbox, "sketch", image=handle)["image"])
    assert drawn.shape == image.shape and (drawn[:, :, 0] == drawn[:, :, 1]).all()
    assert np.median(drawn) > 200  # mostly white paper
    for style in ("cartoon", "watercolor", "smooth", "detail"):
        styled = toolbox.images.get(call(toolbox, "stylize", image=handle, style=style)["image"])
        assert styled.shape == image.shape and np.abs(styled.astype(int) - image).mean() > 1, style


def test_a_box_outside_the_image_is_told_with_the_image_size(toolbox):
    handle = toolbox.images.add(shapes_image())
    for name in ("crop", "blur_region", "pixelate_region", "inpaint_region", "cutout", "dominant_colors"):
        observation = toolbox.call(name, {"image": handle, "box": [0, 0, 999, 10]})
        assert not observation.ok and "[0, 0, 999, 10]" in observation.error and "300x200" in observation.error
    observation = toolbox.call("draw_boxes", {"image": handle, "boxes": [[0, 0, 10, 10], [5, 5, 4, 9]]})
    assert not observation.ok and "boxes[1]" in observation.error
    for name in ("inpaint_region", "cutout"):
        observation = toolbox.call(name, {"image": handle, "box": [0, 0, 300, 200]})
        assert not observation.ok and "whole image" in observation.error


@pytest.mark.parametrize("name, arguments, complaint", [
    ("crop", {"image": "img_0"}, "'box' is a required property"),
    ("crop", {"image": "img_0", "box": [0, 0, "10", 10]}, "box/2"),
    ("find_color_regions", {"image": "img_0", "color": "chartreuse"}, "color"),
    ("dominant_colors", {"image": "img_0", "k": 9}, "k"),
    ("rotate", {"image": "img_0", "angle": 10, "fill": "white"}, "fill"),
    ("stylize", {"image": "img_0", "style": "oil"}, "style"),
])
def test_invalid_arguments_are_refused_before_the_tool_runs(toolbox, name, arguments, complaint):
    toolbox.images.add(shapes_image())
    runs = []
    toolbox.tools[name].run = lambda context, arguments: runs.append(arguments) or {}
    observation = toolbox.call(name, arguments)
    assert not observation.ok and observation.error.startswith(f"invalid arguments for {name}")
    assert complaint in observation.error and runs == []


def test_an_unknown_handle_lists_the_valid_ones(toolbox):
    toolbox.images.add(shapes_image())
    toolbox.images.add(shapes_image())
    observation = toolbox.call("edges", {"image": "img_7"})
    assert not observation.ok and "img_7" in observation.error and "img_0, img_1" in observation.error
