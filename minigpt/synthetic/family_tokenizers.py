"""Tokenizers in the style of today's LLM families, trained offline on a small corpus, so that tiny
random-weight models of each family (AutoConfig.for_model) can be trained and chatted with offline.

Each family's folder has what the real one has where it matters to MiniGPT: the kind of tokenizer
(byte-level BPE for Llama-3 and Qwen2 / Qwen3, sentencepiece BPE for Mistral, Gemma and Phi-3), its special
tokens, its BOS / EOS / pad conventions, and a chat template in the family's format (written here, not
copied; only the markup matters):

    qwen2    <|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n...<|im_end|>     no BOS, pad <|endoftext|>
    qwen3    as qwen2, no default system prompt; <think>\\n\\n</think>\\n\\n after the generation
             prompt with enable_thinking=False
    llama    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n...<|eot_id|>  no pad, no unk
    mistral  <s>[INST] ...[/INST] ...</s>                                             no pad
    gemma2   <bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n...     pad <pad>
    gemma3   as gemma2, the system prompt folded into the first user turn
    phi3     <|user|>\\n...<|end|>\\n<|assistant|>\\n...<|end|>\\n                         pad <|endoftext|>

    python dataset/family_tokenizers.py --family qwen2 --corpus data/shapes/train.json --out data/shapes/tokenizer-qwen2
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from minigpt.models.tokenizer import train_tokenizer


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' name for the architecture (AutoConfig.for_model)
    byte_level: bool  # byte-level BPE (tokenizers) or sentencepiece BPE with byte fallback
    specials: dict[str, str | None]  # bos / eos / pad / unk token text (None: the family has none)
    markup: tuple[str, ...]  # further special tokens its chat template writes
    chat_template: str
    config: dict = field(default_factory=dict)  # tiny shape overrides the architecture needs
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # the attention projections' names
    added: tuple[str, ...] = ()  # ordinary (not special) added tokens


TURNS = "{%- for m in messages -%}"
FAMILIES = {
    "qwen2": Family("qwen2", True, {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
                    ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
                    "{%- if messages[0].role != 'system' -%}"
                    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}{%- endif -%}"
                    + TURNS + "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}{%- endfor -%}"
                    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"),
    "llama": Family("llama", True, {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "unk": None},
                    ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                    "{{- bos_token -}}" + TURNS +
                    "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content | trim + '<|eot_id|>' -}}"
                    "{%- endfor -%}"
                    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"),
    "mistral": Family("mistral", False, {"bos": "<s>", "eos": "</s>", "pad": None, "unk": "<unk>"},
                      ("[INST]", "[/INST]"),
                      "{{- bos_token -}}{%- set ns = namespace(system='') -%}" + TURNS +
                      "{%- if m.role == 'system' -%}{%- set ns.system = m.content + '\\n\\n' -%}"
                      "{%- elif m.role == 'user' -%}{{- '[INST] ' + ns.system + m.content + '[/INST]' -}}"
                      "{%- set ns.system = '' -%}"
                      "{%- else -%}{{- ' ' + m.content + eos_token -}}{%- endif -%}{%- endfor -%}"),
    "gemma2": Family("gemma2", False, {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"},
                     ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
                     "{{- bos_token -}}" + TURNS +
                     "{%- set role = 'model' if m.role == 'assistant' else 'user' -%}"
                     "{{- '<start_of_turn>' + role + '\\n' + m.content | trim + '<end_of_turn>\\n' -}}{%- endfor -%}"
                     "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
                     {"head_dim": 32, "query_pre_attn_scalar": 32}),
    # Qwen3: ChatML without a default system prompt; <think> / </think> are ordinary added tokens, and
    # with enable_thinking=False the generation prompt closes an empty thought, as Qwen3's own template does.
    "qwen3": Family("qwen3", True, {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
                    ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
                    TURNS + "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}{%- endfor -%}"
                    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
                    "{%- if enable_thinking is defined and enable_thinking is false -%}"
                    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}",
                    {"head_dim": 32}, added=("<think>", "</think>")),
    # Gemma 3 (its text model, gemma3_text): Gemma 2's turns, the system prompt folded into the first user turn.
    "gemma3": Family("gemma3_text", False, {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"},
                     ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
                     "{{- bos_token -}}{%- set ns = namespace(system='') -%}" + TURNS +
                     "{%- if m.role == 'system' -%}{%- set ns.system = m.content + '\\n\\n' -%}{%- else -%}"
                     "{%- set role = 'model' if m.role == 'assistant' else 'user' -%}"
                     "{{- '<start_of_turn>' + role + '\\n' + ns.system + m.content | trim + '<end_of_turn>\\n' -}}"
                     "{%- set ns.system = '' -%}{%- endif -%}{%- endfor -%}"
                     "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
                     {"head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 64}),
    "phi3": Family("phi3", False, {"bos": "<s>", "eos": "<|endoftext|>", "pad": "<|endoftext|>", "unk": "<unk>"},
                   ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
                   TURNS + "{{- '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' -}}{%- endfor -%}"
                   "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
                   lora_target_modules=("qkv_proj",)),  # one fused projection for q, k and v
}


def write_family_tokenizer(family_name: str, texts: list[str], out_dir: str | Path, vocab_size: int = 512) -> Path:
    """A tokenizer folder in the family's style trained on `texts`, with its chat template; -> the folder."""
    family = FAMILIES[family_name]
    out_dir = Path(out_dir)
    tokenizer = _byte_level(family, texts, vocab_size) if family.byte_level else _sentencepiece(family, texts, out_dir,
                                                                                                   vocab_size)
    tokenizer.add_tokens(list(family.added))
    tokenizer.chat_template = family.chat_template
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def _byte_level(family: Family, texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE as Llama-3 and Qwen2 have it: every byte a token, no unk."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(family.markup), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    named = {f"{role}_token": text for role, text in family.specials.items() if text is not None}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **named)


def _sentencepiece(family: Family, texts: list[str], out_dir: Path, vocab_size: int):
    """Sentencepiece BPE with byte fallback (as Mistral, Gemma and Phi-3 have it), its own special tokens
    added and named."""
    train_tokenizer(texts, out_dir, vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in family.markup if t not in ("<s>", "</s>")]})
    for role, text in family.specials.items():
        setattr(tokenizer, f"{role}_token", text)
    return tokenizer


def corpus_of(annotation_file: str | Path) -> list[str]:
    """The turns of a ShareGPT-layout JSON file (what the synthetic data sets write), image markers left out."""
    records = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    return [turn["value"].removeprefix("<image>\n") for record in records for turn in record["conversations"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tokenizer in an LLM family's style, with its chat template, "
                                                 "trained on a data set's text.")
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--corpus", required=True, help="a ShareGPT-layout JSON file, e.g. data/shapes/train.json")
    parser.add_argument("--out", required=True, help="the tokenizer folder to write")
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args(argv)
    print(write_family_tokenizer(args.family, corpus_of(args.corpus), args.out, args.vocab_size))
