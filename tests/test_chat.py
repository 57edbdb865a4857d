"""The chat engine: streamed answers equal whole ones, history, stopping a stream early."""
import threading

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO
from minigpt.inference.chat import (Chat, GenerationOptions, _partial_suffix, choose_answers, generate_answers,
                                      original_lengths, stream_answer)
from minigpt.conversation.collator import IGNORE_INDEX, ConversationCollator
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.models.scored_loss import RowScores


@pytest.fixture(scope="module")
def chat(shapes_dir) -> Chat:
    """The tiny MiniGPT-4 (random weights, Vicuna v0 template ending answers with ###) about a red square."""
    from minigpt.inference.loading import image_processor_for
    from minigpt.config.loader import load_config
    from minigpt.inference.loading import load_for_inference

    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    torch.manual_seed(config.run.seed)  # random weights whose answer is words, not byte pieces
    chat = Chat(load_for_inference(config, torch.device("cpu")), image_processor_for(config),
                GenerationOptions(max_new_tokens=12, repetition_penalty=1.0))
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill="red")
    chat.set_image(image)
    return chat


def test_streamed_pieces_join_to_the_whole_answer(chat):
    sample = {"id": "s", "image": chat.image, "turns": [(USER, "Which colors do you see?")]}
    whole = generate_answers(chat.model, chat.collator, [sample], chat.options)[0]
    pieces = list(stream_answer(chat.model, chat.collator, sample, chat.options))
    assert "".join(pieces) == whole and len(pieces) > 1


def test_ask_streaming_keeps_the_history_like_ask(chat):
    chat.reset()
    whole = chat.ask("Which colors do you see?")
    chat.reset()
    streamed = "".join(chat.ask_streaming("Which colors do you see?"))
    assert streamed == whole and chat.turns == [(USER, "Which colors do you see?"), (ASSISTANT, whole)]


def test_closing_a_stream_stops_generation(chat):
    sample = {"id": "s", "image": chat.image, "turns": [(USER, "Which colors do you see?")]}
    options = GenerationOptions(max_new_tokens=60, repetition_penalty=1.0)
    steps = []
    hook = chat.model.llama_model.register_forward_hook(lambda *args: steps.append(1))
    try:
        list(stream_answer(chat.model, chat.collator, sample, options))
        whole_run, steps[:] = len(steps), []
        before = threading.active_count()
        pieces = stream_answer(chat.model, chat.collator, sample, options)
        next(pieces)
        pieces.close()  # the generating thread is told to stop, and joined
    finally:
        hook.remove()
    assert whole_run > 40 and len(steps) < whole_run / 2  # one LLM forward per new token
    assert threading.active_count() == before


def test_a_partial_end_marker_is_held_back():
    assert _partial_suffix("red and #", "###") == 1
    assert _partial_suffix("red and ##", "###") == 2
    assert _partial_suffix("red and", "###") == 0
    assert _partial_suffix("answer</", "</s>") == 2


