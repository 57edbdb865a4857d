"""Turn template-free samples into model inputs: template, image slots, tokens, labels, padding.

This is the one place that knows about prompt templates and label masking, for training and for
generation alike, so the two can never disagree about what a prompt looks like.

A sample is a dict: {"id", "dataset", "image": tensor [3, H, W] or None, "turns": [(role, text), ...],
"task": "vqa" | "refer" | ... | None}; or {"id", "dataset", "skip": (reason, detail)} for one the dataset
could not read.
A batch holds:
  input_ids      [B, T]  token ids; image slots hold the pad id (their embeddings are replaced)
  image_slots    [B, T]  True where an image embedding goes (num_image_tokens per image sample)
  attention_mask [B, T]
  labels         [B, T]  the token id on answer positions, -100 on prompt, image and padding
  images         [N, 3, H, W] for the N samples that have an image, in batch order

Packed (`packing=True`, `run.packing: true`), several samples share a row: they are placed first-fit by
decreasing length into rows of `packing_length` tokens (at least the longest sample's; by default just
that), and `position_ids` [R, L] restart at 0 where
each sample begins. transformers reads such position ids, given no attention mask and no cache, as packed
sequences: SDPA attends within each sample only (a block-diagonal causal mask) and flash-attention 2 runs
its variable-length kernel. Each sample sees what it sees padded, so the loss over the batch's labelled
tokens is the padded batch's (tests/test_packing.py), from fewer, fuller rows. Images stay one per image
sample, in the order their slots appear row by row, which is the order the model fills them in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from minigpt.conversation.template import IMAGE_PLACEHOLDER, ConversationError, PromptTemplate

IGNORE_INDEX = -100


class UnsupervisedSampleError(ConversationError):
    """A sample kept no answer token (an empty answer, or max_txt_len 0)."""

    reason = "no answer token fits"


class PromptTooLongError(UnsupervisedSampleError):
    """A sample's prompt does not fit in max_context_len with its whole image."""

    reason = "prompt over max_context_len"


@dataclass
class EncodedSample:
    sample_id: str
    input_ids: list[int]
    labels: list[int]
    image_slots: list[bool]
    truncated: bool


def sample_images(sample: dict) -> list:
    """A sample's images in the order their slots come: `images` where a conversation has several (each
    user turn's, as `image_turns` places them; generation only), else its one `image`, or none."""
    if sample.get("images"):
        return list(sample["images"])
    return [] if sample.get("image") is None else [sample["image"]]


def collator_for(model, max_txt_len: int | None = None, strict: bool = False, packing: bool = False,
                 packing_length: int | None = None) -> "ConversationCollator":
    """The collator of a built model (anything with `tokenizer`, `template`, `num_image_tokens` and
    `max_context_len`)."""
    return ConversationCollator(model.tokenizer, model.template, model.num_image_tokens, max_txt_len, strict,
                                getattr(model, "max_context_len", None), packing, packing_length)


