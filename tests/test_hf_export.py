"""minigpt export --format hf: folders that plain transformers opens, offline, and that give our model's
logits and greedy answer: MiniGPT-4 as a Blip2ForConditionalGeneration folder, MiniGPT-v2 as a Llama folder,
a Blip2VisionModel folder and the projector (put together by the lines in docs/demos-and-serving.md)."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForConditionalGeneration

from conftest import REPO, fit_answers, run_script
from minigpt.common import registry
from minigpt.common.checkpoint import save_checkpoint
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.processors.image import Blip2ImageProcessor
from minigpt.ops.hf_export import IMAGE_TOKEN, export_hf
from minigpt.synthetic.family_tokenizers import FAMILIES, corpus_of, write_family_tokenizer

QUESTION, ANSWER = "What color is the circle?", "red"


def picture(side: int = 90) -> Image.Image:
    """A red disc on grey, not at the model's input size (so the processors' resize is exercised too)."""
    pixels = np.full((side, side + 10, 3), 128, dtype=np.uint8)
    rows, cols = np.ogrid[:side, :side + 10]
    pixels[(rows - side // 2) ** 2 + (cols - side // 2) ** 2 < (side // 4) ** 2] = (220, 30, 30)
    return Image.fromarray(pixels)


def trained_model(shapes_dir, tmp_path, cfg: str, arch: str, question: str):
    """A tiny model fitted to answer `question` about picture() with ANSWER (so greedy decoding has an
    answer to give), saved as a checkpoint; -> (model, its config options)."""
    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"]
    config = load_config(REPO / cfg, options, for_training=False)
    torch.manual_seed(0)
    model = registry.get("model", arch).from_config(config.model)
    image = Blip2ImageProcessor(config.model.image_size)(picture())
    fit_answers(model, [{"id": "0", "image": image, "turns": [(USER, question), (ASSISTANT, ANSWER)]}])
    save_checkpoint(tmp_path / "run", 1, model.checkpoint_weights(), {"step": 1})
    return model, [f"model.tokenizer={shapes_dir}/tokenizer", f"model.ckpt={tmp_path}/run"]


def our_prompt(model, image: torch.Tensor, question: str) -> dict:
    return collator_for(model).generation_batch([{"id": "0", "image": image, "turns": [(USER, question)]}])


def user_message(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@pytest.mark.slow
def test_minigpt4_opens_as_blip2_with_our_logits_and_greedy_answer(shapes_dir, tmp_path):
    model, options = trained_model(shapes_dir, tmp_path, "eval_configs/tiny_eval.yaml", "minigpt4", QUESTION)
    out = tmp_path / "hf"
    run_script(["-m", "minigpt", "export", "--cfg-path", "eval_configs/tiny_eval.yaml", "--options", *options,
                "--out", str(out), "--format", "hf", "--max-shard-size", "200KB"])
    assert len(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]) > 50
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1  # sharded
    hf, loading = Blip2ForConditionalGeneration.from_pretrained(str(out), local_files_only=True,
                                                                output_loading_info=True)
    assert not any(loading.values()), loading  # every weight has its place, none is left over
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert hf.config.image_token_index == image_token and hf.config.text_config.model_type == "llama"

    # The image processor gives our eval transform's pixels, the chat template our token ids.
    pixel_values = AutoImageProcessor.from_pretrained(str(out))(picture(), return_tensors="pt").pixel_values
    ours = Blip2ImageProcessor(64)(picture())
    torch.testing.assert_close(pixel_values[0], ours, atol=1e-5, rtol=0)
    batch = our_prompt(model, ours, QUESTION)
    input_ids = tokenizer.apply_chat_template(user_message(QUESTION), add_generation_prompt=True,
                                              return_tensors="pt")["input_ids"]
    assert input_ids.tolist() == [batch["input_ids"][0].masked_fill(batch["image_slots"][0], image_token).tolist()]

    with torch.no_grad():
        our_logits = model(batch, with_loss=False)["logits"]  # [1, T, V]
        hf_logits = hf(pixel_values=pixel_values, input_ids=input_ids).logits  # [1, T, V + 1]: the image token's row
    torch.testing.assert_close(hf_logits[..., :our_logits.shape[-1]], our_logits, atol=1e-4, rtol=0)

    our_answer = model.generate(batch, max_new_tokens=10, repetition_penalty=1.0)[0]
    output_ids = hf.generate(pixel_values=pixel_values, input_ids=input_ids, max_new_tokens=10, tokenizer=tokenizer)
    hf_answer = tokenizer.decode(output_ids[0, input_ids.shape[1]:], skip_special_tokens=True)
    assert our_answer == ANSWER
    assert hf_answer.split("###")[0].strip() == our_answer and hf_answer.endswith("###")  # stopped at our end marker
    assert run_docs_snippet("**MiniGPT-4** is BLIP-2's", out, tmp_path, QUESTION)["answer"] == ANSWER


def run_docs_snippet(title: str, folder, tmp_path, question: str) -> dict:
    """Run the python block that follows `title` in docs/demos-and-serving.md on `folder`, with picture()
    as its photo and `question` as its question; -> the variables it set."""
    text = (REPO / "docs/demos-and-serving.md").read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index(title):], re.S).group(1)
    picture().save(tmp_path / "photo.png")
    code = re.sub(r'folder = "[^"]+"', f"folder = {str(folder)!r}", code)
    code = code.replace('"photo.jpg"', repr(str(tmp_path / "photo.png")))
    code = re.sub(r"(\[vqa\] )?What is in the image\?", question, code)
    scope = {}
    exec(compile(code, "docs/demos-and-serving.md", "exec"), scope)
    return scope


@pytest.mark.slow
def test_minigpt_v2_export_runs_through_the_docs_lines_with_our_logits_and_answer(shapes_dir, tmp_path):
    question = f"[vqa] {QUESTION}"
    model, options = trained_model(shapes_dir, tmp_path, "eval_configs/tiny_v2_eval.yaml", "minigpt_v2", question)
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options, for_training=False)
    out = export_hf(config, tmp_path / "hf")
    assert sorted(path.name for path in out.iterdir()) == ["llm", "projector.safetensors", "vision"]
    scope = run_docs_snippet("**MiniGPT-v2** joins", out, tmp_path, question)

    batch = our_prompt(model, Blip2ImageProcessor(config.model.image_size)(picture()), question)
    with torch.no_grad():
        our_logits = model(batch, with_loss=False)["logits"]
    torch.testing.assert_close(scope["logits"][..., :our_logits.shape[-1]], our_logits, atol=1e-4, rtol=0)
    assert model.generate(batch, max_new_tokens=10, repetition_penalty=1.0)[0] == ANSWER == scope["answer"]

    # Half precision: every weight file holds bfloat16, and the configs say so.
    half = export_hf(config, tmp_path / "bf16", dtype="bfloat16")
    for file in [half / "llm/model.safetensors", half / "vision/model.safetensors", half / "projector.safetensors"]:
        with safe_open(str(file), framework="pt") as reader:
            assert {reader.get_tensor(key).dtype for key in reader.keys()} == {torch.bfloat16}, file
    assert json.loads((half / "llm" / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_model_with_sub_images_is_refused_naming_the_other_formats(shapes_dir, tmp_path):
    config = load_config(REPO / "eval_configs/tiny_subimages_eval.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"], for_training=False)
    with pytest.raises(ConfigError, match="no transformers counterpart.*--format merged"):
        export_hf(config, tmp_path / "hf")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_llm_family_exports_with_its_own_template_and_our_logits(family, shapes_dir, tmp_path):
    """MiniGPT-v2 with an LLM of each family prompted through its own chat template: the exported
    tokenizer's template writes our prompt token for token (image tokens where our image slots are), and
    the docs' lines give our logits."""
    tokenizer = write_family_tokenizer(family, corpus_of(shapes_dir / "train.json"), tmp_path / "tokenizer")
    shape = {"model_type": FAMILIES[family].model_type, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "max_position_embeddings": 512, **FAMILIES[family].config}
    options = [f"model.tokenizer={tokenizer}", "model.ckpt=null", "model.prompt_template=auto",
               f"model.llama_config={json.dumps(shape)}", *(["model.attn_implementation=eager"] if family == "gemma2" else [])]
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options, for_training=False)
    torch.manual_seed(config.run.seed)
    model = registry.get("model", "minigpt_v2").from_config(config.model).eval()
    out = export_hf(config, tmp_path / "hf")
    question = f"[vqa] {QUESTION}"
    scope = run_docs_snippet("**MiniGPT-v2** joins", out, tmp_path, question)
    batch = our_prompt(model, Blip2ImageProcessor(config.model.image_size)(picture()), question)
    image_id = scope["tokenizer"].convert_tokens_to_ids(IMAGE_TOKEN)
    assert scope["input_ids"][0].tolist() == batch["input_ids"][0].masked_fill(batch["image_slots"][0], image_id).tolist()
    with torch.no_grad():
        our_logits = model(batch, with_loss=False)["logits"]
    torch.testing.assert_close(scope["logits"][..., :our_logits.shape[-1]], our_logits, atol=1e-4, rtol=0)