def test_choose_answers_picks_the_choice_the_model_finds_most_likely(chat):
    """Each choice is scored by the loss of its own tokens after the question (not of earlier answers in
    the conversation), computed here from one pair at a time: their total (MiniGPT-v2's ranking) or their
    mean per token. The chosen answer is the choice with the lowest, whatever the choices' order, and a
    prompt longer than max_txt_len is not cut."""
    samples = [{"id": "colours", "image": chat.image, "turns": [(USER, "Which colors do you see?")],
                "choices": ["red", "blue and green", "a yellow circle at the top left", "purple"]},
               {"id": "count", "image": chat.image, "choices": ["one", "two", "three"],
                "turns": [(USER, "Describe the image."), (ASSISTANT, "A red square."), (USER, "How many shapes are there?")]}]

    def alone(sample: dict, choice: str, reduction: str) -> float:
        """Negative log-likelihood of the tokens of `choice` (and the end marker) at the end of the
        training-layout sequence (the last run of labelled positions), summed or averaged."""
        batch = chat.collator([{**sample, "turns": sample["turns"] + [(ASSISTANT, choice)]}])
        with torch.no_grad():
            log_probs = chat.model(batch, with_loss=False)["logits"][0].log_softmax(-1)
        labels = batch["labels"][0].tolist()
        start = len(labels)
        while labels[start - 1] != -100:
            start -= 1
        total = -sum(log_probs[position - 1, labels[position]].item() for position in range(start, len(labels)))
        return total if reduction == "sum" else total / (len(labels) - start)

    pairs = [(sample, choice) for sample in samples for choice in sample["choices"]]
    batch = chat.collator.scoring_batch(samples, [s["choices"] for s in samples])
    assert len(batch["images"]) == len(samples) and batch["image_index"].tolist() == [0] * 4 + [1] * 3
    short = ConversationCollator(chat.collator.tokenizer, chat.collator.template, chat.collator.num_image_tokens, max_txt_len=4)
    for scoring, reduction in (("total", "sum"), ("mean", "mean")):
        assert chat.model.answer_scores(batch).losses(reduction).tolist() == pytest.approx(
            [alone(s, c, reduction) for s, c in pairs], rel=1e-4)
        expected = [min(s["choices"], key=lambda c: alone(s, c, reduction)) for s in samples]
        assert choose_answers(chat.model, chat.collator, samples, scoring) == expected
        reversed_choices = [{**s, "choices": s["choices"][::-1]} for s in samples]
        assert choose_answers(chat.model, chat.collator, reversed_choices, scoring) == expected
        assert choose_answers(chat.model, short, samples, scoring) == expected
    with pytest.raises(ValueError, match="sample 'open': no 'choices'"):
        choose_answers(chat.model, chat.collator, [{"id": "open", "image": chat.image, "turns": [(USER, "Hi")]}])
    with pytest.raises(ValueError, match="unknown choice scoring 'best'"):
        choose_answers(chat.model, chat.collator, samples, "best")


class FixedLossModel:
    """Scores an answer token by a loss fixed per answer text, to show how each ranking weighs length."""

    adapters = None

    def __init__(self, collator, token_loss: dict[str, float]):
        self.collator, self.token_loss = collator, token_loss

    def answer_scores(self, batch: dict) -> RowScores:
        totals, counts = [], []
        for labels in batch["labels"]:
            answer = labels[labels != IGNORE_INDEX]
            text = self.collator.tokenizer.decode(answer, skip_special_tokens=True).strip()
            text = text.removesuffix(self.collator.template.end_sym)
            totals.append(self.token_loss[text] * len(answer))
            counts.append(len(answer))
        return RowScores(torch.tensor(totals), torch.tensor(counts, dtype=torch.float), torch.zeros(len(totals)) > 0)


def test_total_loss_favours_the_short_choice_that_the_mean_ranks_below_a_long_one(chat):
    """MiniGPT-v2 ranks choices by their total loss: "red" (two tokens at 3.0) beats "red and blue"
    (more tokens at 2.0 each), which the mean per token would choose."""
    model = FixedLossModel(chat.collator, {"red": 3.0, "red and blue": 2.0})
    sample = {"id": "q", "image": chat.image, "turns": [(USER, "Which colors?")], "choices": ["red", "red and blue"]}
    assert choose_answers(model, chat.collator, [sample], "total") == ["red"]
    assert choose_answers(model, chat.collator, [sample], "original") == ["red"]
    assert choose_answers(model, chat.collator, [sample], "mean") == ["red and blue"]


