"""Prompt templates: how a conversation's turns become text around the image placeholder.

Samples are template-free (a list of user / assistant turns). A template wraps each user turn with
`prompt_template` and ends each answer with `end_sym`, which is exactly what MiniGPT-4 trained on:

  Vicuna v0:  <s>###Human: <Img><ImageHere></Img> What color is it? ###Assistant: red###
  Llama-2:    <s>[INST] <Img><ImageHere></Img> What color is it? [/INST] red</s>
  v2:         <s>[INST] <Img><ImageHere></Img> [vqa] What color is it?  [/INST]red</s>
  stage 1:    <s><ImageHere>a red circle on the left\n        (no template: image, then caption)

MiniGPT-v2's datasets end every user turn of an image sample with a space (`instruction_suffix: " "`,
hence the two spaces before [/INST]); a released v2 checkpoint was trained on that form. The answer is
tokenized on its own (so it starts with a word-start token). Generation prompts may instead follow the
original demos' style (`chat_prompt`, conversation/chat_styles.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from minigpt.common.paths import resolve_path
from minigpt.conversation.chat_styles import ChatStyle, chat_style_for
from minigpt.conversation.chat_template import ChatTemplatePrompts

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_PROMPT = "<Img><ImageHere></Img>"
IMAGE_MARKERS = (IMAGE_PLACEHOLDER, "<Img>", "</Img>")  # only a template or an instruction prompt writes these
USER, ASSISTANT = "user", "assistant"
AUTO = "auto"  # prompt_template: the language model's own chat template (conversation/chat_template.py)


class ConversationError(ValueError):
    """A sample's turns cannot form a training sequence (out of order, no answer, misplaced image)."""


@dataclass
class PromptTemplate:
    prompt_template: str = ""  # "" = no wrapping (stage-1 captioning)
    end_sym: str = "\n"
    instruction_prompts: list[str] = field(default_factory=list)  # used when a sample has no user turn
    task_identifiers: bool = False  # MiniGPT-v2: a sample's task is written as "[vqa] question"
    instruction_suffix: str = ""  # appended to each user turn of an image sample before wrapping (v2: " ")
    chat_style: ChatStyle | None = None  # generation prompts in an original demo's style; None: this template
    chat_template: ChatTemplatePrompts | None = None  # prompt_template "auto": the LM's own chat template

    @classmethod
    def from_model_config(cls, model_config, tokenizer=None) -> "PromptTemplate":
        """The config's template; `prompt_template: auto` takes the tokenizer's chat template, whose
        end-of-turn token becomes end_sym."""
        prompts: list[str] = []
        if model_config.prompt_path:
            lines = resolve_path(model_config.prompt_path).read_text().splitlines()
            prompts = [line.strip() for line in lines if IMAGE_PLACEHOLDER in line]
        if model_config.prompt_template == AUTO:
            chat_template = ChatTemplatePrompts(tokenizer, model_config.get("system_prompt", ""),
                                                f"tokenizer {model_config.tokenizer or model_config.llama_model}")
            return cls("", chat_template.end_of_turn, prompts, model_config.task_identifiers,
                       model_config.get("instruction_suffix", ""), None, chat_template)
        return cls(model_config.prompt_template, model_config.end_sym, prompts, model_config.task_identifiers,
                   model_config.get("instruction_suffix", ""), chat_style_for(model_config))

    def wrap_user(self, text: str, has_image: bool = False) -> str:
        """A user turn as the template writes it; the suffix goes only into samples with an image, as in
        v2's data, and never after a bare image (stage-1 captioning has no instruction to end)."""
        if has_image and text != IMAGE_PLACEHOLDER:
            text += self.instruction_suffix
        return self.prompt_template.format(text) if self.prompt_template else text

    def pairs(self, turns: list[tuple[str, str]], has_image: bool, sample_id: str = "",
              task: str | None = None, choice_seed: str = "",
              image_turns: list[int] | None = None) -> list[tuple[str, str | None]]:
        """Group turns into (user text, answer or None) pairs, with the image placeholder in the first user turn
        (or, with `image_turns`, one image prompt per image before the text of the user turn it came with, as
        the original chat adds one for each image uploaded).

        A caption sample (a lone assistant turn) gets one of `instruction_prompts`, drawn from the sample id
        and `choice_seed` (the data set's seed and pass: reproducible, yet new each pass), or with none the
        bare image (stage 1).
        """
        turns = list(turns)
        refuse_image_markers(turns, sample_id)
        if len(turns) == 1 and turns[0][0] == ASSISTANT:
            rng = random.Random(f"{choice_seed}-{sample_id}")
            prompt = rng.choice(self.instruction_prompts) if self.instruction_prompts else ""
            turns.insert(0, (USER, prompt))
        pairs: list[tuple[str, str | None]] = []
        for role, text in turns:
            if role == USER:
                pairs.append((text, None))
            elif role == ASSISTANT and pairs and pairs[-1][1] is None:
                pairs[-1] = (pairs[-1][0], text)
            else:
                raise ConversationError(f"sample {sample_id!r}: turns must alternate user/assistant, got {role!r}")
        if not pairs:
            raise ConversationError(f"sample {sample_id!r}: no turns")
        if task and self.task_identifiers:
            pairs[0] = (f"[{task}] {pairs[0][0]}", pairs[0][1])
        placed = ([0] if has_image else []) if image_turns is None else list(image_turns)
        for index in sorted(set(placed)):
            if not 0 <= index < len(pairs):
                raise ConversationError(f"sample {sample_id!r}: an image of user turn {index}, which it does not have")
            if IMAGE_PLACEHOLDER not in pairs[index][0]:
                pairs[index] = (self._with_images(pairs[index][0], placed.count(index)), pairs[index][1])
        return pairs

    def _with_images(self, user_text: str, count: int) -> str:
        """A user turn's text after its images' prompts; a lone image with no text and no template is the bare
        placeholder (stage-1 captioning)."""
        if count == 1 and not user_text and not (self.prompt_template or self.chat_template):
            return IMAGE_PLACEHOLDER
        return " ".join([IMAGE_PROMPT] * count + [user_text]).rstrip()


def refuse_image_markers(turns: list[tuple[str, str]], sample_id: str) -> None:
    """A record's own text never places image slots: a literal <ImageHere> in a question would take
    embeddings of an image it does not have, and in an answer it would be trained on as placeholder tokens."""
    for index, (role, text) in enumerate(turns):
        marker = next((marker for marker in IMAGE_MARKERS if marker in str(text)), None)
        if marker is not None:
            raise ConversationError(f"sample {sample_id!r}: turn {index} ({role}) holds the literal text {marker!r}, "
                                    "which marks the image in prompts; a record's text cannot place it")


def cut_at_markers(text: str, markers: list[str]) -> str:
    """`text` up to the earliest of the (non-empty) markers: the end marker, or a request's stop strings."""
    ends = [text.find(marker) for marker in markers if marker and marker in text]
    return text[:min(ends)] if ends else text
