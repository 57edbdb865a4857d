"""Today's LLM families with their own chat templates (`model.prompt_template: auto`): for each of Qwen2,
Qwen3, Llama-3, Mistral, Gemma 2, Gemma 3 and Phi-3, a tokenizer in the family's style (trained offline) and a tiny
random-weight model of the family's architecture. Labels fall on the answers and the end-of-turn token
only, a generation prompt is the training prompt up to the answer, one training step runs (LoRA on the
LLM too), chat answers and stops, task adapters attach and the OpenAI-style API answers."""
import base64
import json

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import REPO, stage2_options
from minigpt.common import registry
from minigpt.common.errors import ConfigError, InputError
from minigpt.config.loader import load_config
from minigpt.conversation.chat_template import ChatTemplateError, ChatTemplatePrompts
from minigpt.conversation.collator import IGNORE_INDEX, collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.chat import Chat, GenerationOptions
from minigpt.inference.loading import image_processor_for
from minigpt.models.tokenizer import load_tokenizer
from minigpt.serving.openai_api import ServedModel, create_app
from minigpt.synthetic.family_tokenizers import FAMILIES, corpus_of, write_family_tokenizer

TWO_TURNS = [(USER, "What color is the circle?"), (ASSISTANT, "red"), (USER, "How many shapes are there?"),
             (ASSISTANT, "two")]


@pytest.fixture(scope="module")
def family_tokenizers(shapes_dir, tmp_path_factory) -> dict:
    """family -> tokenizer folder, trained on the shapes data set's questions and answers."""
    texts = corpus_of(shapes_dir / "train.json")
    out = tmp_path_factory.mktemp("families")
    return {name: write_family_tokenizer(name, texts, out / name) for name in FAMILIES}


def family_config(shapes_dir, tokenizer_dir, family: str, *options):
    shape = {"model_type": FAMILIES[family].model_type, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "max_position_embeddings": 512, **FAMILIES[family].config}
    return load_config(REPO / "train_configs/tiny_stage2.yaml", stage2_options(shapes_dir) + [
        "model.ckpt=null", f"model.tokenizer={tokenizer_dir}", f"model.llama_config={json.dumps(shape)}",
        "model.prompt_template=auto", *options])