def special_token_texts(tokenizer) -> set[str]:
    """The tokenizer's special tokens (BOS, EOS, its chat markup): each is one id wherever it is written.

    Only tokens flagged special count. transformers lists a sentencepiece model's user-defined symbols
    ("red", "12") among `all_special_tokens` too, but they are ordinary pieces: cutting the text at them
    would start the next piece with a word-start token that the whole text does not have."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    named = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token)
    return {token for token in (*named, *(t.content for t in added.values() if t.special)) if token}


def first_fit_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sample indices per packed row: the longest sample first, each into the first row with room."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if lengths[index] <= free), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


class ConversationCollator:
    """Prompts for one model: its tokenizer, its template and how many image-slot tokens an image takes.

    A training sequence is, as MiniGPT-4 builds it, a prompt (BOS, the first user turn, the image) and a
    target side (the answers, and later user turns each after a BOS). `max_txt_len` bounds the target
    side and `max_context_len` the prompt (None: no bound); generation and scoring prompts are never cut.
    """

    def __init__(self, tokenizer, template: PromptTemplate, num_image_tokens: int, max_txt_len: int | None = None,
                 strict: bool = False, max_context_len: int | None = None, packing: bool = False,
                 packing_length: int | None = None):
        self.tokenizer = tokenizer
        self.packing, self.packing_length = packing, packing_length  # see the module docstring
        self.template = template
        self.num_image_tokens = num_image_tokens
        self.max_txt_len = max_txt_len
        self.max_context_len = max_context_len
        self.strict = strict
        self.pad_id = tokenizer.pad_token_id
        # Text is cut at these and each piece tokenized on its own, as the original's slow tokenizer did:
        # a literal "<s>" is BOS, and the text after it starts with a word-start token ("▁[INST]"). A chat
        # template's markup tokens ([INST], <start_of_turn>, ...) cut it too, as an exported tokenizer
        # with `legacy: true` cuts it (ops/hf_export.py), so that both give the same ids.
        self._special_tokens = special_token_texts(tokenizer)
        specials = sorted({IMAGE_PLACEHOLDER, *self._special_tokens}, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in specials if t) + ")")

    def _tokenize(self, text: str) -> tuple[list[int], list[bool]]:
        """Text with optional <ImageHere>, <s> and </s> markers -> ids and a mask of image slots."""
        ids: list[int] = []
        slots: list[bool] = []
        for piece in self._special_pattern.split(text):
            if piece == IMAGE_PLACEHOLDER:
                piece_ids = [self.pad_id] * self.num_image_tokens
            elif piece in self._special_tokens:
                piece_ids = [self.tokenizer.convert_tokens_to_ids(piece)]
            else:
                piece_ids = self.tokenizer(piece, add_special_tokens=False).input_ids if piece else []
            ids += piece_ids
            slots += [piece == IMAGE_PLACEHOLDER] * len(piece_ids)
        return ids, slots

    def answer_tokens(self, answer: str) -> list[int]:
        """An answer and the end marker, tokenized on their own (as MiniGPT-4 tokenizes its targets)."""
        return self._tokenize(answer + self.template.end_sym)[0]

    def _user_turn(self, text: str, has_image: bool) -> tuple[list[int], list[bool]]:
        """BOS and a user turn in the training template (MiniGPT-4 starts every user turn with BOS)."""
        ids, slots = self._tokenize(self.template.wrap_user(text, has_image))
        return [self.tokenizer.bos_token_id] + ids, [False] + slots

    def encode(self, sample: dict, for_generation: bool = False) -> EncodedSample:
        """One sample -> token lists: the prompt, then answers (supervised) and later user turns. For
        generation the last user turn has no answer yet, and the template's chat style, if any, writes
        the prompt instead."""
        has_image = sample.get("image") is not None
        pairs = self.template.pairs(sample["turns"], has_image, str(sample["id"]), sample.get("task"),
                                    sample.get("choice_seed", ""), sample.get("image_turns"))
        if self.template.chat_template is not None:
            return self._encode_from_chat_template(sample, pairs, has_image, for_generation)
        if for_generation and self.template.chat_style is not None:
            ids, slots = self._tokenize(self.template.chat_style.render(pairs))
            ids, slots = [self.tokenizer.bos_token_id] + ids, [False] + slots
            encoded = EncodedSample(str(sample["id"]), ids, [IGNORE_INDEX] * len(ids), slots, False)
            return self._checked(sample, self._with_answer_prefix(encoded, sample), has_image, True)
        ids, slots = self._user_turn(pairs[0][0], has_image)
        target_ids: list[int] = []
        target_labels: list[int] = []
        target_slots: list[bool] = []  # (a later turn's image, in a conversation with several)
        for index, (user_text, answer) in enumerate(pairs):
            if index > 0:
                user_ids, user_slots = self._user_turn(user_text, has_image)
                target_ids += user_ids
                target_labels += [IGNORE_INDEX] * len(user_ids)
                target_slots += user_slots
            if answer is None:
                if not for_generation:
                    raise ConversationError(f"sample {sample['id']!r}: a user turn has no answer")
                continue
            answer_ids = self.answer_tokens(answer)
            target_ids += answer_ids
            target_labels += answer_ids
            target_slots += [False] * len(answer_ids)
        encoded = EncodedSample(str(sample["id"]), ids + target_ids, [IGNORE_INDEX] * len(ids) + target_labels,
                                slots + target_slots, False)
        if not for_generation:
            encoded = self._truncated(encoded, len(ids))
        else:
            encoded = self._with_answer_prefix(encoded, sample)
        return self._checked(sample, encoded, has_image, for_generation)

    def _encode_from_chat_template(self, sample: dict, pairs: list[tuple[str, str | None]], has_image: bool,
                                   for_generation: bool) -> EncodedSample:
        """The LM's own chat template writes the text (conversation/chat_template.py): its first piece
        (BOS, system prompt, first user turn, generation prompt) is the prompt, answers with their end of
        turn are supervised, the template's markup around later turns is not."""
        if not for_generation and pairs[-1][1] is None:
            raise ConversationError(f"sample {sample['id']!r}: a user turn has no answer")
        ids: list[int] = []
        labels: list[int] = []
        slots: list[bool] = []
        prompt_length = None
        for piece in self.template.chat_template.pieces(pairs):
            piece_ids, piece_slots = self._tokenize(piece.text)
            prompt_length = len(piece_ids) if prompt_length is None else prompt_length
            ids += piece_ids
            labels += piece_ids if piece.supervised else [IGNORE_INDEX] * len(piece_ids)
            slots += piece_slots
        encoded = EncodedSample(str(sample["id"]), ids, labels, slots, False)
        if for_generation:
            encoded = self._with_answer_prefix(encoded, sample)
        else:
            encoded = self._truncated(encoded, prompt_length)
        return self._checked(sample, encoded, has_image, for_generation)

    def _with_answer_prefix(self, encoded: EncodedSample, sample: dict) -> EncodedSample:
        """A generation prompt followed by the start of the answer it must continue (sample["answer_prefix"],
        tokenized on its own as answers are): how a tool call can be forced."""
        prefix_ids = self._tokenize(sample["answer_prefix"])[0] if sample.get("answer_prefix") else []
        return EncodedSample(encoded.sample_id, encoded.input_ids + prefix_ids,
                             encoded.labels + [IGNORE_INDEX] * len(prefix_ids),
                             encoded.image_slots + [False] * len(prefix_ids), encoded.truncated)

    def _truncated(self, encoded: EncodedSample, prompt_length: int) -> EncodedSample:
        """The original's bounds: the prompt (less its BOS) to max_context_len, the rest to max_txt_len."""
        prompt_keep = prompt_length if self.max_context_len is None else min(prompt_length, 1 + self.max_context_len)
        target_keep = len(encoded.input_ids) - prompt_length
        if self.max_txt_len is not None:
            target_keep = min(target_keep, self.max_txt_len)
        if prompt_keep == prompt_length and target_keep == len(encoded.input_ids) - prompt_length:
            return encoded
        kept = list(range(prompt_keep)) + list(range(prompt_length, prompt_length + target_keep))
        return EncodedSample(encoded.sample_id, [encoded.input_ids[i] for i in kept], [encoded.labels[i] for i in kept],
                             [encoded.image_slots[i] for i in kept], True)

    def _checked(self, sample: dict, encoded: EncodedSample, has_image: bool, for_generation: bool) -> EncodedSample:
        """Refuse what cannot be trained on or answered: no answer token kept, or image slots not whole."""
        if not for_generation and all(label == IGNORE_INDEX for label in encoded.labels):
            raise UnsupervisedSampleError(
                f"sample {sample['id']!r} from {sample.get('dataset', '?')}: no answer token is kept (the answer is "
                f"empty, or max_txt_len={self.max_txt_len} leaves none)")
        images = len(sample_images(sample))
        if has_image and sum(encoded.image_slots) != self.num_image_tokens * images:
            if encoded.truncated:
                raise PromptTooLongError(
                    f"sample {sample['id']!r} from {sample.get('dataset', '?')}: its prompt is longer than "
                    f"max_context_len={self.max_context_len} tokens ({self.num_image_tokens} image tokens included)")
            raise ConversationError(f"sample {sample['id']!r}: expected {images} image placeholder(s), "
                                    f"found {sum(encoded.image_slots) // max(self.num_image_tokens, 1)}")
        return encoded

    def __call__(self, samples: list[dict]) -> dict:
        """Training batch, right-padded. Samples the dataset could not read, and samples that cannot be
        trained on (no answer token fits, turns out of order), are left out and listed in
        `batch["skipped"]` as {"dataset", "id", "reason", "detail"}; in strict mode they raise."""
        encoded, kept, skipped = [], [], []
        for sample in samples:
            if "skip" in sample:  # the dataset could not read it (e.g. a missing or corrupt image)
                reason, detail = sample["skip"]
                skipped.append({"dataset": sample["dataset"], "id": str(sample["id"]), "reason": reason, "detail": detail})
                continue
            try:
                encoded.append(self.encode(sample))
                kept.append(sample)
            except ConversationError as error:
                if self.strict:
                    raise
                reason = getattr(error, "reason", "invalid conversation")
                skipped.append({"dataset": sample.get("dataset", ""), "id": str(sample["id"]), "reason": reason,
                                "detail": str(error)})
        images = [s.get("image") for s in kept]
        batch = self.pack(encoded, images) if self.packing and encoded else self.pad(encoded, images, "right")
        batch["datasets"] = [s.get("dataset", "") for s in kept]
        batch["skipped"] = skipped
        batch["truncated"] = [e.truncated for e in encoded]
        return batch

    def placeholder_batch(self) -> dict:
        """A one-token text batch for a micro-step whose samples were all skipped: run through the model
        with its loss x 0, it keeps DDP ranks in step without training on anything."""
        token = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.pad_id  # (Qwen: no BOS)
        sample = EncodedSample("placeholder", [token] * 2, [IGNORE_INDEX, token],
                               [False, False], False)
        return {**self.pad([sample], [], padding_side="right"), "datasets": [], "skipped": [], "truncated": []}

    def generation_batch(self, samples: list[dict]) -> dict:
        """Prompts for generation, left-padded so that every prompt ends at the last position. A sample
        with a `completion_prompt` is that text as it stands (completion_prompt), not a conversation."""
        encoded = [self.completion_prompt(sample) if "completion_prompt" in sample
                   else self.encode(sample, for_generation=True) for sample in samples]
        return self.pad(encoded, [image for sample in samples for image in sample_images(sample)], padding_side="left")

    def completion_prompt(self, sample: dict) -> EncodedSample:
        """A text-only prompt to continue (an API's /v1/completions): BOS where the tokenizer has one, then
        the text, no template; it holds no image."""
        text = sample["completion_prompt"]
        if IMAGE_PLACEHOLDER in text or sample.get("image") is not None:
            raise ConversationError(f"sample {sample['id']!r}: a completion prompt is text only ({IMAGE_PLACEHOLDER} "
                                    "slots are for conversations with an image)")
        ids, slots = self._tokenize(text)
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        return EncodedSample(str(sample["id"]), bos + ids, [IGNORE_INDEX] * (len(bos) + len(ids)),
                             [False] * len(bos) + slots, False)

    def scoring_batch(self, samples: list[dict], candidates: list[list[str]]) -> dict:
        """A row per candidate answer of each sample: the sample's prompt (as for generation: its turns end
        with a question; never truncated) followed by the candidate, right-padded, with labels on the
        candidate alone, so the model's loss says how likely it finds it (multiple-choice evaluation).
        Each image is in the batch once; `image_index` names the image of each row that has one."""
        encoded, images, image_index = [], [], []
        for sample, answers in zip(samples, candidates):
            prompt = self.encode(sample, for_generation=True)
            if sample.get("image") is not None:
                image_index += [len(images)] * len(answers)
                images.append(sample["image"])
            for answer in answers:
                answer_ids = self.answer_tokens(answer)
                encoded.append(EncodedSample(prompt.sample_id, prompt.input_ids + answer_ids,
                                             [IGNORE_INDEX] * len(prompt.input_ids) + answer_ids,
                                             prompt.image_slots + [False] * len(answer_ids), False))
        batch = self.pad(encoded, images, padding_side="right")
        batch["image_index"] = torch.tensor(image_index, dtype=torch.long) if images else None
        return batch

    def pad(self, encoded: list[EncodedSample], images: list, padding_side: str) -> dict:
        length = max((len(e.input_ids) for e in encoded), default=0)
        batch_size = len(encoded)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        image_slots = torch.zeros((batch_size, length), dtype=torch.bool)
        for row, sample in enumerate(encoded):
            n = len(sample.input_ids)
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[row, span] = torch.tensor(sample.input_ids, dtype=torch.long)
            labels[row, span] = torch.tensor(sample.labels, dtype=torch.long)
            attention_mask[row, span] = 1
            image_slots[row, span] = torch.tensor(sample.image_slots, dtype=torch.bool)
        present = [image for image in images if image is not None]
        return {
            "ids": [e.sample_id for e in encoded],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "image_slots": image_slots,
            "images": torch.stack(present) if present else None,
        }

    def pack(self, encoded: list[EncodedSample], images: list) -> dict:
        """A packed training batch (see the module docstring); -> what pad() gives plus position_ids."""
        capacity = max(max(len(e.input_ids) for e in encoded), self.packing_length or 0)
        rows = first_fit_rows([len(e.input_ids) for e in encoded], capacity)
        input_ids = torch.full((len(rows), capacity), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), capacity), IGNORE_INDEX, dtype=torch.long)
        image_slots = torch.zeros((len(rows), capacity), dtype=torch.bool)
        position_ids = torch.arange(capacity).repeat(len(rows), 1)  # a row's trailing padding: a run of its own
        row_images = []
        for row, members in enumerate(rows):
            start = 0
            for index in members:
                sample, span = encoded[index], slice(start, start + len(encoded[index].input_ids))
                input_ids[row, span] = torch.tensor(sample.input_ids, dtype=torch.long)
                labels[row, span] = torch.tensor(sample.labels, dtype=torch.long)
                image_slots[row, span] = torch.tensor(sample.image_slots, dtype=torch.bool)
                position_ids[row, span] = torch.arange(len(sample.input_ids))
                start = span.stop
                if images[index] is not None:
                    row_images.append(images[index])
        return {"ids": [e.sample_id for e in encoded], "input_ids": input_ids, "labels": labels,
                "attention_mask": torch.ones_like(input_ids),  # unused when packed: position_ids mark the samples
                "position_ids": position_ids, "image_slots": image_slots,
                "images": torch.stack(row_images) if row_images else None}
