"""The documents' commands run: every command line of README.md, docs/*.md and dataset/README.md
(fenced, or a whole command in an inline span) is either run here or skipped for a stated reason.

RUN says how each command that needs no released weights, GPU, network or server is run, in chain order,
and what its output must show; SKIP says why each other one is not run. A new command in the documents
is in neither, and test_every_documented_command_is_classified fails until it is put in one; an entry
whose command left the documents fails the same test. Inline spans that name a command without running
anything (`minigpt chat`, `minigpt train --cfg-path X`) are references, checked by tests/test_docs.py.

The fast chain (data scripts, listings, plans, classical agent tools) runs in one child process; the slow
chain trains the tiny models on the synthetic data and chats, evaluates and exports with them. Both run in
a temporary folder (tests/doc_runs.py), and neither writes into the checkout.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time

import pytest
from PIL import Image, ImageDraw

import yaml

from doc_names import (EXTERNAL, EXTERNAL_OPTIONS, OPTION, PROGRAM, SECTIONS, document_lines, key_problem,
                       keys_in_text, minigpt_options, options_of, torchrun_options, yaml_blocks, yaml_keys)
from doc_runs import argv_of, run_chain, with_options
from test_docs import COMMANDS, SHELL_BLOCKS, Target, help_runs, segments
from test_plan import LLM_CONFIGS

FEW_STEPS = ("run.iters_per_epoch=2",)  # a training command runs 2 steps: what is tested is that the documented
# command trains and writes the checkpoint the next command loads; learning is tests/test_learning.py's


@dataclasses.dataclass(frozen=True)
class Run:
    expect: tuple[str, ...]  # regexes its output must match; "file:PATH" a file it must write (workdir-relative)
    options: tuple[str, ...] = ()  # --options added to the documented ones (FEW_STEPS, with its reason)
    slow: bool = False


def key(text: str) -> str:
    """A command as the tables name it: without its comment, spaces collapsed."""
    return " ".join(text.split("  #")[0].split())


RUN = {  # in the order they run; a later command reads what an earlier one wrote
    # fast: what the quick start and data pages generate, listings, plans (config.json only), classical tools
    "python dataset/synthetic_shapes.py --out data/shapes --seed 0": Run(("file:data/shapes/train.json",
                                                                          "file:data/shapes/tokenizer")),
    "python dataset/synthetic_patterns.py --out data/patterns --seed 0": Run(("file:data/patterns",)),
    "python dataset/synthetic_paragraphs.py --out data/paragraphs --seed 0": Run(("file:data/paragraphs",)),
    "python dataset/example_formats.py --out data/formats --images 20": Run(("file:data/formats",)),
    "python dataset/synthetic_faces.py --out data/faces --seed 0": Run(("file:data/faces/face_train.json",)),
    "python dataset/tiny_backbones.py --data data/shapes": Run(("file:data/shapes/*siglip*",)),
    "minigpt configs": Run((r"tiny_stage1\s+train_configs/tiny_stage1\.yaml", r"minigpt4_eval\s+eval_configs/")),
    "minigpt download --list": Run((r"minigpt4-vicuna7b .*\n.*runs with: --cfg-path minigpt4_eval",)),
    "minigpt agent --list": Run((r"find_color_regions\s+cpu", r"blur_faces")),
    "minigpt plan --cfg-path minigpt4_eval --gpu-memory 24GB": Run((r"minigpt4_eval: inference plan",
                                                                    r"fits one 24\.0 GiB GPU .*\? yes")),
    "minigpt plan --cfg-path minigpt4_eval": Run((r"LLM: llama, 32 layers, hidden 4096",)),
    "minigpt plan --cfg-path minigptv2_finetune --options model.llama_model=/models/llama2-7b-config --gpus 4 "
    "--gpu-memory 24GB": Run((r"minigptv2_finetune: training plan", r"fits one 24\.0 GiB GPU .*\? no",
                              r"fits .* gradient checkpointing")),
    "minigpt train --plan --cfg-path minigpt4_stage2_finetune --options model.llama_model=/models/vicuna-7b-config":
        Run((r"minigpt4_stage2_finetune: training plan",)),
    "minigpt chat --plan --cfg-path minigptv2_eval --options model.llama_model=/models/llama2-7b-config":
        Run((r"minigptv2_eval: inference plan",)),
    "minigpt agent --template blur_faces --image photo.jpg": Run((r"face_detect",)),
    "minigpt agent --tool find_color_regions --image shapes.png --arg color=red": Run((r'"count": [1-9]',)),
    "minigpt paragraph --image photo.jpg --stages segments": Run((r"a red region",
                                                                  "file:output/paragraph/*/paragraphs.jsonl")),
    # slow: the tiny models trained for 2 steps each, then chatted with, evaluated and exported
    "minigpt train --cfg-path tiny_stage1": Run(("file:output/tiny_stage1/checkpoint_*",), FEW_STEPS, slow=True),
    "minigpt check-data --cfg-path train_configs/tiny_stage2.yaml": Run((r"sharegpt4v",), slow=True),
    "minigpt train --cfg-path train_configs/tiny_stage2.yaml --options run.init_lr=1e-5 run.max_epoch=2":
        Run(("file:output/tiny_stage2/checkpoint_*",), FEW_STEPS, slow=True),
    "minigpt chat --cfg-path tiny_eval --image data/shapes/images/test_img_000000.jpg --prompt \"Which colors do you "
    "see?\"": Run((r"\S",), slow=True),
    "minigpt chat --cfg-path eval_configs/tiny_eval.yaml --image img.jpg --prompt \"Which colors do you see?\"":
        Run((r"\S",), slow=True),
    "minigpt chat --cfg-path eval_configs/tiny_eval.yaml --questions data/shapes/test.json --json":
        Run((r'"answer"',), slow=True),
    "minigpt train --cfg-path train_configs/tiny_v2.yaml": Run(("file:output/tiny_v2/checkpoint_*",), FEW_STEPS,
                                                              slow=True),
    "minigpt chat --cfg-path eval_configs/tiny_v2_eval.yaml --image data/shapes/images/grounding_test_img_000000.jpg "
    "--prompt \"[refer] the red square\" --repetition-penalty 1.0": Run((r"\S",), slow=True),
    "minigpt train --cfg-path tiny_v2_adapters": Run(("file:output/tiny_v2_adapters/checkpoint_*",), FEW_STEPS,
                                                     slow=True),
    "minigpt export --cfg-path eval_configs/tiny_v2_adapters_eval.yaml --adapter grounding --out output/merged":
        Run(("file:output/merged/config.yaml",), slow=True),
    "minigpt chat --cfg-path tiny_v2_adapters_eval --image data/shapes/images/grounding_test_img_000000.jpg "
    "--prompt \"[refer] the red square\"": Run((r"\S",), slow=True),
}

WEIGHTS = "needs a released model's weights (GBs, `minigpt download`) and a GPU"
NETWORK = "downloads from the Hugging Face hub or Google Drive (tests/test_download.py runs the downloads " \
          "against a local stand-in of the hub)"
SERVER = "a server that runs until stopped (tests/test_serve.py, test_demo_web.py and test_mcp.py start and " \
         "query the servers)"
FRAGMENT = "prose naming a command and one of its options, not a whole command (its options are checked " \
           "by tests/test_docs.py)"
DATA = "needs the released training data (LAION, CC-SBU, ...), which the reader downloads into /data"
BENCH = "a benchmark: minutes, and it writes its figures into bench/results/ of the checkout " \
        "(tests/test_bench_*.py and test_memory_and_speed.py run its steps at test size)"
SAME = "the same run as one in RUN, by the config's path instead of its name (both resolve: tests/test_docs.py)"
TIME = "trains for minutes on 2 cores; the slow chain runs the same commands (train, chat, eval) on the " \
       "shapes data, and tests/test_face_learning.py, test_paragraph_learning.py and test_vision_mix.py " \
       "train these configs"
DDP = "several ranks under torchrun: tests/test_distributed.py runs DDP and ZeRO on tiny configs"
SKIP = {
    "bash scripts/quickstart.sh": "sets up .venv (pip: network) and trains for minutes; its steps are the "
                                  "commands run here (data, tiny_stage1, tiny_stage2, chat)",
    "bash .ci/run": "runs the whole test suite, this test among them",
    "pip install -e .": "installs packages (network); the core install is tested by tests/test_lean_install.py",
    "pip install -e '.[agents]'": "installs packages (network); the extras are checked by tests/test_docs.py",
    "pip install -e '.[serve]'": "installs packages (network); the extras are checked by tests/test_docs.py",
    "pip install -e '.[lmms-eval]'": "installs packages (network); the extras are checked by tests/test_docs.py",
    "pip install '.[drive]'": "installs packages (network); the extras are checked by tests/test_docs.py",
    "minigpt download minigpt4-vicuna7b": NETWORK,
    "minigpt download qwen2-siglip": NETWORK,
    "minigpt download vicuna-7b-v0 eva-vit-g blip2-qformer": NETWORK,
    "minigpt chat --cfg-path minigpt4_eval --image photo.jpg": WEIGHTS,
    "minigpt chat --cfg-path eval_configs/minigpt4_eval.yaml --gpu-id 0": WEIGHTS,
    "minigpt chat --cfg-path eval_configs/minigptv2_eval.yaml --gpu-id 0": WEIGHTS,
    "minigpt chat --cfg-path eval_configs/minigpt4_eval.yaml --low-resource --bits 4": WEIGHTS,
    "minigpt chat --cfg-path eval_configs/minigpt4_eval.yaml --device-map auto --max-gpu-memory 20GiB": WEIGHTS,
    "minigpt export --cfg-path eval_configs/minigptv2_eval.yaml --options model.low_resource=false --out "
    "output/minigptv2_merged": WEIGHTS,
    "minigpt export --cfg-path eval_configs/minigptv2_eval.yaml --options model.low_resource=false --out output/peft "
    "--format peft": WEIGHTS,
    "minigpt export --cfg-path eval_configs/minigpt4_eval.yaml --options model.low_resource=false --out "
    "output/minigpt4_hf --format hf --dtype bfloat16": WEIGHTS,
    "minigpt export --cfg-path eval_configs/minigptv2_eval.yaml --options model.low_resource=false --out "
    "output/minigptv2_hf --format hf --dtype bfloat16": WEIGHTS,
    "minigpt eval --cfg-path eval_configs/minigptv2_benchmark_evaluation.yaml --datasets refcoco_val okvqa":
        WEIGHTS + ", and the benchmarks' data",
    "torchrun --nproc-per-node 8 -m minigpt eval --cfg-path eval_configs/minigptv2_benchmark_evaluation.yaml":
        WEIGHTS + ", 8 of them, and the benchmarks' data",
    "minigpt agent --template remove_object --image street.jpg --arg object=\"the red car\" --cfg-path "
    "minigptv2_eval": WEIGHTS,
    "minigpt agent --template image_to_paragraph --image photo.jpg --cfg-path minigptv2_eval": WEIGHTS,
    "minigpt paragraph --image photo.jpg --cfg-path minigptv2_eval": WEIGHTS,
    "minigpt paragraph --folder photos/ --cfg-path minigptv2_eval --out output/photos": WEIGHTS,
    "minigpt paragraph --image photo.jpg --cfg-path minigptv2_eval --writer model": WEIGHTS,
    "minigpt paragraph --folder photos/ --cfg-path minigptv2_eval --llm-url http://localhost:8000/v1 "
    "--fallback-template": WEIGHTS + ", and an LLM server at localhost:8000",
    "minigpt paragraph --image photo.jpg --cfg-path minigptv2_eval --stage-device caption=cuda:0 --stage-device "
    "regions=cuda:1": WEIGHTS + " (two of them)",
    "minigpt paragraph --folder coco/val2017 --cfg-path minigptv2_eval --out output/coco_paragraphs":
        WEIGHTS + ", and COCO val2017",
    "minigpt agent --request \"blur the faces\" --image photo.jpg --planner-url http://localhost:8000/v1":
        "needs a planner server at localhost:8000 (tests/test_agent_loop.py plans against a stand-in)",
    "minigpt mcp --out /tmp/mcp-images": SERVER,
    "minigpt mcp --cfg-path minigptv2_eval --load caption_cuda:0 --out /tmp/mcp-images": SERVER + "; " + WEIGHTS,
    "minigpt web --cfg-path eval_configs/minigptv2_eval.yaml": SERVER + "; " + WEIGHTS,
    "minigpt web --cfg-path eval_configs/tiny_eval.yaml --cpu": SERVER,
    "minigpt serve --cfg-path eval_configs/minigptv2_eval.yaml --port 8000": SERVER + "; " + WEIGHTS,
    "minigpt serve --cfg-path eval_configs/minigptv2_eval.yaml --port 8000 --api-key local": SERVER + "; " + WEIGHTS,
    "minigpt agent --template blur_faces": FRAGMENT,
    "minigpt export --format hf": FRAGMENT,
    "minigpt chat --adapter": FRAGMENT,
    "minigpt chat --cfg-path": FRAGMENT,
    "minigpt train --plan": FRAGMENT,
    "minigpt chat --plan": FRAGMENT,
    "minigpt check-data --limit 1000": FRAGMENT,
    "minigpt check-data --cfg-path train_configs/minigpt4_stage1_pretrain.yaml --limit 1000 --options "
    "datasets.laion.build_info.storage='/data/laion/{00000..10488}.tar'": DATA,
    "minigpt check-data --cfg-path train_configs/minigpt4_stage2_finetune.yaml --limit 1000":
        DATA + ", and stage 1's checkpoint (model.ckpt)",
    "torchrun --nproc-per-node 4 -m minigpt train --cfg-path train_configs/minigpt4_stage1_pretrain.yaml --options "
    "datasets.laion.build_info.storage='/data/laion/{00000..10488}.tar' "
    "datasets.cc_sbu.build_info.storage='/data/cc_sbu/{00000..01255}.tar'": DATA + "; " + WEIGHTS,
    "torchrun --nproc-per-node 1 -m minigpt train --cfg-path train_configs/minigpt4_stage2_finetune.yaml --options "
    "datasets.cc_sbu_align.build_info.storage=/data/cc_sbu_align": DATA + "; " + WEIGHTS,
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500 --rdzv-id job1 train.py "
    "--cfg-path train_configs/minigpt4_stage2_finetune.yaml --options "
    "datasets.cc_sbu_align.build_info.storage=/data/cc_sbu_align": "two machines; " + DATA + "; " + WEIGHTS,
    "minigpt convert-checkpoint /weights/pretrained_minigpt4_7b.pth": "needs the released checkpoint file "
                                                                     "(tests/test_convert_checkpoint.py converts "
                                                                     "pickles of its layout)",
    "torchrun --nproc-per-node 2 -m minigpt train --cfg-path train_configs/tiny_stage2.yaml": DDP,
    "minigpt train --nproc-per-node 2 --cfg-path train_configs/tiny_stage2.yaml": DDP,
    "torchrun --nproc-per-node 2 train.py --cfg-path train_configs/tiny_stage2.yaml": DDP,
    "torchrun --nproc-per-node 2 -m minigpt train --cfg-path train_configs/tiny_stage2.yaml --options "
    "run.deepspeed_config=train_configs/deepspeed/zero2.json": DDP + "; DeepSpeed is the gpu extra's",
    "deepspeed --num_gpus 2 train.py --cfg-path train_configs/tiny_stage2.yaml --options "
    "run.deepspeed_config=train_configs/deepspeed/zero1.json": DDP + "; DeepSpeed's launcher wants GPUs",
    "minigpt train --cfg-path train_configs/tiny_stage1.yaml": SAME,
    "minigpt chat --cfg-path eval_configs/tiny_eval.yaml --image data/shapes/images/test_img_000000.jpg --prompt "
    "\"Which colors do you see?\"": SAME,
    "bash scripts/learning_sweep.sh": "hours on 2 cores: every learning test under every setting",
    "SETTINGS=\"base seed=1 aten=avx2\" JOBS=2 bash scripts/learning_sweep.sh faces paragraph":
        "an hour on 2 cores: two learning tests under three settings",
    "python scripts/learning_sweep_table.py sweep/results.jsonl --markdown": "reads the results of the sweep "
                                                                            "above (hours)",
    "python -m bench.data_loading": BENCH,
    "python -m bench.data_loading --image-size 224 --out bench/results/data_loading_224.json": BENCH,
    "python -m bench.train_throughput --preset tiny --device cpu --warmup 2 --steps 20 --rounds 3": BENCH,
    "python -m bench.train_throughput --preset small --device cpu --stages stage2 --rounds 3 --steps 20": BENCH,
    "python -m bench.train_throughput --preset 7b": BENCH + "; a GPU",
    "python -m bench.generate": BENCH + "; a GPU",
    "python -m bench.generate --shape tiny --device cpu": BENCH,
    "minigpt check-data --cfg-path tiny_minigpt4_finetune_gpt4vision": "needs the checkpoint of the faces "
                                                                      "stage 1 run below (model.ckpt): " + TIME,
    "minigpt train --cfg-path tiny_v2_stage1": TIME,
    "minigpt train --cfg-path tiny_minigptv2_finetune_gpt4vision": TIME,
    "minigpt train --cfg-path tiny_stage1 --options model.tokenizer=data/faces/tokenizer "
    "\"datasets.cc_sbu.build_info.storage=data/faces/shards/shapes-{000000..000003}.tar\" "
    "run.output_dir=output/tiny_faces_stage1": TIME,
    "minigpt train --cfg-path tiny_minigpt4_finetune_gpt4vision": TIME,
    "minigpt chat --cfg-path tiny_v2_face_eval --image data/faces/images/test_000000.png --prompt \"Is the person "
    "wearing glasses?\"": TIME,
    "minigpt eval --cfg-path tiny_v2_face_eval": TIME,
    "minigpt agent --template describe_faces --image photo.jpg --cfg-path tiny_v2_face_eval": TIME,
    "minigpt train --cfg-path train_configs/tiny_subimages.yaml": TIME,
    "minigpt eval --cfg-path eval_configs/tiny_subimages_eval.yaml": TIME,
    "python dataset/synthetic_paragraphs.py --out data/paragraphs": "the same data as the run with --seed 0 "
                                                                   "(the default seed)",
    "minigpt train --cfg-path tiny_paragraph": TIME,
    "minigpt eval --cfg-path tiny_paragraph_eval": TIME,
    "minigpt mix-weights --ckpt output/run_a --ckpt output/run_b --alpha 0.5 --out output/mixed":
        "needs two finetuned runs of one config (output/run_a, output/run_b); tests/test_mix_weights.py mixes "
        "two tiny runs",
    "minigpt chat --cfg-path output/merged/config.yaml": "the chat of the merged model: the slow chain runs "
                                                         "the export that writes it, and tests/test_adapters.py "
                                                         "chats with it",
    "minigpt eval --cfg-path eval_configs/tiny_v2_eval.yaml": TIME,
    "python dataset/example_formats.py --out data/formats": "the same data as the run with --images 20 (the default)",
}

PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z_]*(?:\.\.\.)?|\.\.\.|\[.*)$")  # X, RUN_DIR..., ..., [--out FILE]


def is_reference(command) -> bool:
    """An inline span that names a command rather than runs one: a placeholder in it, or a program and
    its subcommand alone (`minigpt chat`, `python demo.py`, `torchrun train.py`)."""
    if command.fenced:
        return False
    tokens = [t for part in segments(command.text) for t in part]
    bare = tokens[:3] == ["python", "-m", "minigpt"] and len(tokens) <= 4 or len(tokens) <= 2
    return bare or any(PLACEHOLDER.match(t) for t in tokens[1:])


def documented() -> dict[str, list[str]]:
    """Command (as the tables name it) -> where the documents show it, for every command that is not a reference."""
    found: dict[str, list[str]] = {}
    for command in COMMANDS:
        if key(command.text) in RUN or not is_reference(command):
            found.setdefault(key(command.text), []).append(command.where)
    return found


def test_every_documented_command_is_classified():
    shown = documented()
    unclassified = [f"{where[0]}: {text}" for text, where in shown.items() if text not in RUN and text not in SKIP]
    assert not unclassified, "documented commands neither run (RUN) nor skipped with a reason (SKIP), in " \
                             "tests/test_doc_commands.py:\n" + "\n".join(unclassified)
    stale = [text for text in [*RUN, *SKIP] if text not in shown]
    assert not stale, "RUN / SKIP entries the documents no longer show:\n" + "\n".join(stale)
    assert not set(RUN) & set(SKIP)


def prepare(workdir) -> None:
    """What the documents ask the reader to have: an image of their own (photo.jpg, shapes.png, img.jpg),
    LLM folders holding config.json (/models/..., which argv_of moves under workdir), and for a config that
    names a hub LLM, its config.json in the Hugging Face cache (as `minigpt download` leaves it)."""
    image = Image.new("RGB", (128, 96), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 48, 48), fill=(220, 20, 20))
    draw.ellipse((70, 30, 118, 78), fill=(20, 40, 220))
    for name in ("photo.jpg", "shapes.png", "img.jpg"):
        image.save(workdir / name)
    for folder, llm in (("llama2-7b-config", "Llama-2-7b-chat-hf"), ("vicuna-7b-config", "vicuna-7b-v0")):
        (workdir / "models" / folder).mkdir(parents=True)
        (workdir / "models" / folder / "config.json").write_text(json.dumps(LLM_CONFIGS[llm]))
    snapshot = workdir / "hf" / "hub" / "models--Vision-CAIR--vicuna-7b"
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps(LLM_CONFIGS["vicuna-7b-v0"]))


def failures(texts: list[str], results, workdir) -> list[str]:
    """Each command that exited non-zero or whose output (or files) lack what RUN expects, with its output's end."""
    where = documented()
    problems = []
    for text, (code, output, _) in zip(texts, results):
        missing = [e for e in RUN[text].expect if not (
            any(workdir.glob(e[5:])) if e.startswith("file:") else re.search(e, output))]
        if code != 0 or missing:
            problems.append(f"{where[text][0]}: {text}\n  exit status {code}; missing: {missing}\n"
                            + "\n".join("  | " + line for line in output[-3000:].splitlines()))
    return problems


