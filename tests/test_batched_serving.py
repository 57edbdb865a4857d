"""Batched serving (serving/batching.py): concurrent requests share generation batches, whole and streamed,
and each greedy answer is the one the request gets alone."""
import threading

import pytest
import torch
from transformers import AutoTokenizer

from conftest import REPO, fit_answers
from minigpt.config.loader import load_config
from minigpt.inference.chat import GenerationOptions, generate_answers, generate_counted_answers
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.loading import load_for_inference
from minigpt.serving import batching

QUESTIONS = ["What color is the circle?", "How many shapes are there?", "Describe the image.",
             "Where is the square?", "Which colors do you see?", "What shape is the red object?"]
ANSWERS = ["red", "two", "a small blue circle on the left", "at the top", "green and yellow", "a triangle"]
OPTIONS = GenerationOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def model(shapes_dir):
    """The tiny model fitted to answer QUESTIONS (so that greedy decoding has clear answers to give)."""
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer",
                                                                  "model.ckpt=null"], for_training=False)
    torch.manual_seed(0)
    model = load_for_inference(config, torch.device("cpu"))
    fitted = [{**sample, "turns": [*sample["turns"], (ASSISTANT, answer)]} for sample, answer in zip(samples(), ANSWERS)]
    return fit_answers(model, fitted, steps=40)


def samples() -> list[dict]:
    torch.manual_seed(1)
    return [{"id": str(i), "image": torch.randn(3, 64, 64), "turns": [(USER, question)]}
            for i, question in enumerate(QUESTIONS)]


def concurrently(function, items: list) -> list:
    """function(item) for every item, each in its own thread, all started together."""
    results = [None] * len(items)
    start = threading.Barrier(len(items))

    def run(index, item):
        start.wait()
        results[index] = function(item)
    threads = [threading.Thread(target=run, args=(index, item)) for index, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def batch_sizes(monkeypatch):
    """The size of every generation batch the batcher runs."""
    sizes = []

    def counted(model, collator, batch_samples, options, **kwargs):
        sizes.append(len(batch_samples))
        return generate_counted_answers(model, collator, batch_samples, options, **kwargs)
    monkeypatch.setattr(batching, "generate_counted_answers", counted)
    return sizes


def test_concurrent_requests_are_batched_and_answered_as_alone(model, batch_sizes):
    collator = collator_for(model)
    alone = [generate_answers(model, collator, [sample], OPTIONS)[0] for sample in samples()]
    assert sum(answer == expected for answer, expected in zip(alone, ANSWERS)) >= 4  # the fitted answers
    batcher = batching.Batcher(model, collator, max_batch=8, wait_s=0.2)
    together = concurrently(lambda sample: batcher.answers(sample, OPTIONS)[0].text, samples())
    assert together == alone
    assert max(batch_sizes) >= 3 and sum(batch_sizes) == len(QUESTIONS)  # shared batches, each request once


def test_streamed_answers_in_a_batch_join_to_the_answers_alone(model, batch_sizes):
    collator = collator_for(model)
    alone = [generate_answers(model, collator, [sample], OPTIONS)[0] for sample in samples()]
    batcher = batching.Batcher(model, collator, max_batch=8, wait_s=0.2)
    pieces = concurrently(lambda sample: list(batcher.stream(sample, OPTIONS)), samples())
    assert ["".join(parts) for parts in pieces] == alone
    assert max(batch_sizes) >= 3 and any(len(parts) > 1 for parts in pieces)  # text arrived as it was decoded


def test_requests_with_other_options_or_a_seed_do_not_share_a_batch(model, batch_sizes):
    batcher = batching.Batcher(model, collator_for(model), max_batch=8, wait_s=0.2)
    sampled = GenerationOptions(max_new_tokens=12, do_sample=True, temperature=0.9)
    requests = [(sample, OPTIONS if index % 2 else GenerationOptions(max_new_tokens=6), None)
                for index, sample in enumerate(samples()[:4])] + [(samples()[4], sampled, 7), (samples()[4], sampled, 7)]
    answers = concurrently(lambda request: batcher.answers(*request)[0].text, requests)
    assert answers[4] == answers[5]  # the same seed, each run alone: the same sampled answer
    assert sum(batch_sizes) == 6 and batch_sizes.count(1) >= 2 and max(batch_sizes) <= 2


def test_incremental_row_text_equals_decoding_the_whole_row(shapes_dir):
    """RowDecoder decodes a short window per token; its text must be what decoding every token gives,
    for any tokens: word pieces, byte pieces of a multi-byte character, special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(shapes_dir / "tokenizer")
    generator = torch.Generator().manual_seed(0)
    texts = ["a small blue circle, then a red square.\nNext line", "ÄÖ naïve café 東京 🙂 x", "tokens"]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    rows += [torch.randint(0, len(tokenizer), (40,), generator=generator).tolist() for _ in range(20)]
    checked = 0
    for tokens in rows:
        decoder = batching.RowDecoder(tokenizer)
        for count, token in enumerate(tokens, start=1):
            text = decoder.add(token)
            whole = tokenizer.decode(tokens[:count], skip_special_tokens=True)
            if "\ufffd" not in whole:  # (a run of byte pieces that is not yet whole UTF-8 decodes as \ufffd)
                assert text == whole
                checked += 1
    assert checked > 80  # steps compared


def test_only_streamed_requests_get_pieces(model):
    batcher = batching.Batcher(model, collator_for(model), max_batch=8, wait_s=0.2)
    # both answers run to several words, so a streamed row would get pieces before it is done
    whole, streamed = batching.Job(samples()[2], OPTIONS), batching.Job(samples()[4], OPTIONS, streamed=True)
    batcher.queue.put(whole)
    batcher.queue.put(streamed)
    kinds = {name: [] for name in ("whole", "streamed")}
    for name, job in (("whole", whole), ("streamed", streamed)):
        while not kinds[name] or kinds[name][-1] not in ("done", "error"):
            kinds[name].append(job.events.get(timeout=60)[0])
    assert kinds["whole"] == ["done"] and kinds["streamed"].count("piece") >= 2 and kinds["streamed"][-1] == "done"
