"""Text in our pictures reads as written: every gap between words is wider than any gap inside a word,
where Pillow's default font, drawn as one string, lets "is a" close up to "isa"."""
import numpy as np
from PIL import Image, ImageDraw

from minigpt.common.drawing import draw_text, text_font, text_width

SENTENCE = "There is a red region in the center. There is an orange region at the top."


def ink_runs(image: Image.Image) -> list[tuple[int, int]]:
    """(start, end) columns of each stretch of ink, left to right."""
    inked = (np.asarray(image.convert("L")) < 160).any(axis=0)
    runs, start = [], None
    for column, ink in enumerate(list(inked) + [False]):
        if ink and start is None:
            start = column
        elif not ink and start is not None:
            runs.append((start, column))
            start = None
    return runs


def gaps(draw) -> tuple[list[int], int]:
    """The blank stretches between ink: one per word gap of SENTENCE (the widest ones), narrowest first,
    and the widest of the rest (the gaps inside words)."""
    canvas = Image.new("RGB", (900, 30), "white")
    draw(ImageDraw.Draw(canvas))
    runs = ink_runs(canvas)
    widths = sorted((b[0] - a[1] for a, b in zip(runs, runs[1:])), reverse=True)
    words = SENTENCE.count(" ")
    return sorted(widths[:words]), widths[words]


def test_every_word_gap_is_twice_any_gap_inside_a_word():
    for size in (10, 13):
        font = text_font(size)
        word, inside = gaps(lambda pen: draw_text(pen, (5, 5), SENTENCE, font=font))
        assert word[0] >= 2 * inside, (size, word, inside)
        # the string drawn whole, as Pillow draws it: some word gaps no wider than a gap between letters
        word, inside = gaps(lambda pen: pen.text((5, 5), SENTENCE, fill="black", font=font))
        assert word[0] < 2 * inside, (size, word, inside)


def test_text_width_is_where_the_drawn_text_ends():
    canvas = Image.new("RGB", (900, 30), "white")
    draw_text(ImageDraw.Draw(canvas), (5, 5), SENTENCE)
    assert abs(ink_runs(canvas)[-1][1] - (5 + text_width(SENTENCE))) <= 3
