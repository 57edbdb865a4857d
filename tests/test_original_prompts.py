"""The shipped configs build the token sequences the original MiniGPT-4 code builds, token for token.

Each expected sequence is written out as the original's strings (its datasets' instructions, its
`Conversation` templates, its eval scripts) and tokenized the way its code did: every string it passed
to the tokenizer on its own, through the slow sentencepiece tokenizer, which cuts out the special
tokens and encodes each piece with a word-start prefix. Image slots read IMAGE.
"""
import re

import pytest
import sentencepiece as spm
import torch

from minigpt.config.loader import model_section
from minigpt.conversation.chat_styles import MINIGPT4_SYSTEM
from minigpt.conversation.collator import IGNORE_INDEX, ConversationCollator
from minigpt.conversation.template import ASSISTANT, USER, PromptTemplate
from minigpt.models.tokenizer import load_tokenizer

IMAGE, IMAGE_TOKENS = -1, 3
QUESTION, ANSWER, QUESTION_2, ANSWER_2 = "What color is it?", "red", "How many shapes are there?", "two"


@pytest.fixture(scope="module")
def tokenizer(shapes_dir):
    return load_tokenizer(shapes_dir / "tokenizer")


@pytest.fixture(scope="module")
def original_tokens(shapes_dir):
    """The original's tokenization of the strings it tokenized one call each (LlamaTokenizer, use_fast=False)."""
    processor = spm.SentencePieceProcessor(model_file=str(shapes_dir / "tokenizer" / "tokenizer.model"))

    def tokens(*strings: str) -> list[int]:
        ids = []
        for string in strings:
            for piece in re.split(r"(<s>|</s>|<ImageHere>)", string):
                special = {"<s>": [processor.bos_id()], "</s>": [processor.eos_id()], "<ImageHere>": [IMAGE] * IMAGE_TOKENS}
                ids += special.get(piece, processor.encode(piece) if piece else [])
        return ids
    return tokens


def collator(tokenizer, cfg_path: str, *options: str) -> ConversationCollator:
    model = model_section(cfg_path, list(options))
    return ConversationCollator(tokenizer, PromptTemplate.from_model_config(model), IMAGE_TOKENS, model.max_txt_len,
                                max_context_len=model.max_context_len)


def sample(*turns: str, task: str | None = None) -> dict:
    roles = [USER, ASSISTANT] * len(turns)
    return {"id": "s", "dataset": "test", "image": torch.zeros(3, 8, 8), "task": task,
            "turns": list(zip(roles, turns))}


def training_tokens(collator: ConversationCollator, item: dict) -> tuple[list[int], str]:
    """The training sequence with image slots as IMAGE, and the supervised tokens decoded."""
    batch = collator([item])
    assert not batch["skipped"], batch["skipped"]
    ids = batch["input_ids"][0].masked_fill(batch["image_slots"][0], IMAGE)
    labels = batch["labels"][0]
    return ids.tolist(), collator.tokenizer.decode(labels[labels != IGNORE_INDEX])


def prompt_tokens(collator: ConversationCollator, item: dict) -> list[int]:
    batch = collator.generation_batch([item])
    return batch["input_ids"][0].masked_fill(batch["image_slots"][0], IMAGE).tolist()


def scored_tokens(collator: ConversationCollator, item: dict, choice: str) -> list[int]:
    batch = collator.scoring_batch([item], [[choice]])
    return batch["input_ids"][0].masked_fill(batch["image_slots"][0], IMAGE).tolist()


def test_vicuna_v0(tokenizer, original_tokens):
    """MiniGPT-4 (Vicuna v0): trained on its prompt template, chatted with through CONV_VISION_Vicuna0."""
    train = collator(tokenizer, "train_configs/minigpt4_stage2_finetune.yaml")
    ids, supervised = training_tokens(train, sample(QUESTION, ANSWER))
    assert ids == original_tokens("<s>", f"###Human: <Img><ImageHere></Img> {QUESTION} ###Assistant: ", "red###")
    assert supervised == "red###"
    ids, _ = training_tokens(train, sample(QUESTION, ANSWER, QUESTION_2, ANSWER_2))
    assert ids == original_tokens("<s>", f"###Human: <Img><ImageHere></Img> {QUESTION} ###Assistant: ", "red###",
                                  f"<s>###Human: {QUESTION_2} ###Assistant: ", "two###")

    chat = collator(tokenizer, "eval_configs/minigpt4_eval.yaml")
    assert prompt_tokens(chat, sample(QUESTION)) == original_tokens(
        f"<s>{MINIGPT4_SYSTEM}###Human: <Img><ImageHere></Img> {QUESTION}###Assistant: ")
    assert prompt_tokens(chat, sample(QUESTION, ANSWER, QUESTION_2)) == original_tokens(
        f"<s>{MINIGPT4_SYSTEM}###Human: <Img><ImageHere></Img> {QUESTION}###Assistant: red###Human: {QUESTION_2}"
        "###Assistant: ")


