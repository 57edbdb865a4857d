"""Image and text processors, registered by the names MiniGPT-4 configs use."""
from minigpt.processors.image import Blip2ImageProcessor  # noqa: F401
from minigpt.processors.text import BlipCaptionProcessor  # noqa: F401