def run_table(slow: bool, workdir, timeout: int) -> None:
    texts = [text for text, run in RUN.items() if run.slow == slow]
    if slow:  # the data the slow chain trains on, made in its own folder
        texts = ["python dataset/synthetic_shapes.py --out data/shapes --seed 0", *texts]
    prepare(workdir)
    start = time.perf_counter()  # each runs in workdir; a write into the checkout fails the run (checkout_guard.py)
    results = run_chain([with_options(argv_of(t, workdir), list(RUN[t].options)) for t in texts], workdir, timeout)
    timings = ", ".join(f"{seconds:.0f}s" for _, _, seconds in results)
    print(f"{len(texts)} documented commands in {time.perf_counter() - start:.0f} s ({timings})")
    problems = failures(texts, results, workdir)
    assert not problems, "\n".join(problems)


def test_fast_documented_commands_run(tmp_path):
    """The data scripts, listings, plans and classical tools, as documented (under a minute on 2 cores)."""
    run_table(False, tmp_path, timeout=300)


@pytest.mark.slow
def test_slow_documented_commands_run(tmp_path):
    """The tiny models trained (2 steps each: FEW_STEPS), chatted with, checked and exported, as documented."""
    run_table(True, tmp_path, timeout=600)


NOT_CONFIG_YAML = {  # YAML blocks of the documents that are not configs: (file, first key) -> what they are
    ("docs/agents.md", "name"): "an agent template (minigpt/agents/templates/; tests/test_agent.py loads the "
                                "shipped ones)",
}