def build(config):
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_only_answers_and_the_end_of_turn_are_supervised(family, family_tokenizers, shapes_dir):
    config = family_config(shapes_dir, family_tokenizers[family], family)
    model = build(config)
    tokenizer, template = model.tokenizer, model.template
    end_of_turn_id = tokenizer.convert_tokens_to_ids(template.end_sym)
    assert template.end_sym in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab())
    collator = collator_for(model)
    sample = {"id": "s", "image": torch.zeros(3, 64, 64), "turns": TWO_TURNS}
    encoded = collator.encode(sample)
    supervised = [(token, label) for token, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert all(token == label for token, label in supervised)
    expected = []
    for answer in ("red", "two"):
        expected += collator._tokenize(answer)[0] + [end_of_turn_id]
    assert [token for token, _ in supervised] == expected  # nothing of the role markers, token for token
    assert sum(encoded.image_slots) == model.num_image_tokens
    prompt = collator.encode({**sample, "turns": TWO_TURNS[:1]}, for_generation=True)
    assert encoded.input_ids[:len(prompt.input_ids)] == prompt.input_ids  # generation prompt = training prefix
    assert tokenizer.pad_token_id is not None
    if tokenizer.unk_token is None:  # byte-level families: the pad is a token of their own or the EOS, never unk
        assert tokenizer.pad_token in (FAMILIES[family].specials["pad"], tokenizer.eos_token)


@pytest.mark.parametrize("family, start", [
    ("qwen2", "<|im_start|>system\nYou see shapes.<|im_end|>\n<|im_start|>user\n"),
    ("gemma3", "<bos><start_of_turn>user\nYou see shapes.\n\nWhat color"),  # folded into the first user turn
])
def test_a_system_prompt_is_kept_where_the_template_puts_it(family, start, family_tokenizers, shapes_dir):
    config = family_config(shapes_dir, family_tokenizers[family], family, "model.system_prompt=You see shapes.")
    model = build(config)
    encoded = collator_for(model).encode({"id": "s", "image": None, "turns": TWO_TURNS[:2]})
    text = model.tokenizer.decode(encoded.input_ids).replace("> ", ">")  # (sentencepiece: a word start after markup)
    assert text.startswith(start), text
    assert "You are a helpful assistant" not in text


def test_a_tokenizer_without_a_chat_template_is_refused_by_name(shapes_dir):
    """At config validation, before anything is built, and by the template itself."""
    with pytest.raises(ConfigError, match="model.prompt_template: 'auto' takes the chat template of the tokenizer"):
        load_config(REPO / "train_configs/tiny_stage2.yaml",
                    stage2_options(shapes_dir) + ["model.ckpt=null", "model.prompt_template=auto"])
    tokenizer = load_tokenizer(shapes_dir / "tokenizer")
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        ChatTemplatePrompts(tokenizer, source=str(shapes_dir / "tokenizer"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_a_step_and_chats(family, family_tokenizers, shapes_dir):
    targets = json.dumps(list(FAMILIES[family].lora_target_modules))
    config = family_config(shapes_dir, family_tokenizers[family], family, "model.parts.llm.mode=lora",
                           "model.lora_r=4", f"model.lora_target_modules={targets}")
    model = build(config)
    assert any("lora" in name for name, p in model.llama_model.named_parameters() if p.requires_grad)
    samples = [{"id": str(i), "image": torch.randn(3, 64, 64), "turns": TWO_TURNS[:2]} for i in range(2)]
    model.train()
    loss = model(collator_for(model)(samples))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.llama_proj.weight.grad.abs().sum() > 0
    chat = Chat(model.eval(), image_processor_for(config), GenerationOptions(max_new_tokens=6, repetition_penalty=1.0))
    chat.set_image(Image.new("RGB", (64, 64), "red"))
    first, second = chat.ask("What color is the circle?"), chat.ask("How many shapes are there?")
    assert isinstance(first, str) and isinstance(second, str) and chat.turns[2] == (USER, "How many shapes are there?")
    answer = model.generate_counted(collator_for(model).generation_batch(
        [{"id": "q", "image": chat.image, "turns": TWO_TURNS[:1]}]), max_new_tokens=6, repetition_penalty=1.0)[0]
    assert 1 <= answer.token_count <= 6 and template_markup_absent(answer.text, family)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_takes_task_adapters_and_answers_over_the_api(family, family_tokenizers, shapes_dir, tmp_path):
    """ConLoRA task adapters attach to the family's own projections and switch the answer; the OpenAI-style
    API answers a chat request with an image through the family's template, markup-free."""
    targets = json.dumps(list(FAMILIES[family].lora_target_modules))
    config = family_config(shapes_dir, family_tokenizers[family], family, "model.parts.llm.mode=frozen",
                           f"model.adapters={{vqa: {{tasks: [vqa], r: 4, alpha: 8, vision_blocks: 0, "
                           f"llm_target_modules: {targets}}}}}")
    model = build(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # (zero at init: the adapter would change nothing)
    batch = collator_for(model)([{"id": "s", "image": torch.randn(3, 64, 64), "turns": TWO_TURNS[:2]}])
    with torch.no_grad():
        model.adapters.use(None)
        plain = model(batch)["loss"]
        model.adapters.use("vqa")
        adapted = model(batch)["loss"]
    assert torch.isfinite(adapted) and not torch.isclose(plain, adapted)
    model.adapters.use(None)

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(image)
    encoded = base64.b64encode(image.read_bytes()).decode()
    served = ServedModel(family, model, image_processor_for(config), tmp_path)
    reply = TestClient(create_app(served)).post("/v1/chat/completions", json={
        "model": family, "max_tokens": 6, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
            {"type": "text", "text": "What color is the circle?"}]}]})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and template_markup_absent(choice["message"]["content"], family)
    assert reply.json()["usage"]["completion_tokens"] <= 6


def template_markup_absent(text: str, family: str) -> bool:
    """A decoded answer never shows the template's markup (special tokens are dropped, the end of turn cuts)."""
    return not any(marker in text for marker in FAMILIES[family].markup)


def test_lora_targets_the_llm_lacks_are_refused_naming_its_layers(family_tokenizers, shapes_dir):
    config = family_config(shapes_dir, family_tokenizers["phi3"], "phi3", "model.parts.llm.mode=lora", "model.lora_r=4")
    with pytest.raises(InputError, match=r"model.lora_target_modules: the LLM \(phi3\) has no layer named q_proj, "
                                         r"v_proj; its linear layers are .*qkv_proj"):
        build(config)
