"""`python -m minigpt <command> ...`, the same as the `minigpt` command (torchrun -m minigpt train ...)."""
from minigpt.cli.main import entry_point

entry_point()