def test_config_keys_in_the_documents_exist():
    """Every config key in prose, in shell commands (--options) and in YAML config blocks is in the schema."""
    problems = []
    for file, number, line, block in document_lines():
        if block is None or block in SHELL_BLOCKS:
            texts = re.findall(r"`([^`]+)`", line) if block is None else [line]
            problems += [f"{file}:{number}: {p}" for text in texts for k in keys_in_text(text)
                         if (p := key_problem(k))]
    for file, number, text in yaml_blocks():
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or not set(data) <= set(SECTIONS):
            if (file, next(iter(data), None) if isinstance(data, dict) else None) not in NOT_CONFIG_YAML:
                problems.append(f"{file}:{number}: a YAML block neither a config (top level: {', '.join(SECTIONS)}) "
                                f"nor in NOT_CONFIG_YAML")
            continue
        builders: dict[str, str] = {}
        paths = yaml_keys(data, [], builders)
        problems += [f"{file}:{number}: {p}" for k in paths if (p := key_problem(k, builders))]
    assert not problems, "config keys the schema does not have:\n" + "\n".join(problems)


def help_text(kind: str, name: str) -> str:
    code, output = help_runs()[0].get(Target(kind, name), (1, ""))
    return output if code == 0 else ""


def known_options() -> frozenset[str]:
    """Every option of every program the documents run: minigpt's subcommands, scripts, modules, torchrun."""
    helps = " ".join(output for _, output in help_runs()[0].values())
    return frozenset().union(*minigpt_options().values(), torchrun_options(), OPTION.findall(helps))


def option_problems(file: str, number: int, line: str) -> list[str]:
    problems = []
    for option in OPTION.finditer(line):
        owners = [m for m in PROGRAM.finditer(line[:option.start() + 2])
                  if (m.group(1) or m.group(6)) in (None, *minigpt_options())]
        options = options_of(owners[-1], help_text) if owners else known_options()
        if isinstance(options, str):
            continue  # another project's program (EXTERNAL)
        if option.group() not in options | {"--help"} and (owners or option.group() not in EXTERNAL_OPTIONS):
            owner = owners[-1].group(0) if owners else "any program the documents run"
            problems.append(f"{file}:{number}: {option.group()}: not an option of {owner}")
    return problems


def test_options_in_the_documents_exist():
    """Every --option in prose is an option of the program its line names (or of some program, if none)."""
    problems = [p for file, number, line, block in document_lines() if block is None
                for p in option_problems(file, number, line)]
    assert not problems, "options the documents name that the programs do not take:\n" + "\n".join(problems)
    assert set(EXTERNAL) >= {"deepspeed", "pip"}
