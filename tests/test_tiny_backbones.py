"""The tiny configs of today's backbones (train_configs/tiny_qwen2_siglip.yaml, tiny_llama3_v2.yaml) run on
what dataset/tiny_backbones.py writes beside the shapes data: they load, a training step moves the
projector, and the model answers through its own chat template."""
import pytest
import torch
from PIL import Image

from conftest import REPO
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import IGNORE_INDEX, collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.chat import Chat, GenerationOptions
from minigpt.inference.loading import image_processor_for
from minigpt.synthetic.tiny_backbones import write_tiny_backbones


@pytest.fixture(scope="module")
def backbones(shapes_dir) -> dict:
    return write_tiny_backbones(shapes_dir)


def tiny_config(name: str, shapes_dir, backbones):
    return load_config(REPO / f"train_configs/{name}.yaml", [
        f"model.tokenizer={backbones['tokenizer-qwen2' if 'qwen2' in name else 'tokenizer-llama3']}",
        *([f"model.vit_model={backbones['siglip-tiny']}"] if "siglip" in name else []),
        f"datasets.sharegpt4v.build_info.ann_path={shapes_dir}/train.json",
        f"datasets.sharegpt4v.build_info.image_path={shapes_dir}/images",
        *([f"datasets.grounding.build_info.ann_path={shapes_dir}/grounding_train.json",
           f"datasets.grounding.build_info.image_path={shapes_dir}/images"] if "v2" in name else [])])


@pytest.mark.parametrize("name, end_of_turn", [("tiny_qwen2_siglip", "<|im_end|>"), ("tiny_llama3_v2", "<|eot_id|>")])
def test_a_tiny_config_of_todays_backbones_trains_a_step_and_chats(name, end_of_turn, shapes_dir, backbones):
    config = tiny_config(name, shapes_dir, backbones)
    torch.manual_seed(0)
    model = registry.get("model", config.model.arch).from_config(config.model)
    assert model.template.end_sym == end_of_turn and model.num_image_tokens == 16
    processor = image_processor_for(config)
    image = processor(Image.new("RGB", (64, 64), "red"))
    batch = collator_for(model)([{"id": "a", "image": image, "task": "vqa",
                                  "turns": [(USER, "What color is the circle?"), (ASSISTANT, "red")]}])
    supervised = batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()
    assert model.tokenizer.decode(supervised) == "red" + end_of_turn
    before = model.llama_proj.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    model(batch)["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, model.llama_proj.weight)
    chat = Chat(model.eval(), processor, GenerationOptions(max_new_tokens=4))
    chat.set_image(Image.new("RGB", (64, 64), "blue"))
    assert isinstance(chat.ask("What color is the circle?"), str)
