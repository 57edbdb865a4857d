"""`minigpt plan`: the shipped real configs planned at their real size on the meta device, against the
published architecture (parameter counts and released checkpoint keys from the reference), the README's
8-bit memory, the context-budget flag, the memory arithmetic and the commands that print a plan."""
import json
import sys
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from local_hub import local_hub  # noqa: F401  (a fixture: a stand-in for the Hugging Face hub)
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from minigpt.cli import main as cli
from minigpt.config.loader import load_config, shipped_configs
from minigpt.models.key_names import released_key
from minigpt.runners.plan import make_plan, parse_memory_size
from minigpt.runners.plan_memory import GIB, LayerStack, RunShape, block_bytes, memory_per_gpu
from minigpt.runners.plan_model import llm_config_of, planned_model

# Parameter counts measured on the original's own classes (reference section 12).
VIT_224, VIT_448, LN_VISION = 985_894_528, 986_975_872, 2_816
QFORMER = 105_137_664 + 24_576  # with query_tokens
PROJ_768_4096, PROJ_768_5120, PROJ_5632_4096 = 3_149_824, 3_937_280, 23_072_768
LLAMA_7B, LLAMA_13B, V2_LORA = 6_738_415_616, 13_015_864_320, 33_554_432

# Today's backbones (issue: the recipe on any causal LM / encoder): the published totals of Qwen2.5-7B
# (7.62B) and Llama-3.1-8B (8.03B); SigLIP so400m's vision tower without its pooling head (27 blocks of
# width 1152, MLP 4304, + 14-pixel patch embedding, 256 positions and the final norm).
QWEN25_7B, LLAMA31_8B = 7_615_616_512, 8_030_261_248
SIGLIP_BLOCK = 4 * (1152 * 1152 + 1152) + 2 * 1152 * 4304 + 4304 + 1152 + 4 * 1152
SIGLIP_SO400M_224 = 27 * SIGLIP_BLOCK + (14 * 14 * 3 * 1152 + 1152) + 256 * 1152 + 2 * 1152
PROJ_4608_3584 = 4 * 1152 * 3584 + 3584
LLAMA3_V2_LORA = 32 * 64 * ((4096 + 4096) + (4096 + 1024))  # q_proj 4096 -> 4096, v_proj 4096 -> 1024 (8 KV heads)


def llama_config(hidden: int, intermediate: int, layers: int, heads: int, positions: int) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "max_position_embeddings": positions, "vocab_size": 32000,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": False}


