"""The training recipe, learning-rate schedules (registered by the names configs use), the DDP / DeepSpeed
engines, and the evaluation recipe, with the evaluation tasks of the floors below it registered (the
paragraph gallery's), so that the recipe finds each by name."""
from minigpt.paragraph import evaluation  # noqa: F401
from minigpt.runners import lr_schedulers  # noqa: F401
