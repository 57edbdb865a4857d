"""The training recipe and learning-rate schedules, registered by the names configs use."""
from minigpt.runners import lr_schedulers, train_recipe  # noqa: F401
