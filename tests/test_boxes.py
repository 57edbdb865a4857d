"""Box tokens: pixel boxes to text and back, tolerant of malformed model output."""
import random

import pytest
from PIL import Image

from minigpt.conversation.boxes import box_iou, box_tokens, draw_boxes, parse_boxes


def test_box_tokens_round_trip_exactly():
    rng = random.Random(0)
    for _ in range(500):
        width, height = rng.randint(20, 2000), rng.randint(20, 2000)
        x1, y1 = rng.uniform(0, width), rng.uniform(0, height)
        tokens = box_tokens(x1, y1, rng.uniform(x1, width), rng.uniform(y1, height), width, height)
        parsed = parse_boxes(tokens, width, height)
        assert not parsed.problems and len(parsed.boxes) == 1
        assert box_tokens(*parsed.boxes[0].box, width, height) == tokens


def test_known_box_and_its_pixels():
    assert box_tokens(64, 50, 320, 400, 640, 480) == "{<10><10><50><83>}"
    parsed = parse_boxes("{<10><10><50><83>}", 640, 480)
    assert parsed.boxes[0].box == pytest.approx((67.2, 50.4, 323.2, 400.8))


def test_several_objects_with_phrases_and_delimiters():
    text = ("There is <p>a red square</p> {<12><40><55><98>}<delim>{<60><5><80><25>} next to "
            "<p>a circle</p>{<1><2><30><33>}.")
    parsed = parse_boxes(text, 100, 100)
    assert [b.label for b in parsed.boxes] == ["a red square", "a red square", "a circle"]
    assert [round(b.box[0]) for b in parsed.boxes] == [12, 60, 2] and not parsed.problems


@pytest.mark.parametrize("garbage, problem", [
    ("{<12><40><55>}", "not a box"),
    ("{<12><40><55><98>", "unbalanced braces"),
    ("{<12><40><155><98>}", "impossible box"),
    ("{<50><40><10><98>}", "impossible box"),
    ("{<a><b><c><d>}", "not a box"),
    ("{<1><2><3><4><5>}", "not a box"),
])
def test_malformed_output_is_reported_not_raised(garbage, problem):
    parsed = parse_boxes(f"<p>thing</p> {garbage} and <p>ok</p> {{<1><2><3><4>}}", 100, 100)
    assert [b.label for b in parsed.boxes] == ["ok"]
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith(problem)


def test_plain_text_has_no_boxes():
    assert parse_boxes("a red square on the left", 10, 10).boxes == []


def test_iou_and_drawing():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    image = Image.new("RGB", (100, 100), "white")
    drawn = draw_boxes(image, parse_boxes("<p>red</p>{<10><10><50><50>}", 100, 100).boxes)
    assert drawn.getpixel((10, 30)) != (255, 255, 255) and drawn.getpixel((80, 80)) == (255, 255, 255)
    assert image.getpixel((10, 30)) == (255, 255, 255)  # the original is untouched


def test_demo_saves_a_copy_with_the_answer_boxes_drawn(tmp_path):
    from types import SimpleNamespace

    from minigpt.serving import terminal_chat as demo

    chat = SimpleNamespace(raw_image=Image.new("RGB", (200, 100), "white"))
    answer = "<p>the red square</p> {<10><20><50><80>} and {<1><2><3>}"
    path = demo.save_boxes(chat, answer, str(tmp_path / "drawn"))
    drawn = Image.open(path)
    assert drawn.size == (200, 100) and drawn.getpixel((21, 50)) != (255, 255, 255)
    assert demo.boxes_of(answer, (200, 100)) == {"boxes": [{"label": "the red square", "box": [21.0, 20.5, 101.0, 80.5]}],
                                                 "box_problems": ["not a box: {<1><2><3>}"]}
    assert demo.save_boxes(chat, "no boxes here", str(tmp_path / "drawn")) is None
