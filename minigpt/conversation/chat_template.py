"""Prompts from the language model's own chat template (`model.prompt_template: auto`).

Today's instruction-tuned LMs (Llama-3, Qwen2.5, Mistral, Gemma, Phi-3, ...) ship a Jinja chat template in
their tokenizer folder; a model trained on other markers answers worse. Here the template renders the
conversation, with the image prompt (<Img><ImageHere></Img>) inside the first user turn, and the text is
cut into pieces: everything the template writes around the turns is prompt, and each answer with the
template's end-of-turn token is supervised, so the model learns to end its turn and nothing else of the
markup. For Qwen2.5, a one-turn sample:

    <|im_start|>system\\nYou are ...<|im_end|>\\n<|im_start|>user\\n<Img><ImageHere></Img> What color?<|im_end|>\\n
    <|im_start|>assistant\\n                                         prompt (no loss)
    red<|im_end|>                                                    supervised
    \\n                                                               after the end of turn (no loss)

Each piece is rendered as a prefix of the next (the template must only append as the conversation grows,
which every listed family's does), so a generation prompt is exactly the training prompt up to the answer.
"""
from __future__ import annotations

from dataclasses import dataclass

SENTINEL = "\uE000answer\uE001"  # private-use characters: never in a real answer, kept intact by templates


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot build MiniGPT prompts (none, or one that rewrites earlier turns)."""


@dataclass
class Piece:
    text: str
    supervised: bool


class ChatTemplatePrompts:
    """Prompt pieces for one tokenizer's chat template, with an optional system prompt."""

    def __init__(self, tokenizer, system_prompt: str = "", source: str = "the tokenizer"):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(f"{source} has no chat template: prompt_template 'auto' needs one "
                                    "(set model.prompt_template to a format string such as '[INST] {} [/INST]' instead)")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.end_of_turn = self._end_of_turn(source)

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _end_of_turn(self, source: str) -> str:
        """The special token the template writes right after an answer: what generation stops at and what
        training teaches the model to emit."""
        rendered = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}], False)
        after = rendered[rendered.index(SENTINEL) + len(SENTINEL):] if SENTINEL in rendered else ""
        specials = sorted({*self.tokenizer.all_special_tokens, *self.tokenizer.get_added_vocab()}, key=len, reverse=True)
        marker = next((token for token in specials if token and after.startswith(token)), None)
        if marker is None:
            raise ChatTemplateError(f"{source}: its chat template writes {after[:20]!r} after an answer, not a "
                                    "special end-of-turn token; set model.prompt_template and end_sym instead")
        return marker

    def pieces(self, pairs: list[tuple[str, str | None]]) -> list[Piece]:
        """(user text, answer or None) pairs -> prompt and supervised pieces; a last pair without an answer
        ends with the generation prompt."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        pieces: list[Piece] = []
        rendered = ""
        for user_text, answer in pairs:
            messages.append({"role": "user", "content": user_text})
            prompt = self._extended(rendered, self.render(messages, add_generation_prompt=True))
            pieces.append(Piece(prompt[len(rendered):], False))
            rendered = prompt
            if answer is None:
                continue
            messages.append({"role": "assistant", "content": answer})
            full = self._extended(rendered, self.render(messages, add_generation_prompt=False))
            added = full[len(rendered):]  # the answer as the template writes it, its end of turn, and after
            start = added.find(answer.strip()) if answer.strip() else 0
            end = added.find(self.end_of_turn, max(start, 0))
            if start < 0 or end < 0:
                raise ChatTemplateError(f"the chat template does not write the answer {answer!r} followed by "
                                        f"{self.end_of_turn!r}")
            end += len(self.end_of_turn)
            pieces += [Piece(added[:start], False), Piece(added[start:end], True), Piece(added[end:], False)]
            rendered = full
        return [piece for piece in pieces if piece.text]

    @staticmethod
    def _extended(before: str, after: str) -> str:
        if not after.startswith(before):
            raise ChatTemplateError("the chat template rewrites earlier turns as the conversation grows, so a "
                                    "prompt is not the start of its training sequence; set model.prompt_template")
        return after
