"""The composed model: shapes, frozen parts, the image splice, LLM loading paths, 8-bit inference."""
import pickle
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, stage2_options
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.memory import peak_memory_gib, reset_peak_memory
from minigpt.models.llm import load_llm_folder


def tiny_config(shapes_dir, *options):
    return load_config(REPO / "train_configs/tiny_stage2.yaml", stage2_options(shapes_dir) + ["model.ckpt=null", *options])


def build(config):
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model)


def batch_for(model, images, questions=("What color is the circle?",), answers=("red",)):
    samples = [{"id": str(i), "image": image, "turns": [(USER, q), (ASSISTANT, a)]}
               for i, (image, q, a) in enumerate(zip(images, questions, answers))]
    return collator_for(model)(samples)


def test_forward_shapes_and_part_modes(shapes_dir):
    config = tiny_config(shapes_dir, "model.parts.qformer.mode=frozen", "model.parts.llm.mode=frozen")
    model = build(config)
    images = torch.randn(2, 3, 64, 64)
    image_embeds = model.encode_image(images)
    assert image_embeds.shape == (2, 8, model.llama_model.config.hidden_size)  # 8 query tokens
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"llama_proj"}
    model.train()
    assert not model.visual_encoder.training and not model.Qformer.training and model.llama_proj.training
    output = model(batch_for(model, images, ["a?", "b?"], ["red", "blue"]))
    output["loss"].backward()
    assert model.llama_proj.weight.grad is not None and model.query_tokens.grad is None


