"""serve.py: the official openai client against the tiny model, streaming, bad requests, one at a time."""
import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO
from image_server import image_server, png_bytes  # noqa: F401  (image_server: a fixture)

QUESTION = "Which colors do you see?"


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill="red")
    return image


def data_url(image: Image.Image, kind: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def question_with(url: str, text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="module")
def server(shapes_dir, tmp_path_factory):
    """serve.py on a free port with the tiny MiniGPT-4 (random weights); -> (base URL, image root, options)."""
    image_root = tmp_path_factory.mktemp("served_images")
    picture().save(image_root / "red.png")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"]
    process = subprocess.Popen([sys.executable, "serve.py", "--cfg-path", "eval_configs/tiny_eval.yaml", "--port", str(port),
                                "--name", "tiny", "--image-root", str(image_root), "--max-image-mb", "0.05", "--image-timeout", "1",
                                "--options", *options], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"serve.py did not start:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.5)
    yield base, image_root, options
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def expected_answer(server):
    """What the chat engine answers in this process, with the same seed and config as the server."""
    import torch

    from minigpt.inference.loading import image_processor_for
    from minigpt.config.loader import load_config
    from minigpt.inference.chat import Chat, GenerationOptions
    from minigpt.inference.loading import load_for_inference

    config = load_config(REPO / "eval_configs/tiny_eval.yaml", server[2], for_training=False)
    torch.manual_seed(config.run.seed)
    model = load_for_inference(config, torch.device("cpu"))
    chat = Chat(model, image_processor_for(config), GenerationOptions(max_new_tokens=8, repetition_penalty=1.0))
    chat.set_image(picture())
    return chat.ask(QUESTION)


def client(server) -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def test_the_openai_client_gets_the_chat_engines_answer_whole_and_streamed(server, expected_answer):
    api = client(server)
    assert [m.id for m in api.models.list().data] == ["tiny"]
    reply = api.chat.completions.create(model="tiny", messages=question_with(data_url(picture())), max_tokens=8,
                                        temperature=0)
    assert reply.choices[0].message.content == expected_answer and expected_answer
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.model == "tiny"
    assert reply.usage.prompt_tokens > 8 and reply.usage.completion_tokens > 0  # 8 image tokens + the question

    pieces = [chunk.choices[0].delta.content for chunk in
              api.chat.completions.create(model="tiny", messages=question_with(data_url(picture())), max_tokens=8,
                                          temperature=0, stream=True) if chunk.choices[0].delta.content]
    assert "".join(pieces) == expected_answer and len(pieces) > 1  # several pieces, as generated

    by_path = api.chat.completions.create(model="tiny", messages=question_with("red.png"), max_tokens=8, temperature=0)
    assert by_path.choices[0].message.content == expected_answer
    follow_up = question_with(data_url(picture())) + [{"role": "assistant", "content": expected_answer},
                                                     {"role": "user", "content": "How many shapes are there?"}]
    assert api.chat.completions.create(model="tiny", messages=follow_up, max_tokens=4, temperature=0).choices[0].message.content is not None


@pytest.mark.parametrize("messages, extra, status, message", [
    (question_with("data:image/png;base64," + base64.b64encode(b"not an image").decode()), {}, 400, "not a readable image"),
    (question_with("ftp://example.com/cat.jpg"), {}, 400, "an image URL is http(s), a data URL or a local file path"),
    (question_with("../outside.png"), {}, 403, "outside the server's image root"),
    (question_with("missing.png"), {}, 404, "no image file"),
    (question_with(data_url(Image.effect_noise((256, 256), 64).convert("RGB"))), {}, 413, "larger than"),
    (question_with("red.png") + [{"role": "assistant", "content": "red"}], {}, 400, "last message must be the user's"),
    ([{"role": "robot", "content": "hi"}], {}, 400, "role"),
    (question_with("red.png"), {"n": 2, "stream": True}, 400, "n > 1 is not supported with stream"),
    (question_with("red.png"), {"logprobs": True}, 400, "'logprobs' is not supported by this server"),
    (question_with("red.png"), {"response_format": {"type": "json_object"}}, 400, "'response_format' is not supported"),
    (question_with("red.png"), {"extra_body": {"best_of_n": 3}}, 400, "'best_of_n' is not supported by this server"),
    (question_with("red.png"), {"extra_body": {"top_k": 1.5}}, 400, "'top_k' must be a whole number"),
    (question_with("red.png"), {"extra_body": {"min_p": 2}}, 400, "'min_p' must be a number from 0 to 1"),
    (question_with("red.png"), {"stop": ["a", "b", "c", "d", "e"]}, 400, "up to 4"),
    (question_with("red.png"), {"seed": 1.5}, 400, "'seed' must be a whole number"),
    (question_with("red.png"), {"presence_penalty": 3}, 400, "'presence_penalty' must be a number from -2 to 2"),
    (question_with("red.png"), {"stream_options": {"include_usage": True}}, 400, "stream_options needs stream"),
    (question_with("red.png"), {"temperature": 5}, 400, "'temperature' must be a number from 0 to 2"),
    (question_with("red.png"), {"max_tokens": 10_000}, 400, "'max_tokens'"),
    (question_with("red.png"), {"max_tokens": 4000}, 400, "ask for at most"),
    (question_with("red.png"), {"max_tokens": 4000, "stream": True}, 400, "ask for at most"),
])
def test_bad_requests_get_a_json_error_and_the_server_goes_on(server, expected_answer, messages, extra, status, message):
    with pytest.raises(openai.APIStatusError) as caught:
        client(server).chat.completions.create(model="tiny", messages=messages, **extra)
    assert caught.value.status_code == status and message in caught.value.body["message"]
    reply = client(server).chat.completions.create(model="tiny", messages=question_with("red.png"), max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == expected_answer


def test_an_image_url_is_fetched_and_answered_as_its_bytes_are(server, image_server):
    api = client(server)
    by_url = api.chat.completions.create(model="tiny", messages=question_with(f"{image_server}/red.png"), max_tokens=8,
                                         temperature=0)
    sent = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    by_data = api.chat.completions.create(model="tiny", messages=question_with(sent), max_tokens=8, temperature=0)
    assert by_url.choices[0].message.content == by_data.choices[0].message.content
    for path, message in (("/large-unsized.bin", "over the 0.05 MB limit"), ("/slow.png", "took over the 1 s limit"),
                          ("/missing.png", "HTTP 404")):
        with pytest.raises(openai.APIStatusError) as caught:
            api.chat.completions.create(model="tiny", messages=question_with(f"{image_server}{path}"), max_tokens=8)
        assert caught.value.status_code == 400 and message in caught.value.body["message"], caught.value.body
        assert caught.value.body["param"] == "messages[0].content[1].image_url"


def test_malformed_http_gets_json_errors(server):
    base = server[0]
    not_json = httpx.post(f"{base}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]
    assert httpx.post(f"{base}/v1/chat/completions", json=[1, 2]).status_code == 400
    missing = httpx.get(f"{base}/v1/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


def test_concurrent_requests_take_turns(server, expected_answer):
    answers = []

    def ask(stream: bool):
        api = client(server)
        reply = api.chat.completions.create(model="tiny", messages=question_with("red.png"), max_tokens=8, temperature=0,
                                            stream=stream)
        answers.append("".join(c.choices[0].delta.content or "" for c in reply) if stream else reply.choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(stream,)) for stream in (True, False, True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == [expected_answer] * 4


def test_seed_n_stop_and_usage_are_honoured(server, expected_answer):
    api, messages = client(server), question_with("red.png")
    sampled = [api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.5, seed=7, n=3)
               for _ in range(2)]
    texts = [[choice.message.content for choice in reply.choices] for reply in sampled]
    assert texts[0] == texts[1] and [choice.index for choice in sampled[0].choices] == [0, 1, 2]  # a seed repeats
    assert sampled[0].usage.completion_tokens >= 3  # counted over the n choices

    stop = expected_answer[len(expected_answer) // 2:][:2]
    cut = expected_answer[:expected_answer.find(stop)].strip()
    whole = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stop=[stop, "zzz"])
    assert whole.choices[0].message.content == cut and whole.choices[0].finish_reason == "stop"
    chunks = list(api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stop=stop,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 8
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_top_k_and_min_p_are_honoured(server, expected_answer):
    """Sampled hot (temperature 1.5), top_k 1 and min_p 1 each leave only the likeliest token: the greedy
    answer, every time; top_k -1 and 0 (vLLM's and transformers' "off") are accepted."""
    api, messages = client(server), question_with("red.png")
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        for seed in (1, 2):
            reply = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.5,
                                                seed=seed, extra_body=extra)
            assert reply.choices[0].message.content == expected_answer, extra
    unfiltered = {api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.5, seed=seed,
                                              extra_body={"top_k": -1}).choices[0].message.content for seed in range(4)}
    assert unfiltered != {expected_answer}  # without the filter, sampling this hot wanders
    reply = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, extra_body={"top_k": 0})
    assert reply.choices[0].message.content == expected_answer


def test_what_common_clients_send_unasked_is_answered_with_a_warning(server, expected_answer):
    """lmms-eval's OpenAI-compatible model to a model named o1 / o3 / o4-* (reasoning_effort, a text
    response_format, max_completion_tokens), vLLM's and SGLang's benchmark clients (ignore_eos, streamed
    with usage): answered, each ignored parameter named in a `warning`."""
    lmms_eval = {"model": "o4-mini", "messages": question_with("red.png"), "reasoning_effort": "medium",
                 "response_format": {"type": "text"}, "max_completion_tokens": 8}
    reply = httpx.post(f"{server[0]}/v1/chat/completions", json=lmms_eval, timeout=60)  # (no temperature: sampled)
    assert reply.status_code == 200 and isinstance(reply.json()["choices"][0]["message"]["content"], str)
    assert "'reasoning_effort' was ignored" in reply.json()["warning"]
    bench = {"model": "tiny", "messages": question_with("red.png"), "temperature": 0.0, "max_completion_tokens": 8,
             "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 8}
    with httpx.stream("POST", f"{server[0]}/v1/chat/completions", json=bench, timeout=60) as streamed:
        events = [json.loads(line.removeprefix("data: ")) for line in streamed.iter_lines()
                  if line.startswith("data: {")]
    assert streamed.status_code == 200 and "'ignore_eos' was ignored" in events[0]["warning"]
    assert "'min_tokens' was ignored" in events[0]["warning"]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == expected_answer
    plain = httpx.post(f"{server[0]}/v1/chat/completions", timeout=60, json={
        "model": "tiny", "messages": question_with("red.png"), "max_tokens": 8, "temperature": 0})
    assert "warning" not in plain.json()


def test_the_request_lmms_eval_sends_is_answered(server, expected_answer):
    """lmms-eval's openai_compatible model posts this shape (the question's text, then the image as a PNG
    data URL); its chat variant may put the image first."""
    text, image = {"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": data_url(picture())}}
    for content in ([text, image], [image, text]):
        payload = {"messages": [{"role": "user", "content": content}], "model": "tiny", "max_tokens": 8, "temperature": 0}
        reply = httpx.post(f"{server[0]}/v1/chat/completions", json=payload, timeout=60)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == expected_answer
    assert httpx.get(f"{server[0]}/health").json() == {"status": "ok", "model": "tiny"}


def test_an_api_key_guards_the_v1_routes(server):
    from fastapi.testclient import TestClient

    from minigpt.inference.loading import image_processor_for
    from minigpt.config.loader import load_config
    from minigpt.inference.loading import load_for_inference
    from minigpt.serving.openai_api import ServedModel, create_app

    config = load_config(REPO / "eval_configs/tiny_eval.yaml", server[2], for_training=False)
    served = ServedModel("tiny", load_for_inference(config, torch.device("cpu")), image_processor_for(config), server[1])
    app = TestClient(create_app(served, api_key="s3cret"))
    refused = app.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert app.get("/v1/models").status_code == 401
    assert app.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["data"][0]["id"] == "tiny"
    assert app.get("/health").status_code == 200  # for load balancers, without the key


def test_text_completions_continue_the_prompt_as_written(server):
    """/v1/completions: the prompt with BOS and no template, greedy as the model generates it in this
    process; echo, n answers to each of several prompts in order, OpenAI's default of 16 new tokens, and a
    stream whose pieces join to the whole answer."""
    import torch

    from minigpt.config.loader import load_config
    from minigpt.conversation.collator import collator_for
    from minigpt.inference.loading import load_for_inference

    config = load_config(REPO / "eval_configs/tiny_eval.yaml", server[2], for_training=False)
    torch.manual_seed(config.run.seed)
    model = load_for_inference(config, torch.device("cpu"))
    prompt = "a small red circle and"
    batch = collator_for(model).generation_batch([{"id": "p", "turns": [], "completion_prompt": prompt}])
    assert batch["input_ids"][0].tolist()[0] == model.tokenizer.bos_token_id
    expected = model.generate_counted(batch, max_new_tokens=8, repetition_penalty=1.0)[0].text

    api = client(server)
    reply = api.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text == expected
    assert api.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0,
                                  echo=True).choices[0].text == prompt + expected
    several = api.completions.create(model="tiny", prompt=[prompt, "two blue squares"], n=2, temperature=0)
    assert [choice.index for choice in several.choices] == [0, 1, 2, 3] and several.choices[0].text == \
        several.choices[1].text and several.usage.completion_tokens <= 4 * 16
    streamed = api.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == expected


@pytest.mark.parametrize("extra, param, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "is for /v1/chat/completions"),
    ({"prompt": "look: <ImageHere>"}, "prompt", "text only"),
    ({"prompt": ""}, "prompt", "non-empty string"),
    ({"suffix": " end."}, "suffix", "not supported"),
    ({"prompt": ["a", "b"], "stream": True}, "prompt", "stream takes one prompt"),
    ({"max_tokens": 4000}, "max_tokens", "ask for at most"),
])
def test_bad_text_completions_are_refused_by_name(server, extra, param, message):
    reply = httpx.post(f"{server[0]}/v1/completions", timeout=60, json={"model": "tiny", "prompt": "a red", **extra})
    assert reply.status_code == 400 and message in reply.json()["error"]["message"], reply.json()
    assert reply.json()["error"]["param"] == param


def test_several_images_in_a_conversation_each_get_their_slots(server):
    """A second image sent with a later question gets its own slots in that turn: the answer is the one
    the model gives in this process to the same two images and turns, and differs from the answer with
    the second image swapped; more images than --max-images are refused by name."""
    import torch

    from minigpt.config.loader import load_config
    from minigpt.conversation.collator import collator_for
    from minigpt.conversation.template import ASSISTANT, USER
    from minigpt.inference.loading import image_processor_for, load_for_inference

    config = load_config(REPO / "eval_configs/tiny_eval.yaml", server[2], for_training=False)
    torch.manual_seed(config.run.seed)
    model, processor = load_for_inference(config, torch.device("cpu")), image_processor_for(config)
    blue = Image.new("RGB", (64, 64), "blue")

    def conversation(second: Image.Image) -> list[dict]:
        return question_with(data_url(picture())) + [{"role": "assistant", "content": "red"}, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(second)}}, {"type": "text", "text": "And this one?"}]}]

    def in_process(second: Image.Image) -> str:
        pixels = [processor(picture()), processor(second)]
        sample = {"id": "s", "image": pixels[0], "images": pixels, "image_turns": [0, 1], "turns": [
            (USER, QUESTION), (ASSISTANT, "red"), (USER, "And this one?")]}
        batch = collator_for(model).generation_batch([sample])
        return model.generate_counted(batch, max_new_tokens=8, repetition_penalty=1.0)[0].text

    api = client(server)
    answers = {name: api.chat.completions.create(model="tiny", messages=conversation(image), max_tokens=8,
                                                 temperature=0).choices[0].message.content
               for name, image in (("blue", blue), ("red", picture()))}
    assert answers["blue"] == in_process(blue) and answers["red"] == in_process(picture())
    assert answers["blue"] != answers["red"]
    five = question_with(data_url(picture())) + [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(blue)}} for _ in range(4)]}]
    with pytest.raises(openai.BadRequestError, match="at most 4 images here"):
        api.chat.completions.create(model="tiny", messages=five, max_tokens=8)
