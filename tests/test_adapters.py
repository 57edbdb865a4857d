"""Task adapters (ConLoRA): placement, switching, selection, merged export, and training one adapter
without touching the others or the base model."""
import json
import os
import sys

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from conftest import REPO, free_port, run_script
from minigpt.common import registry
from minigpt.common.checkpoint import save_checkpoint
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.loading import load_for_inference
from minigpt.ops.export import export_peft

CONFIG = REPO / "train_configs/tiny_v2_adapters.yaml"


def adapter_options(shapes_dir, datasets=("sharegpt4v", "grounding")) -> list[str]:
    files = {"sharegpt4v": "train.json", "grounding": "grounding_train.json"}
    return [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"] + [
        option for name in datasets for option in (f"datasets.{name}.build_info.ann_path={shapes_dir}/{files[name]}",
                                                   f"datasets.{name}.build_info.image_path={shapes_dir}/images")]


def build(shapes_dir, *options, randomize: bool = True):
    """The tiny v2 model with its two adapters; their B matrices (zero at init) made random."""
    config = load_config(CONFIG, adapter_options(shapes_dir) + list(options))
    torch.manual_seed(0)
    model = registry.get("model", config.model.arch).from_config(config.model).eval()
    if randomize:
        torch.manual_seed(1)
        for key, param in model.named_parameters():
            if ".lora_B." in key:
                torch.nn.init.normal_(param, std=0.05)
    return model


def batch(model):
    torch.manual_seed(2)
    size = model.visual_encoder.patch_embed.img_size
    samples = [{"id": str(i), "image": torch.randn(3, *size), "turns": [(USER, q), (ASSISTANT, a)], "task": t}
               for i, (q, a, t) in enumerate([("the red square", "{<10><20><30><40>}", "refer"),
                                              ("What colors are in the image?", "red and blue", "vqa")])]
    return collator_for(model)(samples)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs, with_loss=False)["logits"]


