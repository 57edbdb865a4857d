"""Registered dataset builders. Importing this package registers them all."""
from minigpt.datasets.builders import caption_builders  # noqa: F401
