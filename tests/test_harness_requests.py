"""What an evaluation harness asks (serving/harness_requests.py): its prompt text becomes our template's user turn
with MiniGPT-v2's task identifier, answers are the chat engine's, and continuation scores are the losses that
`minigpt eval` ranks choices by, with whether greedy decoding writes them."""
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO, fit_answers
from minigpt.common.errors import InputError
from minigpt.config.loader import load_config
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.chat import GenerationOptions, choose_answers, generate_answers
from minigpt.inference.loading import Placement, load_model
from minigpt.serving.harness_requests import HarnessModel, HarnessQuestion


@pytest.fixture(scope="module")
def harness(shapes_dir) -> HarnessModel:
    """The tiny MiniGPT-v2 (random weights; its template writes "[vqa]")."""
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"], for_training=False)
    loaded = load_model(config, Placement())
    return HarnessModel(loaded.model, loaded.image_processor, batch_size=3)


def picture(colour: str) -> Image.Image:
    image = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(image).rectangle([6, 6, 30, 30], fill=colour)
    return image


def test_the_prompt_is_our_template_with_the_task_identifier(harness):
    question = HarnessQuestion("<image>\nWhat colour is the square?\nAnswer briefly.", [picture("red")], "vqa")
    sample = harness.sample(question, 0)
    assert sample["turns"] == [(USER, "What colour is the square?\nAnswer briefly.")]
    prompt = harness.collator.encode(sample, for_generation=True)
    text = harness.model.tokenizer.decode([i for i, slot in zip(prompt.input_ids, prompt.image_slots) if not slot])
    assert "[INST]" in text and "[vqa] What colour" in text and "<image>" not in text
    bare = harness.collator.encode(harness.sample(HarnessQuestion(question.text, question.images, None), 0), True)
    assert "[vqa]" not in harness.model.tokenizer.decode(bare.input_ids)


def test_answers_are_the_chat_engines_in_batches(harness):
    colours = ["red", "blue", "green", "yellow", "purple"]
    questions = [HarnessQuestion("<image> Which colors do you see?", [picture(c)], "vqa") for c in colours]
    options = GenerationOptions(max_new_tokens=6, repetition_penalty=1.0)
    answers = harness.answer(questions, options)  # batches of 3 and 2
    one_by_one = [generate_answers(harness.model, harness.collator, [harness.sample(q, 0)], options)[0]
                  for q in questions]
    assert answers == one_by_one and len(answers) == 5


def test_scores_rank_choices_as_minigpt_eval_does(harness):
    choices = ["red", "blue and green", "yellow"]
    docs = [("Which colors do you see?", picture("red")), ("Name the colors of the shapes.", picture("blue"))]
    questions = [HarnessQuestion(text, [image], "vqa", key=index)
                 for index, (text, image) in enumerate(docs) for _ in choices]
    scores = harness.score(questions, [f" {choice}" for _ in docs for choice in choices])
    samples = [{**harness.sample(HarnessQuestion(text, [image], "vqa"), index), "choices": choices}
               for index, (text, image) in enumerate(docs)]
    for scoring, field in (("total", "total_loss"), ("mean", "mean_loss")):
        picked = [choices[min(range(3), key=lambda k: getattr(scores[3 * d + k], field))] for d in range(2)]
        assert picked == choose_answers(harness.model, harness.collator, samples, scoring)
    expected = harness.model.answer_scores(harness.collator.scoring_batch(samples[:1], [choices])).losses("sum")
    assert [s.total_loss for s in scores[:3]] == pytest.approx(expected.tolist(), rel=1e-5)


def test_greedy_says_whether_generation_writes_the_continuation(shapes_dir):
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"], for_training=False)
    loaded = load_model(config, Placement())
    fitted = HarnessModel(loaded.model, loaded.image_processor)
    question = HarnessQuestion("Which colors do you see?", [picture("red")], "vqa")
    sample = fitted.sample(question, 0)
    fit_answers(fitted.model, [{**sample, "turns": [*sample["turns"], (ASSISTANT, "red")]}], steps=40)
    assert fitted.answer([question], GenerationOptions(max_new_tokens=6, repetition_penalty=1.0)) == ["red"]
    red, blue = fitted.score([question, question], [" red", " blue"])
    assert red.greedy and not blue.greedy
    assert red.total_loss < blue.total_loss and red.mean_loss < blue.mean_loss


def test_several_images_are_refused_by_name(harness):
    with pytest.raises(InputError, match="shows 2 images; this model takes one image"):
        harness.sample(HarnessQuestion("<image><image> Same?", [picture("red"), picture("blue")]), 4)


def test_a_text_only_question_has_no_image(harness):
    sample = harness.sample(HarnessQuestion("Say a colour.", []), 0)
    assert sample["image"] is None and not any(harness.collator.encode(sample, for_generation=True).image_slots)
    answer = harness.answer([HarnessQuestion("Say a colour.", [])], GenerationOptions(max_new_tokens=3))[0]
    assert answer == generate_answers(harness.model, harness.collator, [sample], GenerationOptions(max_new_tokens=3))[0]
    assert torch.isfinite(torch.tensor(harness.score([HarnessQuestion("Say a colour.", [])], ["red"])[0].total_loss))