def test_llama2(tokenizer, original_tokens):
    """MiniGPT-4 (Llama-2 chat): its prompt template in training; CONV_VISION_LLama2 (a literal <s>) in chat."""
    train = collator(tokenizer, "train_configs/minigpt4_llama2_stage2_finetune.yaml")
    ids, supervised = training_tokens(train, sample(QUESTION, ANSWER))
    assert ids == original_tokens("<s>", f"[INST] <Img><ImageHere></Img> {QUESTION} [/INST] ", "red</s>")
    assert supervised == "red</s>"
    ids, supervised = training_tokens(train, sample(QUESTION, ANSWER, QUESTION_2, ANSWER_2))
    assert ids == original_tokens("<s>", f"[INST] <Img><ImageHere></Img> {QUESTION} [/INST] ", "red</s>",
                                  f"<s>[INST] {QUESTION_2} [/INST] ", "two</s>")
    assert supervised == "red</s> two</s>"

    chat = collator(tokenizer, "eval_configs/minigpt4_llama2_eval.yaml")
    assert prompt_tokens(chat, sample(QUESTION)) == original_tokens(
        f"<s>{MINIGPT4_SYSTEM}<s>[INST] <Img><ImageHere></Img> {QUESTION} [/INST] ")
    assert prompt_tokens(chat, sample(QUESTION, ANSWER, QUESTION_2)) == original_tokens(
        f"<s>{MINIGPT4_SYSTEM}<s>[INST] <Img><ImageHere></Img> {QUESTION} [/INST] red<s>[INST] {QUESTION_2} [/INST] ")


def test_minigpt_v2_with_task_identifiers(tokenizer, original_tokens):
    """MiniGPT-v2: every user turn of its image data ends with a space; the demo and eval scripts write
    "<s>[INST] " after the tokenizer's BOS; IconQA scores each choice after that same prompt."""
    train = collator(tokenizer, "train_configs/minigptv2_stage3_finetune.yaml")
    ids, supervised = training_tokens(train, sample(QUESTION, ANSWER, task="vqa"))
    assert ids == original_tokens("<s>", f"[INST] <Img><ImageHere></Img> [vqa] {QUESTION}  [/INST]", "red</s>")
    assert supervised == "red</s>"
    ids, _ = training_tokens(train, sample(QUESTION, ANSWER, QUESTION_2, ANSWER_2))  # multitask_conversation
    assert ids == original_tokens("<s>", f"[INST] <Img><ImageHere></Img> {QUESTION}  [/INST]", "red</s>",
                                  f"<s>[INST] {QUESTION_2}  [/INST]", "two</s>")
    text_only = {**sample(QUESTION, ANSWER), "image": None}  # unnatural_instruction: no trailing space
    assert training_tokens(train, text_only)[0] == original_tokens("<s>", f"[INST] {QUESTION} [/INST]", "red</s>")

    for cfg_path in ("eval_configs/minigptv2_eval.yaml", "eval_configs/minigptv2_benchmark_evaluation.yaml"):
        chat = collator(tokenizer, cfg_path)
        assert prompt_tokens(chat, sample(QUESTION, task="vqa")) == original_tokens(
            f"<s><s>[INST] <Img><ImageHere></Img> [vqa] {QUESTION} [/INST]")
        assert prompt_tokens(chat, sample(f"[refer] {QUESTION}", "{<1><2><3><4>}", QUESTION_2)) == original_tokens(
            f"<s><s>[INST] <Img><ImageHere></Img> [refer] {QUESTION} [/INST]{{<1><2><3><4>}}<s>[INST] {QUESTION_2} [/INST]")
        assert scored_tokens(chat, sample(QUESTION, task="vqa"), "red") == original_tokens(
            "<s>", f"<s>[INST] <Img><ImageHere></Img> [vqa] {QUESTION} [/INST]", "red</s>")


def test_stage1_without_template(tokenizer, original_tokens):
    """Stage 1: BOS, the image, the caption; a model trained here is prompted with its training form."""
    train = collator(tokenizer, "train_configs/minigpt4_stage1_pretrain.yaml")
    caption = {**sample(), "turns": [(ASSISTANT, "a red circle on the left")]}
    ids, supervised = training_tokens(train, caption)
    assert ids == original_tokens("<s>", "<ImageHere>", "a red circle on the left\n")
    assert supervised == "a red circle on the left\n"
    assert prompt_tokens(train, {**caption, "turns": [(USER, "")]}) == original_tokens("<s>", "<ImageHere>")


def test_models_trained_here_chat_in_their_training_template(tokenizer, original_tokens):
    """chat_prompt auto: the original's style for a released .pth, the training template otherwise."""
    ours = collator(tokenizer, "eval_configs/minigptv2_eval.yaml", "model.chat_prompt=auto", "model.ckpt=output/run")
    assert prompt_tokens(ours, sample(QUESTION, task="vqa")) == original_tokens(
        "<s>", f"[INST] <Img><ImageHere></Img> [vqa] {QUESTION}  [/INST]")
    released = collator(tokenizer, "eval_configs/minigptv2_eval.yaml", "model.chat_prompt=auto")
    assert prompt_tokens(released, sample(QUESTION, task="vqa")) == original_tokens(
        f"<s><s>[INST] <Img><ImageHere></Img> [vqa] {QUESTION} [/INST]")


def test_max_txt_len_keeps_40_of_a_52_token_answer(tokenizer, original_tokens):
    """The original's example: max_txt_len 40 truncates the answer's tokens to 40, whatever the prompt."""
    words = "a red circle on the left and a blue square".split()
    answer = " ".join(words[i % len(words)] for i in range(60))
    answer = tokenizer.decode(original_tokens(answer)[:51])  # 51 tokens and the end marker: 52
    assert len(original_tokens(answer + "###")) == 52
    train = collator(tokenizer, "train_configs/minigpt4_stage2_finetune.yaml", "model.max_txt_len=40")
    ids, supervised = training_tokens(train, sample(QUESTION, answer))
    kept = original_tokens(answer + "###")[:40]
    assert ids == original_tokens("<s>", f"###Human: <Img><ImageHere></Img> {QUESTION} ###Assistant: ") + kept
    assert len(tokenizer(supervised, add_special_tokens=False).input_ids) == 40