LLM_CONFIGS = {  # config.json of each LLM, as its hub folder holds it (the keys a shape needs)
    "vicuna-7b-v0": llama_config(4096, 11008, 32, 32, 2048),
    "vicuna-13b-v0": llama_config(5120, 13824, 40, 40, 2048),
    "Llama-2-7b-chat-hf": llama_config(4096, 11008, 32, 32, 4096),
    "Qwen2.5-7B-Instruct": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
                            "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                            "num_key_value_heads": 4, "max_position_embeddings": 32768, "vocab_size": 152064,
                            "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 1000000.0},
    "Llama-3.1-8B-Instruct": {**llama_config(4096, 14336, 32, 32, 131072), "num_key_value_heads": 8,
                              "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
}
SIGLIP_FILES = {  # google/siglip-so400m-patch14-224's two json files (its text tower's keys left out)
    "config.json": {"model_type": "siglip", "architectures": ["SiglipModel"],
                    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16,
                                      "num_hidden_layers": 27, "patch_size": 14, "image_size": 224}},
    "preprocessor_config.json": {"do_resize": True, "size": {"height": 224, "width": 224}, "do_normalize": True,
                                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
}

MINIGPT4_VICUNA = ("vicuna-7b-v0", {"vision_encoder": (0, VIT_224 + LN_VISION), "qformer": (0, QFORMER),
                                    "projector": (PROJ_768_4096, 0), "llm": (0, LLAMA_7B)})
MINIGPT4_LLAMA2 = ("Llama-2-7b-chat-hf", {"vision_encoder": (0, VIT_224 + LN_VISION), "qformer": (0, 0),
                                          "projector": (PROJ_5632_4096, 0), "llm": (0, LLAMA_7B)})
MINIGPT_V2 = ("Llama-2-7b-chat-hf", {"vision_encoder": (0, VIT_448 + LN_VISION), "qformer": (0, 0),
                                     "projector": (PROJ_5632_4096, 0), "llm": (V2_LORA, LLAMA_7B)})
QWEN2_SIGLIP = ("Qwen2.5-7B-Instruct", {"vision_encoder": (0, SIGLIP_SO400M_224), "qformer": (0, 0),
                                        "projector": (PROJ_4608_3584, 0), "llm": (0, QWEN25_7B)})
LLAMA3_V2 = ("Llama-3.1-8B-Instruct", {"vision_encoder": (0, VIT_448 + LN_VISION), "qformer": (0, 0),
                                       "projector": (PROJ_5632_4096, 0), "llm": (LLAMA3_V2_LORA, LLAMA31_8B)})
EXPECTED = {  # shipped real config -> (its LLM, part -> (trainable, frozen))
    "minigpt4_stage1_pretrain": MINIGPT4_VICUNA, "minigpt4_stage2_finetune": MINIGPT4_VICUNA,
    "minigpt4_stage2_finetune_gpt4vision": MINIGPT4_VICUNA, "minigpt4_eval": MINIGPT4_VICUNA,
    "minigpt4_llama2_stage1_pretrain": MINIGPT4_LLAMA2, "minigpt4_llama2_stage2_finetune": MINIGPT4_LLAMA2,
    "minigpt4_llama2_eval": MINIGPT4_LLAMA2,
    "minigptv2_stage1_pretrain": MINIGPT_V2, "minigptv2_stage2_multitask": MINIGPT_V2,
    "minigptv2_stage3_finetune": MINIGPT_V2, "minigptv2_finetune": MINIGPT_V2,
    "minigptv2_finetune_gpt4vision": MINIGPT_V2, "minigptv2_eval": MINIGPT_V2,
    "minigptv2_benchmark_evaluation": MINIGPT_V2,
    "qwen2_siglip_stage1_pretrain": QWEN2_SIGLIP, "qwen2_siglip_stage2_finetune": QWEN2_SIGLIP,
    "qwen2_siglip_eval": QWEN2_SIGLIP,
    "llama3_minigptv2_multitask": LLAMA3_V2, "llama3_minigptv2_eval": LLAMA3_V2,
}


@pytest.fixture(scope="session")
def llm_folders(tmp_path_factory) -> dict:
    """A folder per LLM holding its config.json alone (no tokenizer, no weights)."""
    root = tmp_path_factory.mktemp("llms")
    folders = {}
    for name, config in LLM_CONFIGS.items():
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        folders[name] = folder
    return folders


def plan_of(name: str, llm_folder=None, *options: str, **kwargs):
    training = "eval" not in name
    options = [*([f"model.llama_model={llm_folder}"] if llm_folder else []), *options]
    config = load_config(name, options, for_training=training, for_planning=True)
    return make_plan(config, name, training=training, **kwargs)


def test_every_shipped_real_config_has_its_expected_counts():
    real = {name for name in shipped_configs() if not name.startswith("tiny_")}
    assert real == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_equal_the_published_architecture(name, llm_folders, local_hub):
    """A hub-named vision tower (SigLIP) is planned from its two json files, fetched alone."""
    local_hub.add_repo("google/siglip-so400m-patch14-224", {
        **{file: json.dumps(content).encode() for file, content in SIGLIP_FILES.items()},
        "model.safetensors": b"weights that must not be fetched"})
    llm, expected = EXPECTED[name]
    plan = plan_of(name, llm_folders[llm])
    assert local_hub.asked("model.safetensors") == 0
    counts = {part: (count.trainable, count.frozen) for part, count in plan.stats.parts.items()}
    assert counts == expected


def test_vicuna_13b_minigpt4_counts(llm_folders):
    plan = plan_of("minigpt4_eval", llm_folders["vicuna-13b-v0"])
    assert plan.stats.parts["llm"].frozen == LLAMA_13B
    assert plan.stats.parts["projector"].trainable == PROJ_768_5120


def released_keys(llm_width: int, proj_in: int, lora_layers: int = 0) -> dict[str, tuple]:
    """The released checkpoints' state-dict keys and shapes (reference section 2)."""
    keys = {"llama_proj.weight": (llm_width, proj_in), "llama_proj.bias": (llm_width,)}
    for layer in range(lora_layers):
        for target in ("q_proj", "v_proj"):
            prefix = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{target}"
            keys[f"{prefix}.lora_A.weight"] = (64, llm_width)
            keys[f"{prefix}.lora_B.weight"] = (llm_width, 64)
    return keys


@pytest.mark.parametrize("name, llm, keys", [
    ("minigpt4_eval", "vicuna-7b-v0", released_keys(4096, 768)),
    ("minigpt4_eval", "vicuna-13b-v0", released_keys(5120, 768)),
    ("minigpt4_llama2_eval", "Llama-2-7b-chat-hf", released_keys(4096, 5632)),
    ("minigptv2_eval", "Llama-2-7b-chat-hf", released_keys(4096, 5632, lora_layers=32)),
])
def test_released_checkpoint_keys_land_on_planned_parameters(name, llm, keys, llm_folders):
    config = load_config(name, [f"model.llama_model={llm_folders[llm]}"], for_training=False, for_planning=True)
    model, _ = planned_model(config.model, llm_config_of(config.model), torch.float16)
    parameters = {key: tuple(param.shape) for key, param in model.named_parameters()}
    landed = {released_key(key): shape for key, shape in keys.items()}
    assert {key: parameters.get(key) for key in landed} == landed
    assert released_key("Qformer.bert.embeddings.position_ids") is None  # a kept buffer, not a parameter of ours


@pytest.mark.parametrize("name, llm", [("minigpt4_eval", "vicuna-7b-v0"),
                                       ("minigpt4_llama2_eval", "Llama-2-7b-chat-hf"),
                                       ("minigptv2_eval", "Llama-2-7b-chat-hf")])
def test_8bit_7b_inference_is_near_the_readmes_11_5_gb(name, llm, llm_folders):
    """README: 8-bit with beam 1 needs about 11.5 GB for 7B (nvidia-smi's units: GiB)."""
    plan = plan_of(name, llm_folders[llm])
    assert plan.stats.quantized_bits == 8 and not plan.training
    assert abs(plan.memory.total / GIB - 11.5) <= 0.15 * 11.5


def test_a_hub_llm_is_planned_from_its_config_json_alone(llm_folders, local_hub):
    local_hub.add_repo("meta-llama/Llama-2-7b-chat-hf", {
        "config.json": (llm_folders["Llama-2-7b-chat-hf"] / "config.json").read_bytes(),
        "model.safetensors": b"weights that must not be fetched"})
    plan = plan_of("minigptv2_eval", "meta-llama/Llama-2-7b-chat-hf")
    assert plan.stats.parts["llm"].frozen == LLAMA_7B
    assert local_hub.asked("config.json") == 1 and local_hub.asked("model.safetensors", "HEAD") == 0
    assert local_hub.asked("model.safetensors") == 0


def test_context_budget_flag(llm_folders):
    flagged = plan_of("tiny_stage1")  # the default max_context_len 3800 over a 256-position LLM
    assert flagged.context.positions == 256 and flagged.context.over
    fitting = plan_of("tiny_stage1", None, "model.max_context_len=128")
    assert not fitting.context.over  # 1 + 128 + max_txt_len 64 <= 256


def test_memory_follows_zero_stages_and_precision(llm_folders):
    stats = plan_of("minigptv2_finetune", llm_folders["Llama-2-7b-chat-hf"]).stats
    shape = RunShape(training=True, samples=2, seq_len=512, gpus=4)
    ddp, zero1, zero3 = (memory_per_gpu(stats, replace(shape, zero_stage=stage)) for stage in (0, 1, 3))
    assert ddp.optimizer == 2 * 4 * stats.trainable_params  # float32 AdamW moments, whole on each GPU
    assert ddp.gradients == 2 * 4 * stats.trainable_params  # float32 gradients and DDP's bucket copy
    assert zero1.optimizer == 12 * stats.trainable_params / 4  # master copy + moments, divided
    assert zero3.weights == 2 * stats.total_params / 4 and zero1.weights == 2 * stats.total_params
    checkpointed = memory_per_gpu(stats, replace(shape, llm_checkpointing=True))
    assert checkpointed.activations < ddp.activations / 5


def saved_bytes_per_block(mode: str) -> float:
    """What transformers' Llama keeps for backward per block and token, counted with saved-tensor hooks."""
    def saved(layers: int) -> int:
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=layers, num_attention_heads=4,
                             vocab_size=100, max_position_embeddings=128)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
        if mode == "lora":
            model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).get_base_model()
        elif mode == "frozen":
            model.requires_grad_(False)
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages = {}

        def keep(tensor):
            if tensor.untyped_storage().data_ptr() not in weights:
                storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            model.model(inputs_embeds=torch.randn(2, 64, 256, dtype=torch.bfloat16, requires_grad=True))
        return sum(storages.values())

    return (saved(4) - saved(2)) / 2 / (2 * 64)


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
def test_activation_formula_matches_what_llama_keeps(mode):
    stack = LayerStack(width=256, mlp_width=688, depth=1, gated_mlp=True, linear_trained=mode == "full", trains=True,
                       element_bytes=2)
    planned = block_bytes(stack, tokens=1, lora_targets=2 if mode == "lora" else 0)
    assert planned == pytest.approx(saved_bytes_per_block(mode), rel=0.1)


