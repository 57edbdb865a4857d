"""The training recipe (registered by the names configs use), learning-rate schedules, the DDP / DeepSpeed
engines, and the evaluation recipe."""
from minigpt.runners import lr_schedulers, train_recipe  # noqa: F401
