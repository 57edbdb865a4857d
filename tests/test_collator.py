"""Label masking and the token budget: only answer tokens carry labels, for every template."""
import pytest
import torch

from minigpt.conversation.collator import IGNORE_INDEX, ConversationCollator, UnsupervisedSampleError
from minigpt.conversation.template import ASSISTANT, USER, ConversationError, PromptTemplate
from minigpt.models.tokenizer import load_tokenizer, train_tokenizer

VICUNA = PromptTemplate("###Human: {} ###Assistant: ", "###")
LLAMA2 = PromptTemplate("[INST] {} [/INST] ", "</s>")
IMAGE_TOKENS = 4


@pytest.fixture(scope="module")
def tokenizer(shapes_dir):
    return load_tokenizer(shapes_dir / "tokenizer")


def sample(turns, image=True, sample_id="s0"):
    return {"id": sample_id, "dataset": "test", "image": torch.zeros(3, 8, 8) if image else None, "turns": turns}


def supervised_text(tokenizer, batch, row=0):
    labels = batch["labels"][row]
    return tokenizer.decode(labels[labels != IGNORE_INDEX])


@pytest.mark.parametrize("template", [VICUNA, LLAMA2], ids=["vicuna_v0", "llama2"])
def test_only_answers_are_supervised(tokenizer, template):
    collator = ConversationCollator(tokenizer, template, IMAGE_TOKENS, max_txt_len=200)
    turns = [(USER, "What color is the circle?"), (ASSISTANT, "red"),
             (USER, "How many shapes are there?"), (ASSISTANT, "two")]
    batch = collator([sample(turns)])
    end = template.end_sym
    assert supervised_text(tokenizer, batch).replace(" ", "") == f"red{end}two{end}"
    # the prompt text, the image slots and BOS are all unsupervised
    slots = batch["image_slots"][0]
    assert slots.sum() == IMAGE_TOKENS and (batch["labels"][0][slots] == IGNORE_INDEX).all()
    ids = batch["input_ids"][0].tolist()
    assert ids.count(tokenizer.bos_token_id) == 2  # one BOS per user turn
    if template is LLAMA2:
        eos_positions = (batch["labels"][0] == tokenizer.eos_token_id).nonzero().flatten()
        assert len(eos_positions) == 2  # each answer ends in a supervised </s>


def test_prompt_template_and_image_placeholder_layout(tokenizer):
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=200)
    batch = collator([sample([(USER, "Which shape?"), (ASSISTANT, "circle")])])
    ids = batch["input_ids"][0]
    slots = batch["image_slots"][0]
    before = tokenizer.decode(ids[: slots.nonzero()[0].item()], skip_special_tokens=True)
    after = tokenizer.decode(ids[slots.nonzero()[-1].item() + 1:], skip_special_tokens=True)
    assert before.replace(" ", "") == "###Human:<Img>"
    assert after.replace(" ", "") == "</Img>Whichshape?###Assistant:circle###"


def test_stage1_caption_is_image_then_caption(tokenizer):
    collator = ConversationCollator(tokenizer, PromptTemplate("", "\n"), IMAGE_TOKENS, max_txt_len=200)
    batch = collator([sample([(ASSISTANT, "a red circle")])])
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == tokenizer.bos_token_id and batch["image_slots"][0][1:1 + IMAGE_TOKENS].all()
    assert supervised_text(tokenizer, batch).strip() == "a red circle"


def test_instruction_prompt_is_drawn_for_caption_samples(tokenizer):
    prompts = ["<Img><ImageHere></Img> Describe it.", "<Img><ImageHere></Img> What is this?"]
    template = PromptTemplate("###Human: {} ###Assistant: ", "###", prompts)
    collator = ConversationCollator(tokenizer, template, IMAGE_TOKENS, max_txt_len=200)
    texts = set()
    for index in range(20):
        batch = collator([sample([(ASSISTANT, "a red circle")], sample_id=f"id{index}")])
        texts.add(tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True))
        again = collator([sample([(ASSISTANT, "a red circle")], sample_id=f"id{index}")])
        assert torch.equal(batch["input_ids"], again["input_ids"])  # reproducible per sample id
    assert len(texts) == 2


