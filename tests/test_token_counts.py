"""Token usage and finish reasons of the OpenAI-compatible API count the ids the model generated.

The LLM is scripted: a logits processor leaves it one choice per step, the ids written for the question
it is answering, so every count is known. Scripts spelled in byte pieces decode to text that re-tokenizes
into far fewer ids, and the end-of-sequence id, an end marker and a stop string are generated but not
shown: counting the text's tokens gets each of these wrong. Checked whole, streamed, batched and n > 1.
"""
from __future__ import annotations

import json
import threading

import openai
import pytest
import torch
from starlette.testclient import TestClient
from transformers import LogitsProcessor

from conftest import REPO
from minigpt.inference.loading import image_processor_for
from minigpt.config.loader import load_config
from minigpt.conversation.template import USER
from minigpt.inference.loading import load_for_inference
from minigpt.serving.openai_api import ServedModel, create_app

EOS = 2  # the shapes tokenizer's </s>


def spelled(text: str) -> list[int]:
    """`text` as byte-fallback pieces, one id per byte (ids 3..258 are <0x00>..<0xFF>)."""
    return [3 + byte for byte in text.encode()]


@pytest.fixture(scope="module")
def served(shapes_dir, tmp_path_factory):
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    torch.manual_seed(0)
    model = load_for_inference(config, torch.device("cpu"))
    assert model.tokenizer.eos_token_id == EOS and model.tokenizer.convert_ids_to_tokens(spelled("r")) == ["<0x72>"]
    assert model.template.end_sym == "###"
    return ServedModel("tiny", model, image_processor_for(config), tmp_path_factory.mktemp("images"))


def words(tokenizer, *texts: str) -> list[int]:
    """`texts` as the tokenizer's word pieces, each tokenized on its own."""
    return [id_ for text in texts for id_ in tokenizer(text, add_special_tokens=False)["input_ids"]]


class Scripted(LogitsProcessor):
    """Every row's next id is its script's (the end-of-sequence id once the script is spent)."""

    def __init__(self, scripts: list[list[int]]):
        self.scripts = scripts

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1]  # ids generated so far: the prompt goes in as embeddings
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[step] if step < len(script) else EOS] = 0.0
        return forced


class Script:
    """What the LLM generates: `ids[question]` for a question the last user turn holds. Records the size of
    every generation batch and the prompt length (in tokens) of the last one."""

    def __init__(self):
        self.ids: dict[str, list[int]] = {}
        self.batches: list[int] = []
        self.prompt: int | None = None

    def for_turn(self, text: str) -> list[int]:
        return next(ids for question, ids in self.ids.items() if question in text)


@pytest.fixture
def script(served, monkeypatch) -> Script:
    """The served model's LLM, scripted (see Script)."""
    model, collator, scripted = served.model, served.collator, Script()
    questions: dict[int, list[str]] = {}  # per thread: the batcher's worker collates a batch, then generates it
    generation_batch, llm_generate = collator.generation_batch, model.llama_model.generate

    def collate(samples):
        questions[threading.get_ident()] = [sample["turns"][-1][1] for sample in samples]
        return generation_batch(samples)

    def generate(**kwargs):
        rows = questions[threading.get_ident()]
        scripted.batches.append(len(rows))
        scripted.prompt = kwargs["inputs_embeds"].shape[1]
        kwargs["logits_processor"].append(Scripted([scripted.for_turn(text) for text in rows]))
        return llm_generate(**kwargs)
    monkeypatch.setattr(collator, "generation_batch", collate)
    monkeypatch.setattr(model.llama_model, "generate", generate)
    return scripted


@pytest.fixture
def api(served):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0,
                         http_client=TestClient(create_app(served)))


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def retokenized(served, text: str) -> int:
    return len(served.model.tokenizer(text, add_special_tokens=False)["input_ids"])


# name: (question, its script from the tokenizer, request settings, expected text, completion tokens, finish reason)
CASES = {
    "spelled": ("Spell the colours.", lambda tokenizer: spelled("red and blue") + [EOS], {"max_tokens": 20},
                "red and blue", 13, "stop"),
    "cut by max_tokens": ("Describe it all.", lambda tokenizer: spelled("a red square and a blue circle") + [EOS],
                          {"max_tokens": 8}, "a red sq", 8, "length"),
    "eos as the last allowed id": ("How many?", lambda tokenizer: spelled("two red") + [EOS], {"max_tokens": 8},
                                   "two red", 8, "stop"),
    # ▁red ▁the n ▁blue: generation ends with the id that completes "then"
    "stop string": ("What comes first?", lambda tokenizer: words(tokenizer, "red", "then", "blue") + [EOS],
                    {"max_tokens": 20, "stop": ["then"]}, "red", 3, "stop"),
    # the template's end marker (###) ends the answer, and is not shown
    "end marker": ("Which one?", lambda tokenizer: words(tokenizer, "blue", "###", "red") + [EOS], {"max_tokens": 20},
                   "blue", 2, "stop"),
}


def scripted_case(served, script: Script, name: str) -> tuple:
    """Script the LLM's answer to the case's question; -> (question, settings, text, count, finish)."""
    question, ids, settings, text, count, finish = CASES[name]
    script.ids[question] = ids(served.model.tokenizer)
    return question, settings, text, count, finish