def test_v2_finetune_does_not_fit_24gb_and_names_levers(llm_folders, capsys):
    code = cli.main(["plan", "--cfg-path", "minigptv2_finetune", "--options",
                     f"model.llama_model={llm_folders['Llama-2-7b-chat-hf']}", "--gpus", "4", "--gpu-memory", "24GB"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fits one 24.0 GiB GPU" in out and "? no:" in out
    lever_lines = [line for line in out.splitlines() if line.strip().startswith("fits ")]
    assert any("gradient checkpointing" in line for line in lever_lines)
    assert not any("ZeRO-2" in line for line in lever_lines)  # the LoRA run's optimiser state is small


def test_gpu_sizes():
    assert parse_memory_size("24GB") == 24 * GIB == parse_memory_size("24 GiB") == parse_memory_size("24")
    assert parse_memory_size("81559MiB") == 81559 * 2**20


_opened: list[str] | None = None  # files opened while a test watches (opened_files)


def _record_opens(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None:
        _opened.append(str(args[0]))


sys.addaudithook(_record_opens)  # (audit hooks stay for the process; this one records only while watched)


@contextmanager
def files_opened():
    """The paths opened inside the block."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.mark.parametrize("command", [["plan"], ["train", "--plan"], ["chat", "--plan"]])
def test_plan_commands_read_no_weight_file(command, llm_folders, tmp_path, capsys):
    """Weights files that are there, and an LLM folder holding weights beside its config.json: none is opened."""
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text((llm_folders["vicuna-7b-v0"] / "config.json").read_text())
    weights = [llm / "model.safetensors", tmp_path / "eva_vit_g.pth", tmp_path / "qformer.pth", tmp_path / "ckpt.pth"]
    for path in weights:
        path.write_bytes(b"not weights")
    name = "minigpt4_eval" if command[0] == "chat" else "minigpt4_stage2_finetune"
    with files_opened() as opened:
        code = cli.main([*command, "--cfg-path", name, "--options", f"model.llama_model={llm}",
                         f"model.vit_weights={weights[1]}", f"model.q_former_model={weights[2]}",
                         f"model.ckpt={weights[3]}"])
    out = capsys.readouterr().out
    assert code == 0 and "parameters" in out and f"{LLAMA_7B:,}" in out
    assert str(llm / "config.json") in opened
    assert not set(opened) & {str(path) for path in weights}