def test_max_txt_len_cuts_what_follows_the_first_question_and_image_tokens_do_not_count(tokenizer):
    """As MiniGPT-4: the answers and later turns are cut at max_txt_len tokens; the prompt is not."""
    turns = [(USER, "What color is the circle?"), (ASSISTANT, "red"),
             (USER, "How many shapes are there?"), (ASSISTANT, "two")]
    full = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=500)([sample(turns)])
    assert full["truncated"] == [False]
    answer_ids = tokenizer("red###", add_special_tokens=False).input_ids
    second_question = tokenizer(VICUNA.wrap_user("How many shapes are there?"), add_special_tokens=False).input_ids
    for image_tokens in (IMAGE_TOKENS, IMAGE_TOKENS + 30):
        cut = ConversationCollator(tokenizer, VICUNA, image_tokens, max_txt_len=len(answer_ids) + 2)([sample(turns)])
        assert cut["truncated"] == [True] and cut["image_slots"].sum() == image_tokens
        assert supervised_text(tokenizer, cut).replace(" ", "") == "red###"
        labels, ids = cut["labels"][0].tolist(), cut["input_ids"][0].tolist()
        prompt_length = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        assert len(ids) == prompt_length + len(answer_ids) + 2  # the prompt whole, the target side at max_txt_len
        assert ids[-2:] == [tokenizer.bos_token_id, second_question[0]]  # cut inside the second question


def test_a_prompt_over_max_context_len_is_cut_to_it_as_the_original_cuts_it(tokenizer):
    turns = [(USER, "What color is the circle? " * 10), (ASSISTANT, "red")]
    batch = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=30, max_context_len=30)([sample(turns)])
    assert batch["truncated"] == [True] and batch["image_slots"].sum() == IMAGE_TOKENS
    labels = batch["labels"][0].tolist()
    assert next(i for i, label in enumerate(labels) if label != IGNORE_INDEX) == 1 + 30  # BOS + max_context_len
    assert supervised_text(tokenizer, batch).replace(" ", "") == "red###"


def test_a_cut_through_the_image_or_no_answer_token_is_skipped_and_counted_or_raises_in_strict_mode(tokenizer):
    good = sample([(USER, "Which shape?"), (ASSISTANT, "circle")], sample_id="good")
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=30, max_context_len=5)
    batch = collator([sample([(USER, "Which shape?"), (ASSISTANT, "circle")], sample_id="too_long"), good])
    assert batch["ids"] == [] and [s["reason"] for s in batch["skipped"]] == ["prompt over max_context_len"] * 2
    assert "max_context_len=5" in batch["skipped"][0]["detail"] and batch["skipped"][0]["id"] == "too_long"
    no_room = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=0)([good])
    assert no_room["skipped"][0]["reason"] == "no answer token fits" and no_room["ids"] == []
    fits = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=30, max_context_len=200)([good])
    assert fits["ids"] == ["good"] and fits["truncated"] == [False]
    with pytest.raises(UnsupervisedSampleError, match="too_long"):
        ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=30, strict=True, max_context_len=5)(
            [sample([(USER, "Which shape?"), (ASSISTANT, "circle")], sample_id="too_long")])


def test_unreadable_sample_reported_by_dataset_is_skipped(tokenizer):
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=100)
    batch = collator([{"id": "broken", "dataset": "x", "skip": ("unreadable image", "/a/b.jpg")},
                      sample([(USER, "Which shape?"), (ASSISTANT, "circle")], sample_id="ok")])
    assert batch["ids"] == ["ok"]
    assert batch["skipped"] == [{"dataset": "x", "id": "broken", "reason": "unreadable image", "detail": "/a/b.jpg"}]


def test_generation_batch_is_left_padded_and_ends_with_assistant_prompt(tokenizer):
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=100)
    short = sample([(USER, "Which shape?")], sample_id="a")
    long = sample([(USER, "Which shape?"), (ASSISTANT, "circle"), (USER, "And how many shapes are there?")], sample_id="b")
    batch = collator.generation_batch([short, long])
    mask = batch["attention_mask"]
    assert mask[1].all() and not mask[0].all() and mask[0, -1] == 1 and mask[0, 0] == 0
    for row in range(2):
        text = tokenizer.decode(batch["input_ids"][row][mask[row].bool()], skip_special_tokens=True)
        assert text.rstrip().endswith("###Assistant:")