def test_original_scoring_divides_by_the_length_of_the_padded_batch_of_each_choice_index(chat):
    """MiniGPT-v2's multi_select scores choice k of every sample in one padded batch (missing choices
    filled with "none") and averages over its T - 1 positions: T = BOS + longest prompt + longest answer."""
    samples = [{"id": "a", "image": chat.image, "turns": [(USER, "Which colors?")], "choices": ["red", "red and blue"]},
               {"id": "b", "image": chat.image, "choices": ["blue"],
                "turns": [(USER, "Describe the image in a few words, please.")]}]
    batch = chat.collator.scoring_batch(samples, [s["choices"] for s in samples])
    prompts = [len(chat.collator.encode(s, for_generation=True).input_ids) for s in samples]
    answer = {text: len(chat.collator.answer_tokens(text)) for text in ("red", "red and blue", "blue", "none")}
    first = max(prompts) - 1 + max(answer["red"], answer["blue"])
    second = max(prompts) - 1 + max(answer["red and blue"], answer["none"])
    divisors = original_lengths(batch, samples, answer["none"]).tolist()
    assert divisors == [first, second, first]
    model = FixedLossModel(chat.collator, {"red": 1.0, "red and blue": 1.0, "blue": 1.0})  # sums: the lengths
    first_wins = answer["red"] / first < answer["red and blue"] / second
    assert choose_answers(model, chat.collator, samples, "original") == ["red" if first_wins else "red and blue", "blue"]


def test_answers_stop_where_the_llms_context_is_full(chat, monkeypatch):
    """max_context_len (3800 by default) never passes the LLM's positions (256 in the tiny model); an answer
    gets the room that is left, and a prompt that leaves none is refused."""
    model = chat.model
    assert model.max_context_len == model.llama_model.config.max_position_embeddings == 256
    batch = chat.collator.generation_batch([{"id": "s", "image": chat.image, "turns": [(USER, "Which colors do you see?")]}])
    prompt_tokens = batch["input_ids"].shape[1]
    asked = []
    generate = model.llama_model.generate
    monkeypatch.setattr(model.llama_model, "generate", lambda **kwargs: asked.append(kwargs["max_new_tokens"]) or generate(**kwargs))
    model.generate(batch, max_new_tokens=1000)
    model.generate(batch, max_new_tokens=5)
    assert asked == [256 - prompt_tokens, 5]
    monkeypatch.setattr(model, "max_context_len", prompt_tokens)
    with pytest.raises(ValueError, match=f"prompt of {prompt_tokens} tokens leaves no room for an answer"):
        model.generate(batch, max_new_tokens=5)


def test_presence_and_frequency_penalties_lower_the_logits_of_tokens_already_generated():
    from minigpt.models.penalties import PresenceFrequencyPenalty

    scores = PresenceFrequencyPenalty(presence_penalty=0.5, frequency_penalty=0.25)(torch.tensor([[1, 1, 3]]),
                                                                                    torch.zeros(1, 5))
    assert scores.tolist() == [[0.0, -0.5 - 2 * 0.25, 0.0, -0.5 - 0.25, 0.0]]


def test_penalties_and_stop_strings_reach_the_generation(chat, monkeypatch):
    model = chat.model
    sample = {"id": "s", "image": chat.image, "turns": [(USER, "Which colors do you see?")]}
    generated = []
    generate = model.llama_model.generate
    monkeypatch.setattr(model.llama_model, "generate", lambda **kwargs: generated.append(generate(**kwargs)) or generated[-1])
    plain = generate_answers(model, chat.collator, [sample], chat.options)[0]
    penalized = GenerationOptions(max_new_tokens=12, repetition_penalty=1.0, frequency_penalty=2.0, presence_penalty=2.0)
    generate_answers(model, chat.collator, [sample], penalized)
    tokens = generated[-1][0].tolist()
    assert len(set(tokens)) == len(tokens), "a token was generated twice under large penalties"
    stop = plain.split()[-1]
    stopped = GenerationOptions(max_new_tokens=12, repetition_penalty=1.0, stop=(stop,))
    assert generate_answers(model, chat.collator, [sample], stopped)[0] == plain[:plain.find(stop)].strip()
