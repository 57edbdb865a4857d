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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.conversation.template import IMAGE_PLACEHOLDER, ConversationError, PromptTemplate

IGNORE_INDEX = -100


class UnsupervisedSampleError(ConversationError):
    """A sample kept no answer token (over-long prompt, or a template/tokenizer mismatch)."""


@dataclass
class EncodedSample:
    sample_id: str
    input_ids: list[int]
    labels: list[int]
    image_slots: list[bool]
    truncated: bool


def collator_for(model, max_txt_len: int | None = None, strict: bool = False) -> "ConversationCollator":
    """The collator of a built model (anything with `tokenizer`, `template` and `num_image_tokens`)."""
    return ConversationCollator(model.tokenizer, model.template, model.num_image_tokens, max_txt_len, strict)


class ConversationCollator:
    """Prompts for one model: its tokenizer, its template and how many image-slot tokens an image takes.
    `max_txt_len` bounds training sequences (None: no bound); generation and scoring prompts are never cut."""

    def __init__(self, tokenizer, template: PromptTemplate, num_image_tokens: int, max_txt_len: int | None = None,
                 strict: bool = False):
        self.tokenizer = tokenizer
        self.template = template
        self.num_image_tokens = num_image_tokens
        self.max_txt_len = max_txt_len
        self.strict = strict
        self.pad_id = tokenizer.pad_token_id

    def _tokenize(self, text: str) -> tuple[list[int], list[bool]]:
        """Text with optional <ImageHere> markers -> ids and a mask of image slots."""
        ids: list[int] = []
        slots: list[bool] = []
        for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if index > 0:
                ids += [self.pad_id] * self.num_image_tokens
                slots += [True] * self.num_image_tokens
            if piece:
                piece_ids = self.tokenizer(piece, add_special_tokens=False).input_ids
                ids += piece_ids
                slots += [False] * len(piece_ids)
        return ids, slots

    def encode(self, sample: dict, for_generation: bool = False) -> EncodedSample:
        """One sample -> token lists. Every user turn starts with BOS (as MiniGPT-4 trained).

        Training keeps whole turns while they fit in max_txt_len (image tokens included); only the
        first answer may be cut mid-way. For generation the last user turn has no answer yet.
        """
        has_image = sample.get("image") is not None
        pairs = self.template.pairs(sample["turns"], has_image, str(sample["id"]), sample.get("task"),
                                    sample.get("choice_seed", ""))
        ids: list[int] = []
        labels: list[int] = []
        slots: list[bool] = []
        truncated = False
        for index, (user_text, answer) in enumerate(pairs):
            user_ids, user_slots = self._tokenize(self.template.wrap_user(user_text))
            user_ids = [self.tokenizer.bos_token_id] + user_ids
            user_slots = [False] + user_slots
            answer_ids = [] if answer is None else self._tokenize(answer + self.template.end_sym)[0]
            room = (self.max_txt_len if self.max_txt_len is not None else float("inf")) - len(ids)
            if not for_generation and len(user_ids) + len(answer_ids) > room:
                truncated = True
                if index > 0 or len(user_ids) >= room:
                    break
                answer_ids = answer_ids[: room - len(user_ids)]
            ids += user_ids + answer_ids
            slots += user_slots + [False] * len(answer_ids)
            labels += [IGNORE_INDEX] * len(user_ids) + answer_ids
            if answer is None and not for_generation:
                raise ConversationError(f"sample {sample['id']!r}: a user turn has no answer")
        if not for_generation and all(label == IGNORE_INDEX for label in labels):
            raise UnsupervisedSampleError(
                f"sample {sample['id']!r} from {sample.get('dataset', '?')}: no answer token fits in "
                f"max_txt_len={self.max_txt_len} (prompt and {self.num_image_tokens} image tokens take "
                f"{len(ids)} tokens), or the answer is empty")
        if has_image and sum(slots) != self.num_image_tokens:
            raise ConversationError(f"sample {sample['id']!r}: expected one image placeholder, "
                             f"found {sum(slots) // max(self.num_image_tokens, 1)}")
        return EncodedSample(str(sample["id"]), ids, labels, slots, truncated)

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
                reason = "no answer token fits" if isinstance(error, UnsupervisedSampleError) else "invalid conversation"
                skipped.append({"dataset": sample.get("dataset", ""), "id": str(sample["id"]), "reason": reason,
                                "detail": str(error)})
        batch = self.pad(encoded, [s.get("image") for s in kept], padding_side="right")
        batch["datasets"] = [s.get("dataset", "") for s in kept]
        batch["skipped"] = skipped
        batch["truncated"] = [e.truncated for e in encoded]
        return batch

    def placeholder_batch(self) -> dict:
        """A one-token text batch for a micro-step whose samples were all skipped: run through the model
        with its loss x 0, it keeps DDP ranks in step without training on anything."""
        sample = EncodedSample("placeholder", [self.tokenizer.bos_token_id] * 2, [IGNORE_INDEX, self.tokenizer.bos_token_id],
                               [False, False], False)
        return {**self.pad([sample], [], padding_side="right"), "datasets": [], "skipped": [], "truncated": []}

    def generation_batch(self, samples: list[dict]) -> dict:
        """Prompts for generation, left-padded so that every prompt ends at the last position."""
        encoded = [self.encode(sample, for_generation=True) for sample in samples]
        return self.pad(encoded, [s.get("image") for s in samples], padding_side="left")

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
                answer_ids = self._tokenize(answer + self.template.end_sym)[0]
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
