"""Our prompt format as a Jinja chat template (conversation/jinja_template.py): the text it writes for each
template and chat style, and the token ids, which for a one-turn prompt are our collator's exactly."""
import jinja2
import pytest
import torch
from transformers import AddedToken, AutoTokenizer

from minigpt.conversation.chat_styles import CHAT_STYLES
from minigpt.conversation.collator import ConversationCollator
from minigpt.conversation.jinja_template import jinja_chat_template
from minigpt.conversation.template import USER, PromptTemplate

IMAGE = "<image>"
MINIGPT4 = PromptTemplate("###Human: {} ###Assistant: ", "###")
MINIGPT_V2 = PromptTemplate("[INST] {} [/INST]", "</s>", task_identifiers=True, instruction_suffix=" ")


@pytest.fixture
def tokenizer(shapes_dir):
    """The shapes tokenizer as an export writes it: `legacy` (a word start before every piece between
    special tokens) and the image token."""
    tokenizer = AutoTokenizer.from_pretrained(str(shapes_dir / "tokenizer"), legacy=True)
    tokenizer.add_tokens([AddedToken(IMAGE, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def render(tokenizer, template: PromptTemplate, messages: list[dict], **options) -> str:
    tokenizer.chat_template = jinja_chat_template(template, IMAGE * 2)
    return tokenizer.apply_chat_template(messages, tokenize=False, **options)


def image_turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def test_the_training_templates_put_the_image_tokens_where_we_do(tokenizer):
    two_turns = [image_turn("What color?"), {"role": "assistant", "content": "red"},
                 {"role": "user", "content": "And the shape?"}]
    assert render(tokenizer, MINIGPT4, two_turns) == (
        "<s>###Human: <Img><image><image></Img> What color? ###Assistant: red###"
        "<s>###Human: And the shape? ###Assistant: ")
    assert render(tokenizer, MINIGPT_V2, [image_turn("[vqa] What color?")]) == \
        "<s>[INST] <Img><image><image></Img> [vqa] What color?  [/INST]"  # v2's suffix: two spaces
    assert render(tokenizer, MINIGPT4, [{"role": "user", "content": "Hello"}]) == "<s>###Human: Hello ###Assistant: "


def test_the_original_demos_styles(tokenizer):
    vicuna = PromptTemplate("###Human: {} ###Assistant: ", "###", chat_style=CHAT_STYLES["vicuna_v0"])
    assert render(tokenizer, vicuna, [image_turn("What color?")], add_generation_prompt=True) == (
        "<s>Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it "
        "to you. Please answer my questions.###Human: <Img><image><image></Img> What color?###Assistant: ")
    v2 = PromptTemplate("[INST] {} [/INST]", "</s>", chat_style=CHAT_STYLES["minigptv2"])
    assert render(tokenizer, v2, [image_turn("[vqa] What color?")], add_generation_prompt=True) == \
        "<s><s>[INST] <Img><image><image></Img> [vqa] What color? [/INST]"


@pytest.mark.parametrize("template", [MINIGPT4, MINIGPT_V2, PromptTemplate(
    "###Human: {} ###Assistant: ", "###", chat_style=CHAT_STYLES["llama2"])], ids=["minigpt4", "v2", "llama2"])
def test_a_one_turn_prompt_tokenizes_to_our_collators_ids(tokenizer, template):
    collator = ConversationCollator(tokenizer, template, num_image_tokens=2)
    question = "[vqa] What color is the big circle?"
    ours = collator.encode({"id": "0", "image": torch.zeros(3, 8, 8), "turns": [(USER, question)]},
                           for_generation=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    expected = [image_id if slot else token for token, slot in zip(ours.input_ids, ours.image_slots)]
    tokenizer.chat_template = jinja_chat_template(template, IMAGE * 2)
    assert tokenizer.apply_chat_template([image_turn(question)], add_generation_prompt=True)["input_ids"] == expected


def test_a_system_message_is_refused(tokenizer):
    with pytest.raises(jinja2.TemplateError, match="system messages"):
        render(tokenizer, MINIGPT4, [{"role": "system", "content": "Be brief."}, image_turn("What color?")])
