"""Text in the pictures we write (boxes' labels, the paragraph panel, curves' titles), so that it reads
as written: Pillow's default font at small sizes kerns a space down to a pixel or two ("There isa red
region"), so words are placed one by one with a gap of at least WORD_GAP_EM of the font size."""
from __future__ import annotations

from PIL import ImageDraw, ImageFont

FONT_SIZE = 13
WORD_GAP_EM = 0.45


def text_font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_width(text: str, font=None) -> float:
    """The width draw_text gives `text` in pixels."""
    font = font or text_font()
    words = text.split(" ")
    return sum(font.getlength(word) for word in words) + _gap(font) * (len(words) - 1)


def draw_text(pen: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill="black", font=None) -> None:
    """`text` from `xy` (its top left), each word where the previous one's width and a readable gap end."""
    font = font or text_font()
    x, y = xy
    for word in text.split(" "):
        if word:
            pen.text((x, y), word, fill=fill, font=font)
        x += font.getlength(word) + _gap(font)


def _gap(font) -> float:
    return max(font.getlength(" "), WORD_GAP_EM * getattr(font, "size", FONT_SIZE))