def test_adapters_wrap_the_upper_vision_blocks_the_projector_and_the_llm(shapes_dir):
    model = build(shapes_dir)
    wrapped = {name for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert {"visual_encoder.blocks.1.attn.qkv", "visual_encoder.blocks.1.attn.proj", "llama_proj",
            "llama_model.model.layers.0.self_attn.q_proj", "llama_model.model.layers.1.self_attn.v_proj"} <= wrapped
    assert not any(name.startswith("visual_encoder.blocks.0.") for name in wrapped)  # only the last block
    assert model.adapters.names == ["vqa", "grounding"]
    assert not any(p.requires_grad for p in model.parameters())  # frozen parts, adapters frozen until trained
    model.adapters.set_trainable({"grounding"})
    trainable = {key for key, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in key and ".grounding." in key for key in trainable)


def test_switching_changes_outputs_and_restores_them_exactly(shapes_dir):
    model = build(shapes_dir)
    inputs = batch(model)
    base = logits(model, inputs)
    model.adapters.use("grounding")
    grounding = logits(model, inputs)
    model.adapters.use("vqa")
    vqa = logits(model, inputs)
    assert not torch.allclose(base, grounding, atol=1e-4) and not torch.allclose(grounding, vqa, atol=1e-4)
    model.adapters.use(None)
    assert torch.equal(logits(model, inputs), base)
    model.adapters.use("grounding")
    assert torch.equal(logits(model, inputs), grounding)


def test_vision_qkv_adapter_is_applied(shapes_dir):
    """EVA adds its q/v biases through F.linear on the qkv weight, which would skip a LoRA wrapper."""
    model = build(shapes_dir, "model.adapters.vqa.projector=false", "model.adapters.vqa.llm_target_modules=[]",
                  "model.adapters.vqa.vision_target_modules=[attn.qkv]")
    images = torch.randn(1, 3, *model.visual_encoder.patch_embed.img_size)
    with torch.no_grad():
        base = model.encode_image(images)
        model.adapters.use("vqa")
        adapted = model.encode_image(images)
    assert not torch.allclose(base, adapted, atol=1e-5)


def test_choose_by_name_task_or_request(shapes_dir):
    adapters = build(shapes_dir, randomize=False).adapters
    assert adapters.choose("refer") == "grounding" and adapters.choose("vqa") == "vqa"
    assert adapters.choose(None, "[identify] {<1><2><3><4>}") == "grounding"  # identifier typed in the question
    assert adapters.choose(None, "What is this?") is None and adapters.choose("caption") is None  # base model
    adapters.selection = "vqa"
    assert adapters.choose("refer") == "vqa"
    adapters.selection = "none"
    assert adapters.choose("refer") is None
    with pytest.raises(KeyError, match="no adapter 'ocr'"):
        adapters.use("ocr")


def test_merged_weights_give_the_adapters_logits(shapes_dir):
    model = build(shapes_dir)
    inputs = batch(model)
    model.adapters.use("grounding")
    adapted = logits(model, inputs)
    merged = model.adapters.merged_state_dict("grounding")
    assert not any(".lora_" in key or ".base_layer." in key for key in merged)
    config = load_config(CONFIG, adapter_options(shapes_dir), for_training=False)
    config.model.adapters = {}
    plain = registry.get("model", "minigpt_v2").from_config(config.model).eval()
    result = plain.load_state_dict(merged, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.allclose(logits(plain, inputs), adapted, atol=1e-5)
    model.adapters.use(None)  # merging left the adapter model itself unchanged
    assert not torch.allclose(logits(model, inputs), adapted, atol=1e-4)


def test_each_task_adapter_exports_as_a_peft_folder_and_loads_back(shapes_dir, tmp_path):
    """`--format peft` writes adapters/NAME per task adapter: its LLM part opens with peft on the base LLM
    and gives our LLM's logits under that adapter; the exported config.yaml (adapters.NAME.peft_folder)
    rebuilds the model with every adapter's logits; a folder for another rank is refused by name."""
    model = build(shapes_dir)
    save_checkpoint(tmp_path / "run", 1, model.checkpoint_weights(), {"step": 1})
    config = load_config(REPO / "eval_configs/tiny_v2_adapters_eval.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", f"model.ckpt={tmp_path}/run"], for_training=False)
    written = export_peft(config, tmp_path / "peft")
    assert sorted(written) == ["adapter grounding", "adapter vqa", "base_llm"]
    inputs, input_ids = batch(model), torch.tensor([[1, 5, 9, 30, 7, 2]])
    reloaded = load_for_inference(load_config(tmp_path / "peft" / "config.yaml", [], for_training=False),
                                  torch.device("cpu"))
    for name in ("grounding", "vqa"):
        model.adapters.use(name)
        reloaded.adapters.use(name)
        with torch.no_grad():
            ours_llm = model.llama_model(input_ids=input_ids).logits
            base = AutoModelForCausalLM.from_pretrained(tmp_path / "peft" / "base_llm")
            base_logits = base(input_ids=input_ids).logits
            theirs = PeftModel.from_pretrained(base, tmp_path / "peft" / "adapters" / name).eval()(input_ids=input_ids)
        torch.testing.assert_close(theirs.logits, ours_llm, atol=1e-5, rtol=0)
        assert not torch.allclose(base_logits, ours_llm, atol=1e-3)  # the adapter matters
        torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs), atol=1e-5, rtol=0)

    with pytest.raises(ConfigError, match=r"model.adapters.vqa.peft_folder.*adapters/vqa: r is 8 there but "
                                          r"model.adapters.vqa.r is 4"):  # refused before any model is built
        load_config(tmp_path / "peft" / "config.yaml", ["model.adapters.vqa.r=4"], for_training=False)
    (tmp_path / "peft" / "adapters" / "vqa" / "vision_projector.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"adapters/vqa: not a task adapter folder \(no vision_projector"):
        load_config(tmp_path / "peft" / "config.yaml", [], for_training=False)


def test_adapter_config_errors(shapes_dir):
    def error(*options):
        with pytest.raises(ConfigError) as info:
            load_config(CONFIG, adapter_options(shapes_dir) + list(options))
        return str(info.value)

    assert "datasets.grounding.adapter: no adapter 'ocr'" in error("datasets.grounding.adapter=ocr")
    assert "task 'vqa' already selects adapter 'vqa'" in error("model.adapters.grounding.tasks=[refer,vqa]")
    assert "vision_blocks: must be between 0 and the encoder's 2 blocks" in error("model.adapters.vqa.vision_blocks=3")
    assert "model.adapter: 'ocr' is not auto, none" in error("model.adapter=ocr")
    assert "replace the single LLM LoRA" in error("model.lora_r=8")
    assert "must name the adapter it trains" in error("datasets.grounding.adapter=null")
    # cached image features would be those of whichever adapter encoded the image first
    assert "adapter 'vqa' puts LoRA in the vision encoder" in error("model.feature_cache_gb=0.1")
    vision_free = [f"model.adapters.{name}.vision_blocks=0" for name in ("vqa", "grounding")]
    assert load_config(CONFIG, adapter_options(shapes_dir) + vision_free + ["model.feature_cache_gb=0.1"]).model.feature_cache_gb == 0.1


@pytest.mark.slow
def test_training_one_adapter_leaves_the_others_and_the_base_unchanged(shapes_dir, tmp_path):
    """Start from a checkpoint holding both adapters; train only `grounding` through train.py; then the
    `vqa` adapter and every base weight are bit-identical, and the merged export answers like the adapter."""
    model = build(shapes_dir)
    start = tmp_path / "start"
    start.mkdir()
    save_file(model.checkpoint_weights(), start / "model.safetensors")
    config = OmegaConf.load(CONFIG)
    del config.datasets.sharegpt4v  # grounding data only: the vqa adapter is never selected
    OmegaConf.save(config, tmp_path / "grounding_only.yaml")
    out = tmp_path / "run"
    run_script(["train.py", "--cfg-path", str(tmp_path / "grounding_only.yaml"), "--options",
                *adapter_options(shapes_dir, datasets=["grounding"]), f"model.ckpt={start}",
                "run.iters_per_epoch=4", "run.warmup_steps=0", "datasets.grounding.batch_size=4",
                f"run.output_dir={out}"])
    before = load_file(start / "model.safetensors")
    after = load_file(out / "checkpoint_0000004" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(".lora_" in key and ".grounding." in key for key in changed)
    assert any(key.startswith("visual_encoder.") for key in changed) and "llama_proj.lora_A.grounding.weight" in changed

    # The trained adapter answers through demo.py, chosen by each record's task; merged, it answers alike.
    questions = tmp_path / "questions.json"
    records = json.loads((shapes_dir / "grounding_test.json").read_text())[:4]
    questions.write_text(json.dumps(records))
    demo = ["demo.py", "--cfg-path", "eval_configs/tiny_v2_adapters_eval.yaml", "--json", "--cpu",
            "--questions", str(questions), "--image-root", str(shapes_dir / "images"), "--max-new-tokens", "12",
            "--save-dir", str(tmp_path / "demo"), "--options", f"model.tokenizer={shapes_dir}/tokenizer"]
    adapted = [json.loads(line) for line in run_script(demo + [f"model.ckpt={out}"]).stdout.splitlines()]
    assert [a["adapter"] for a in adapted] == ["grounding"] * 4
    run_script(["-m", "minigpt", "export", "--cfg-path", "eval_configs/tiny_v2_adapters_eval.yaml",
                "--adapter", "grounding", "--out", str(tmp_path / "merged"),
                "--options", f"model.tokenizer={shapes_dir}/tokenizer", f"model.ckpt={out}"])
    merged_demo = [a if a != "eval_configs/tiny_v2_adapters_eval.yaml" else str(tmp_path / "merged" / "config.yaml")
                   for a in demo]
    merged = [json.loads(line) for line in run_script(merged_demo).stdout.splitlines()]
    assert [m["answer"] for m in merged] == [a["answer"] for a in adapted]


@pytest.mark.slow
def test_two_ranks_route_batches_to_their_data_sets_adapters(shapes_dir, tmp_path):
    """Under DDP, a step trains only the drawn data set's adapter; the idle one must not stall the
    gradient all-reduce. Both adapters learn, the frozen base stays as it was."""
    start = build(shapes_dir).checkpoint_weights()
    save_file(start, tmp_path / "start.safetensors")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "run"
    run_script([torchrun, "--nproc-per-node", "2", "--master-port", free_port(), "train.py", "--cfg-path", str(CONFIG),
                "--options", *adapter_options(shapes_dir), f"model.ckpt={tmp_path / 'start.safetensors'}",
                "run.iters_per_epoch=6", "run.warmup_steps=0", "datasets.grounding.batch_size=2",
                "datasets.sharegpt4v.batch_size=2", f"run.output_dir={out}"])
    after = load_file(out / "checkpoint_0000006" / "model.safetensors")
    changed = {key for key in after if not torch.equal(start[key], after[key])}
    assert {key.split(".lora_")[1].split(".")[1] for key in changed} == {"vqa", "grounding"}
    assert all(".lora_" in key for key in changed)
