"""Image processors: every image mode a data set holds reaches the model as the same 8-bit RGB picture."""
import numpy as np
from PIL import Image

from minigpt.datasets.image_records import read_image
from minigpt.processors.image import Blip2ImageProcessor, to_rgb


def test_16_bit_grey_keeps_its_grey_levels(tmp_path):
    """convert("RGB") alone clips 16-bit levels at 255, which turns a 16-bit scan almost all white."""
    levels = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "scan.png")
    eight_bit = Image.fromarray((levels >> 8).astype(np.uint8), "L")
    image = read_image(tmp_path / "scan.png")
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(eight_bit.convert("RGB")))
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(levels.astype(np.int32), "I"))), np.asarray(image))
    processor = Blip2ImageProcessor(16)
    assert float((processor(Image.open(tmp_path / "scan.png")) - processor(eight_bit)).abs().max()) == 0.0


def test_other_modes_become_rgb():
    grey = Image.new("L", (8, 8), 128)
    for image in (grey, grey.convert("RGBA"), grey.convert("CMYK"), grey.convert("P"), grey.convert("1")):
        assert to_rgb(image).mode == "RGB" and to_rgb(image).size == (8, 8)
    assert to_rgb(grey.convert("RGBA")).getpixel((0, 0)) == (128, 128, 128)