def test_concat_projector_token_count(shapes_dir):
    model = build(tiny_config(shapes_dir, "model.has_qformer=false", "model.vit_config.patch_size=8"))
    assert model.Qformer is None and model.num_image_tokens == (64 // 8) ** 2 // 4
    assert model.encode_image(torch.randn(1, 3, 64, 64)).shape[1] == 16


def test_image_reaches_the_loss_and_prompt_tokens_do_not_count(shapes_dir):
    model = build(tiny_config(shapes_dir)).eval()
    images = torch.randn(1, 3, 64, 64)
    batch = batch_for(model, images)
    with torch.no_grad():
        loss = model(batch)["loss"]
        other_image = model(batch_for(model, torch.randn(1, 3, 64, 64)))["loss"]
        other_answer = model(batch_for(model, images, answers=("blue",)))["loss"]
    assert not torch.isclose(loss, other_image) and not torch.isclose(loss, other_answer)
    # the loss is the mean cross-entropy over exactly the supervised (answer) positions
    with torch.no_grad():
        logits = model(batch, with_loss=False)["logits"][0, :-1]
    labels = batch["labels"][0, 1:]
    mask = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert torch.isclose(loss, manual, atol=1e-5)


def test_param_groups_apply_lr_mult_and_no_decay_on_vectors(shapes_dir):
    model = build(tiny_config(shapes_dir))
    groups = model.param_groups(0.05, {"projector": 10.0})
    projector = [g for g in groups if g["part"] == "projector"]
    assert all(g["lr_mult"] == 10.0 for g in projector)
    assert all(p.ndim < 2 for g in groups if g["weight_decay"] == 0 for p in g["params"])
    assert not any(g["part"] == "vision_encoder" for g in groups)  # frozen: not optimised


def test_checkpoint_weights_keep_random_frozen_parts_but_not_pretrained_llm(shapes_dir, tmp_path):
    model = build(tiny_config(shapes_dir, "model.parts.llm.mode=frozen"))
    names = model.checkpoint_weights().keys()
    assert any(n.startswith("visual_encoder.") for n in names)  # random and frozen: must travel with us
    assert any(n.startswith("llama_model.") for n in names)  # built from config: ours too
    folder = tmp_path / "llm"
    model.llama_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    from_folder = build(tiny_config(shapes_dir, f"model.llama_model={folder}",
                                    "model.parts.llm.mode=frozen"))
    assert not any(n.startswith("llama_model.") for n in from_folder.checkpoint_weights())
    # the folder path gives the same LLM as the one saved
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(from_folder.llama_model(ids).logits, model.llama_model(ids).logits, atol=1e-5)


def test_llm_folder_report_names_the_buffers_transformers_drops(shapes_dir, tmp_path):
    """Old Llama / Vicuna folders carry rotary_emb.inv_freq per layer; transformers discards them without
    a word, so the report says so rather than counting only what loaded."""
    model = build(tiny_config(shapes_dir))
    model.llama_model.save_pretrained(tmp_path / "llm")
    weights = load_file(tmp_path / "llm" / "model.safetensors")
    layers = model.llama_model.config.num_hidden_layers
    for layer in range(layers):
        weights[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    weights["model.stray.weight"] = torch.ones(2)
    save_file(weights, tmp_path / "llm" / "model.safetensors", metadata={"format": "pt"})
    _, report = load_llm_folder(str(tmp_path / "llm"), dtype=torch.float32, local_files_only=True)
    assert report.dropped == [f"model.layers.{layer}.self_attn.rotary_emb.inv_freq" for layer in range(layers)]
    assert report.unused == ["model.stray.weight"] and not report.missing
    text = str(report)
    assert f"dropped by transformers, which recomputes them ({layers}): model.layers.N.self_attn.rotary_emb.inv_freq" in text
    assert f"{len(model.llama_model.state_dict())} tensors loaded" in text


def test_lora_mode_wraps_llm_with_peft(shapes_dir):
    model = build(tiny_config(shapes_dir, "model.parts.llm.mode=lora", "model.lora_r=4"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("llama_model.")]
    assert trainable and all("lora_" in n for n in trainable)


# NF4 has 16 levels per weight: on this random tiny LLM it moves logits by about 16% of the largest one.
@pytest.mark.parametrize("bits, layer_type, weight_dtype, max_error, min_agreement",
                         [(8, "Linear8bitLt", torch.int8, 0.1, 0.9), (4, "Linear4bit", torch.uint8, 0.3, 0.75)])
def test_low_resource_llm_gives_close_logits_on_cpu(shapes_dir, bits, layer_type, weight_dtype, max_error, min_agreement):
    pytest.importorskip("bitsandbytes")
    from minigpt.models.llm import quantize_linear_layers

    model = build(tiny_config(shapes_dir)).eval()
    batch = batch_for(model, torch.randn(1, 3, 64, 64))
    with torch.no_grad():
        reference = model(batch, with_loss=False)["logits"]
        quantize_linear_layers(model.llama_model, bits)
        quantized = model(batch, with_loss=False)["logits"].float()
    layer = model.llama_model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == layer_type and layer.weight.dtype == weight_dtype
    error = (reference - quantized).abs().max().item() / reference.abs().max().item()
    agreement = (reference.argmax(-1) == quantized.argmax(-1)).float().mean().item()
    print(f"{bits}-bit: max logit error {error:.3f} of the largest logit, argmax agreement {agreement:.2f}")
    assert error < max_error and agreement > min_agreement


@pytest.mark.parametrize("bits, layer_type", [(8, "Linear8bitLt"), (4, "Linear4bit")])
def test_llm_folder_loads_quantised(shapes_dir, tmp_path, bits, layer_type):
    """The Hugging Face folder path: bitsandbytes quantises as from_pretrained loads."""
    pytest.importorskip("bitsandbytes")
    reference = build(tiny_config(shapes_dir)).eval()
    reference.llama_model.save_pretrained(tmp_path / "llm")
    reference.tokenizer.save_pretrained(tmp_path / "llm")
    model = build(tiny_config(shapes_dir, f"model.llama_model={tmp_path}/llm", "model.parts.llm.mode=frozen",
                              "model.low_resource=true", f"model.low_resource_bits={bits}")).eval()
    assert type(model.llama_model.model.layers[0].mlp.up_proj).__name__ == layer_type
    ids = torch.tensor([[1, 5, 9, 12, 20, 7]])
    with torch.no_grad():
        expected, got = reference.llama_model(ids).logits, model.llama_model(ids).logits.float()
    assert (expected.argmax(-1) == got.argmax(-1)).float().mean() >= 0.5
    assert (expected - got).abs().max() < 0.3 * expected.abs().max()


def test_low_resource_without_bitsandbytes_says_what_to_install(shapes_dir, tmp_path, monkeypatch):
    from minigpt.models.llm import quantize_linear_layers

    model = build(tiny_config(shapes_dir))
    model.llama_model.save_pretrained(tmp_path / "llm")
    model.tokenizer.save_pretrained(tmp_path / "llm")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now fails, as where it is missing
    with pytest.raises(ImportError, match=r"model.low_resource: 4-bit loading needs bitsandbytes.*pip install"):
        quantize_linear_layers(model.llama_model, bits=4)
    with pytest.raises(ImportError, match=r"model.low_resource: 8-bit loading needs bitsandbytes.*pip install"):
        build(tiny_config(shapes_dir, f"model.llama_model={tmp_path}/llm", "model.parts.llm.mode=frozen",
                          "model.low_resource=true"))


def test_qformer_weights_that_are_not_a_checkpoint_are_refused_naming_the_file(shapes_dir):
    config = tiny_config(shapes_dir, f"model.q_former_model={shapes_dir}/train.json")
    with pytest.raises(pickle.UnpicklingError, match="train.json: refused"):
        build(config)


@pytest.mark.parametrize("options", [[], ["model.has_qformer=false"], ["model.has_qformer=false", "model.vit_config.patch_size=8"]])
def test_image_token_count_from_config_matches_the_built_model(shapes_dir, options):
    from minigpt.models.image_tokens import image_token_count

    config = tiny_config(shapes_dir, *options)
    assert image_token_count(config.model) == build(config).num_image_tokens


def test_minigpt_v2_arch_uses_its_defaults(shapes_dir):
    config = load_config(REPO / "train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.lora_r=8",
                                                                "model.parts.llm.mode=lora"], for_training=False)
    assert config.model.task_identifiers and not config.model.has_qformer and config.model.parts.llm.mode == "lora"
    assert config.model.prompt_template == "[INST] {} [/INST]" and config.model.end_sym == "</s>"
    model = build(config)
    size = config.model.image_size
    assert model.Qformer is None and model.num_image_tokens == (size // 4) ** 2 // 4
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"visual_encoder", "ln_vision", "llama_proj", "llama_model"}
    assert all("lora_" in name for name, p in model.llama_model.named_parameters() if p.requires_grad)
    sample = {"id": "0", "image": torch.zeros(3, size, size), "task": "vqa", "turns": [(USER, "Which color?"), (ASSISTANT, "red")]}
    batch = collator_for(model)([sample])
    prompt = model.tokenizer.decode(batch["input_ids"][0][~batch["image_slots"][0]])
    assert prompt.replace(" ", "") == "<s>[INST]<Img></Img>[vqa]Whichcolor?[/INST]red</s>"


def test_demo_answers_in_4_bit_and_reports_peak_memory(shapes_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from PIL import Image

    from conftest import run_script
    from minigpt.common.checkpoint import save_checkpoint

    options = [f"model.tokenizer={shapes_dir}/tokenizer"]
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options + ["model.ckpt=null"], for_training=False)
    save_checkpoint(tmp_path / "run", 1, build(config).checkpoint_weights(), {"step": 1})
    from minigpt.inference.loading import load_for_inference

    loaded = load_for_inference(load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options + [f"model.ckpt={tmp_path}/run"],
                                            for_training=False), torch.device("cpu"), low_resource=True, bits=4)
    assert type(loaded.llama_model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"  # the path demo.py takes
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    result = run_script(["demo.py", "--cfg-path", "eval_configs/tiny_v2_eval.yaml", "--options", *options,
                         f"model.ckpt={tmp_path}/run", "--cpu", "--low-resource", "--bits", "4", "--image",
                         str(tmp_path / "red.png"), "--prompt", "[vqa] Which colors do you see?", "--max-new-tokens", "4",
                         "--save-dir", str(tmp_path / "demo")])
    assert result.stdout.strip()
    assert "peak resident memory" in result.stderr and "after loading" in result.stderr
    assert "after the answer" in result.stderr


def test_peak_memory_can_start_afresh_after_what_was_freed():
    """Benchmarks measure their steps, not the models built and dropped before them."""
    cpu = torch.device("cpu")
    scratch = torch.ones(2**27)  # 512 MiB, touched
    before = peak_memory_gib(cpu)
    del scratch
    reset_peak_memory(cpu)
    assert peak_memory_gib(cpu) < before - 0.4
    assert peak_memory_gib(cpu) > 0.05  # the runtime itself
