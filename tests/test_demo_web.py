"""The web demo (minigpt web, demo_web.py): its callbacks directly, and the whole page driven from headless Chromium."""
import re
import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO
from minigpt.serving import web_demo
from minigpt.serving.web_demo import Session, WebChat

QUESTION = "Which colors do you see?"


def red_square(path):
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).rectangle([32, 32, 159, 159], fill=(220, 30, 30))  # 128 x 128 px
    image.save(path)
    return path


@pytest.fixture(scope="module")
def tiny(shapes_dir):
    """(config options, model, image processor) of the tiny MiniGPT-4 with the demo's random weights."""
    from minigpt.inference.loading import image_processor_for
    from minigpt.config.loader import load_config
    from minigpt.inference.loading import load_for_inference

    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"]
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False)
    torch.manual_seed(config.run.seed)
    return options, load_for_inference(config, torch.device("cpu")), image_processor_for(config)


def test_uploads_that_are_not_images_or_too_large_get_a_message(tiny, tmp_path):
    web = WebChat(tiny[1], tiny[2], max_image_mb=0.01)
    (tmp_path / "notes.png").write_text("not an image")
    session, shown, chat, status = web.upload(str(tmp_path / "notes.png"))
    assert session.image is None and shown is None and "notes.png is not an image" in status
    Image.effect_noise((256, 256), 64).convert("RGB").save(tmp_path / "big.png")
    assert "the limit is 0 MB" in web.upload(str(tmp_path / "big.png"))[3]
    session, shown, chat, status = web.upload(str(red_square(tmp_path / "red.png")))
    assert session.image.size == (256, 256) and shown is session.image and chat == [] and "Image loaded" in status


def test_asking_streams_keeps_each_sessions_history_and_adds_the_task(tiny, tmp_path):
    web = WebChat(tiny[1], tiny[2], max_image_mb=20)
    session = web.upload(str(red_square(tmp_path / "red.png")))[0]
    updates = list(web.ask(session, QUESTION, "none", 1, 0.0, 16))
    session, chat = updates[-1][0], updates[-1][1]
    assert len(updates) > 2 and chat[-1]["role"] == "assistant"  # streamed: partial answers, then the last
    assert session.turns[0] == ("user", QUESTION) and chat[-1]["content"] == session.turns[1][1]
    beam_session = list(web.ask(Session(session.image), QUESTION, "refer", 2, 0.0, 16))[-1][0]
    assert beam_session.turns[0][1] == f"[refer] {QUESTION}"  # the selected task's identifier
    assert len(session.turns) == 2  # another session's question never reached this one
    cleared = web.reset(session)
    assert cleared[0].turns == [] and cleared[0].image is session.image and cleared[1] == []


def test_boxes_in_an_answer_are_drawn_on_the_image(tiny, tmp_path, monkeypatch):

    # The random tiny model names no boxes, so the answer is a MiniGPT-v2 grounding answer of our own.
    monkeypatch.setattr(web_demo, "stream_answer", lambda *args: iter(["<p>the red square</p> ", "{<12><12><62><62>}"]))
    web = WebChat(tiny[1], tiny[2], max_image_mb=20)
    session = web.upload(str(red_square(tmp_path / "red.png")))[0]
    session, chat, shown, _, status = list(web.ask(session, "the red square", "refer", 1, 0.0, 16))[-1]
    assert session.turns[0][1] == "[refer] the red square" and status == "1 box(es) drawn on the image."
    before, after = np.asarray(session.image).astype(int), np.asarray(shown).astype(int)
    changed = np.abs(before - after).sum(axis=2) > 0
    rows, columns = np.nonzero(changed)
    # The outline runs along the box (0-100 grid bins 12..62 of 256 px: about 32..160 px).
    assert changed.sum() > 200 and 25 <= columns.min() <= 40 and 150 <= columns.max() <= 175


def browser_or_skip():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        reason = "no chromium / chromedriver on PATH (.ci/run installs Debian's chromium and chromium-driver)"
        print(f"skipping the browser test: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
@pytest.mark.browser  # skipped without chromium, failed instead in CI (tests/ci_skips.py)
def test_the_page_answers_a_colour_question_in_chromium(tiny, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from minigpt.inference.chat import Chat, GenerationOptions

    browser = browser_or_skip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "demo_web.py", "--cfg-path", "eval_configs/tiny_eval.yaml", "--port", str(port),
                               "--options", *tiny[0]], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"demo_web.py did not start:\n{server.stdout.read()[-3000:]}")
            time.sleep(0.5)
        image_path = red_square(tmp_path / "red.png")
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#upload input[type=file]")).send_keys(str(image_path))
        wait.until(lambda b: "Image loaded" in b.find_element(By.ID, "status").text)
        browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
        browser.find_element(By.ID, "send").click()

        chat = Chat(tiny[1], tiny[2], GenerationOptions(max_new_tokens=128, repetition_penalty=1.0))
        chat.set_image(image_path)
        expected = re.findall(r"\w+", chat.ask(QUESTION))  # the page renders markdown: compare its words
        assert expected

        def answered(browser) -> bool:
            words = re.findall(r"\w+", browser.find_element(By.ID, "chat").text)
            return words[-len(expected):] == expected
        wait.until(answered)
        screenshot = tmp_path / "page.png"
        browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)
    page = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    red = int(((page[..., 0] > 190) & (page[..., 1] < 70) & (page[..., 2] < 70)).sum())
    assert red > 8000, f"the uploaded red square is not on the page ({red} red pixels; see {screenshot})"