@pytest.mark.parametrize("name", CASES)
def test_whole_answers_count_the_generated_ids(api, served, script, name):
    question, settings, text, count, finish = scripted_case(served, script, name)
    reply = api.chat.completions.create(model="tiny", messages=ask(question), temperature=0, **settings)
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (text, finish)
    assert reply.usage.prompt_tokens == script.prompt
    assert (reply.usage.completion_tokens, reply.usage.total_tokens) == (count, script.prompt + count)
    assert retokenized(served, text) != count  # counting the text's tokens would get it wrong


@pytest.mark.parametrize("name", CASES)
def test_streamed_usage_counts_the_generated_ids(api, served, script, name):
    question, settings, text, count, finish = scripted_case(served, script, name)
    chunks = list(api.chat.completions.create(model="tiny", messages=ask(question), temperature=0, stream=True,
                                              stream_options={"include_usage": True}, **settings))
    assert streamed(chunks) == (text, finish, count)
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == script.prompt


def streamed(chunks: list) -> tuple[str, str, int]:
    """A streamed reply's (text, last finish reason, completion tokens of its usage chunk)."""
    with_choices = [chunk for chunk in chunks if chunk.choices]
    return ("".join(chunk.choices[0].delta.content or "" for chunk in with_choices),
            with_choices[-1].choices[0].finish_reason, chunks[-1].usage.completion_tokens)


def test_n_answers_sum_their_generated_ids(api, served, script):
    for name in ("spelled", "cut by max_tokens"):
        question, settings, text, count, finish = scripted_case(served, script, name)
        reply = api.chat.completions.create(model="tiny", messages=ask(question), temperature=0, n=3, **settings)
        assert [(choice.message.content, choice.finish_reason) for choice in reply.choices] == [(text, finish)] * 3
        assert reply.usage.completion_tokens == 3 * count and reply.usage.prompt_tokens == script.prompt


def test_batched_answers_count_each_rows_ids(api, served, script, monkeypatch):
    """Requests that arrive together share one generation batch (streamed and whole alike); a row that
    ended is padded while the others go on, and only its own ids count."""
    monkeypatch.setattr(served.batcher, "wait_s", 0.5)
    names = ["spelled", "cut by max_tokens", "eos as the last allowed id", "end marker"]
    questions = [scripted_case(served, script, name)[0] for name in names]
    results: dict[int, tuple] = {}

    def request(index: int) -> None:
        settings = {"stream": True, "stream_options": {"include_usage": True}} if index % 2 else {}
        reply = api.chat.completions.create(model="tiny", messages=ask(questions[index]), temperature=0, max_tokens=8,
                                            **settings)
        results[index] = streamed(list(reply)) if index % 2 else (
            reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens)
    threads = [threading.Thread(target=request, args=(index,)) for index in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert script.batches == [4]  # one batch
    assert results == {0: ("red and", "length", 8), 1: ("a red sq", "length", 8), 2: ("two red", "stop", 8),
                       3: ("blue", "stop", 2)}


def test_a_streamed_tool_call_counts_its_generated_ids(api, served, script):
    call = '<tool_call>{"name": "crop", "arguments": {"image": "img_0"}}</tool_call>'
    script.ids["Crop it."] = words(served.model.tokenizer, call) + [EOS]
    tools = [{"type": "function", "function": {"name": "crop", "description": "", "parameters": {"type": "object"}}}]
    chunks = list(api.chat.completions.create(model="tiny", messages=ask("Crop it."), tools=tools, max_tokens=80,
                                              temperature=0, stream=True, stream_options={"include_usage": True}))
    arguments = "".join(call.function.arguments or "" for chunk in chunks if chunk.choices
                        for call in chunk.choices[0].delta.tool_calls or [])
    assert json.loads(arguments) == {"image": "img_0"}
    assert streamed(chunks)[1:] == ("tool_calls", len(script.ids["Crop it."]))


def test_beam_search_counts_each_rows_ids(served, monkeypatch):
    """Beam search hands its criteria the beams, not the rows it returns: a row's count is read from its ids
    (up to its end-of-sequence id, or up to its padding)."""
    model, scripts = served.model, [spelled("red and blue") + [EOS], spelled("a red square and a blue circle")]
    llm_generate = model.llama_model.generate

    def generate(**kwargs):
        beams = kwargs["num_beams"]
        kwargs["logits_processor"].append(Scripted([scripts[row // beams] for row in range(len(scripts) * beams)]))
        return llm_generate(**kwargs)
    monkeypatch.setattr(model.llama_model, "generate", generate)
    samples = [{"id": str(i), "image": None, "turns": [(USER, question)]} for i, question in enumerate(["a?", "b?"])]
    answers = model.generate_counted(served.collator.generation_batch(samples), max_new_tokens=16, num_beams=2,
                                     repetition_penalty=1.0)
    assert [(answer.text, answer.token_count, answer.finish_reason) for answer in answers] == [
        ("red and blue", 13, "stop"), ("a red square and", 16, "length")]
