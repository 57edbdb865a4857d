"""lmms-eval's `minigpt` model: our model inside lmms-eval's own process, with no server in between.

    lmms-eval --model minigpt --model_args cfg_path=eval_configs/minigptv2_eval.yaml --tasks mme
    accelerate launch --num_processes 8 -m lmms_eval --model minigpt --model_args cfg_path=... --tasks ...

lmms-eval finds the model through the `lmms_eval.models` entry point (pyproject.toml), so installing
minigpt-lab next to lmms-eval is all it takes. `--model_args` (comma-separated key=value):
  cfg_path          an eval config (its model section; checkpoint and all)
  options           space-separated key=value overrides, as --options takes them ("model.ckpt=out/x.pth")
  task_identifier   auto (default): MiniGPT-v2's identifier per task, as its eval scripts write it, "[refer]"
                    for RefCOCO-style tasks and "[vqa]" for the rest; none; or one identifier for every task.
                    Only a model whose template writes identifiers (model.task_identifiers) shows them.
  choice_scoring    total (default) | mean: which loss loglikelihood returns, as minigpt eval's choice_scoring
  batch_size        questions (or options to score) per forward pass; lmms-eval's --batch_size sets it ("auto":
                    8, as no size is searched for)
  max_new_tokens    for tasks that do not say (default 256)
Generation requests go through the chat engine in left-padded batches; loglikelihood requests return the
continuation's loss, lower for a likelier answer, as lmms-eval's multiple-choice scoring (an argmin) and its
LLaVA model expect. Under `accelerate launch` each process takes the GPU of its local rank; lmms-eval splits
the documents between them.
"""
from __future__ import annotations

import shlex

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from tqdm import tqdm

from minigpt.common.errors import InputError
from minigpt.common.schema import CHOICE_SCORINGS
from minigpt.config.loader import load_config
from minigpt.inference.chat import GenerationOptions
from minigpt.inference.loading import Placement, load_model
from minigpt.serving.harness_requests import HarnessModel, HarnessQuestion

GROUNDING_TASKS = ("refcoco", "refcocog", "refcoco+")  # lmms-eval task names asked with "[refer]"


def manifest() -> ModelManifest:
    """What the entry point gives lmms-eval's model registry."""
    return ModelManifest(model_id="minigpt", simple_class_path=f"{__name__}.MiniGPTLmms")


def task_identifier_for(task: str, setting: str) -> str | None:
    """The MiniGPT-v2 task identifier a question of lmms-eval task `task` is asked with."""
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    return "refer" if task.lower().startswith(GROUNDING_TASKS) else "vqa"


def generation_options(gen_kwargs: dict, max_new_tokens: int) -> GenerationOptions:
    """lmms-eval's generation_kwargs (until, max_new_tokens, temperature, do_sample, top_p, num_beams,
    repetition_penalty) as the chat engine's options; temperature 0 is greedy."""
    until = gen_kwargs.get("until") or []
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    return GenerationOptions(
        max_new_tokens=int(gen_kwargs.get("max_new_tokens", max_new_tokens)),
        num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
        temperature=temperature or 1.0, do_sample=bool(gen_kwargs.get("do_sample", False)) and temperature > 0,
        top_p=float(gen_kwargs.get("top_p") or 1.0), top_k=0,
        repetition_penalty=float(gen_kwargs.get("repetition_penalty", 1.0)),
        stop=tuple([until] if isinstance(until, str) else until))


class MiniGPTLmms(lmms):
    """lmms-eval's model interface over a MiniGPT config's model (see the module's docstring)."""

    def __init__(self, cfg_path: str, options: str = "", task_identifier: str = "auto", choice_scoring: str = "total",
                 batch_size: int | str = 8, max_new_tokens: int = 256, device: str | None = None, **unused) -> None:
        super().__init__()
        if choice_scoring not in ("total", "mean"):
            raise InputError(f"model_args choice_scoring={choice_scoring}: lmms-eval scores one option at a time, so "
                             f"only total or mean apply (of {', '.join(CHOICE_SCORINGS)})")
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if self._world_size > 1:
            self._device = self.accelerator.device
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = load_config(cfg_path, shlex.split(str(options)), for_training=False)
        loaded = load_model(config, Placement(self._device))
        batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.harness = HarnessModel(loaded.model, loaded.image_processor, batch_size)
        self.task_identifier, self.choice_scoring = str(task_identifier), choice_scoring
        self.max_new_tokens = int(max_new_tokens)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.harness.batch_size

    def _question(self, context: str, doc_to_visual, doc_id: int, task: str, split: str) -> HarnessQuestion:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        images = [visual for visual in (visuals or []) if visual is not None]
        return HarnessQuestion(context, images, task_identifier_for(task, self.task_identifier), (task, split, doc_id))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers, batched per task and generation settings."""
        answers: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            context, gen_kwargs, _, _, task, _ = request.args
            groups.setdefault(repr((task, sorted(gen_kwargs.items()))), []).append(index)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="minigpt answers")
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            questions = [self._question(requests[i].args[0], *requests[i].args[2:]) for i in indices]
            for index, answer in zip(indices, self.harness.answer(questions, generation_options(gen_kwargs, self.max_new_tokens))):
                answers[index] = answer
            progress.update(len(indices))
        progress.close()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(loss of the continuation as the answer, whether greedy decoding writes it) per request."""
        questions, continuations = [], []
        for request in requests:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            if not isinstance(continuation, str):  # a task whose target is a function of its document
                continuation = continuation(self.task_dict[task][split][doc_id])
            questions.append(self._question(context, doc_to_visual, doc_id, task, split))
            continuations.append(continuation)
        scores = self.harness.score(questions, continuations)
        return [(score.total_loss if self.choice_scoring == "total" else score.mean_loss, score.greedy)
                for score in scores]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("minigpt answers single-round tasks (generate_until and loglikelihood)")