@pytest.mark.parametrize("turns, has_image", [
    ([(USER, "What does <ImageHere> mean?"), (ASSISTANT, "nothing")], False),  # would take an image it lacks
    ([(USER, "Which colour?"), (ASSISTANT, "red <ImageHere>")], True),  # would train on placeholder tokens
    ([(USER, "Say <Img>."), (ASSISTANT, "<Img>")], True),
], ids=["question-text-only", "answer", "img-tag"])
def test_literal_image_markers_in_a_record_are_refused_by_id(tokenizer, turns, has_image):
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=200)
    batch = collator([sample(turns, image=has_image, sample_id="bad"), sample([(USER, "Which colour?"), (ASSISTANT, "red")])])
    assert [(s["id"], s["reason"]) for s in batch["skipped"]] == [("bad", "invalid conversation")]
    assert "holds the literal text" in batch["skipped"][0]["detail"] and batch["ids"] == ["s0"]
    assert batch["image_slots"].sum() == IMAGE_TOKENS  # the good sample's image alone
    strict = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=200, strict=True)
    with pytest.raises(ConversationError, match=r"sample 'bad': turn \d \((user|assistant)\) holds the literal text"):
        strict([sample(turns, image=has_image, sample_id="bad")])
    with pytest.raises(ConversationError, match="holds the literal text"):  # nor in a chat's question
        collator.generation_batch([sample([(USER, "What is <ImageHere>?")], image=has_image, sample_id="bad")])


def test_user_defined_symbols_do_not_cut_the_text(tmp_path):
    """A tokenizer trained with symbols that are always one piece ("red", "12": the tool-use data's
    colours and pixel coordinates) lists them among transformers' special tokens; the collator must
    tokenize text holding them as the whole text tokenizes, or generation speaks another dialect."""
    texts = ['{"tool": "cutout", "args": {"color": "red", "box": [12, 3, 40, 51]}}', "a large red circle"] * 50
    symbol_tokenizer = load_tokenizer(train_tokenizer(texts, tmp_path / "tok", vocab_size=300,
                                                      symbols=("red", "blue", "3", "12", "40", "51")))
    collator = ConversationCollator(symbol_tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=200)
    for text in texts[:2]:
        ids, slots = collator._tokenize(text)
        assert ids == symbol_tokenizer(text, add_special_tokens=False).input_ids and not any(slots)
    ids, _ = collator._tokenize("<s>" + texts[1])
    assert ids[0] == symbol_tokenizer.bos_token_id  # BOS still cuts the text


def test_several_images_each_get_slots_in_the_turn_they_came_with(tokenizer):
    """For generation (the API's conversations): images in `images`, the user turn of each in `image_turns`;
    two in one turn are two image prompts; a turn the conversation lacks is refused."""
    collator = ConversationCollator(tokenizer, VICUNA, IMAGE_TOKENS, max_txt_len=200)
    first, second = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    turns = [(USER, "What color is it?"), (ASSISTANT, "red"), (USER, "And this one?")]
    sample = {"id": "s", "image": first, "images": [first, second], "image_turns": [0, 1], "turns": turns}
    batch = collator.generation_batch([sample])
    assert batch["image_slots"][0].sum() == 2 * IMAGE_TOKENS and torch.equal(batch["images"], torch.stack([first, second]))
    text = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()], skip_special_tokens=True)
    assert text.replace(" ", "").count("<Img>") == 2
    assert text.replace(" ", "").index("Andthisone") > text.replace(" ", "").rindex("</Img>")  # the second image's turn
    both_first = collator.generation_batch([{**sample, "image_turns": [0, 0], "turns": turns[:1]}])
    assert both_first["image_slots"][0].sum() == 2 * IMAGE_TOKENS
    with pytest.raises(ConversationError, match="user turn 2, which it does not have"):
        collator.generation_batch([{**sample, "image_turns": [0, 2]}])
