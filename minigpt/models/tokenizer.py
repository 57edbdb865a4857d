"""Tokenizers: a real Llama-2 / Vicuna folder, or a small sentencepiece model trained offline.

Llama ships a sentencepiece BPE model with byte fallback. Tests and the synthetic task train the same
kind of model on their own text and save it as a Hugging Face folder, so that both kinds load through
`load_tokenizer` and the rest of the code never needs a download.

Behaviour under transformers 5 (checked by tests/test_tokenizer.py):
- `tokenizer(text, add_special_tokens=False).input_ids == spm.encode(text)` for text that does not start
  with a space. For text that does, spm keeps its dummy-prefix "▁" in front of the space while the HF
  Llama tokenizer (legacy=False: prepend "▁" only where there is none) does not; real Llama-2 folders
  behave the same way, so callers should not rely on leading spaces.
- `add_special_tokens=True` prepends BOS (id 1) and adds no EOS, as Llama-2 does; the code of this
  project always passes add_special_tokens=False and places BOS itself.
- "<s>" and "</s>" written inside text become the single special ids 1 and 2, and
  `decode(ids, skip_special_tokens=True)` drops them.
- There is no pad token in Llama-2, so `load_tokenizer` pads with unk (id 0); labels mask padding anyway.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import sentencepiece as spm
from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerBase

from minigpt.common.errors import InputFileNotFoundError

# The normaliser settings match Llama-2's own model: no rewriting of the text, so decode(encode(x)) == x.
SPM_OPTIONS = dict(
    model_type="bpe", byte_fallback=True, hard_vocab_limit=False, character_coverage=1.0,
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True, normalization_rule_name="identity",
    remove_extra_whitespaces=False, add_dummy_prefix=True, num_threads=1, minloglevel=2,
)
SEED = 1234
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def corpus_digest(texts: list[str], vocab_size: int, symbols: tuple[str, ...] = ()) -> str:
    """Hash of everything that decides the trained model, so a changed corpus or option retrains."""
    options = {**SPM_OPTIONS, "user_defined_symbols": list(symbols)} if symbols else SPM_OPTIONS
    blob = json.dumps({"vocab_size": vocab_size, "options": options, "seed": SEED, "texts": texts})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def train_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 512,
                    symbols: tuple[str, ...] = ()) -> Path:
    """Train a BPE sentencepiece model on `texts` into `out_dir` as a HF tokenizer folder; reuse a match.

    Byte fallback needs vocab_size > 259 (256 bytes + unk/bos/eos) plus the distinct characters seen.
    `hard_vocab_limit=False` lets a small corpus end with fewer pieces than asked for.
    `symbols` are always one piece of their own, wherever they stand: "red" is the same token after a
    space ("a red circle" -> "▁", "red", ...) and inside JSON ('"red"}}'), so a word learned in one
    place is the word of the other.
    """
    out_dir = Path(out_dir)
    stamp = out_dir / "corpus.sha256"
    digest = corpus_digest(texts, vocab_size, tuple(symbols))
    complete = all((out_dir / name).exists() for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"))
    if complete and stamp.exists() and stamp.read_text().strip() == digest:
        return out_dir

    # Stale HF files would win over the new tokenizer.model when loading, so clear them first.
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.sha256", *HF_FILES):
        (out_dir / name).unlink(missing_ok=True)

    spm.set_random_generator_seed(SEED)
    model = io.BytesIO()
    extra = {"user_defined_symbols": list(symbols)} if symbols else {}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
                                   **SPM_OPTIONS, **extra)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())

    # Converting through LlamaTokenizer gives the tokenizer.json a real Llama-2 folder has (BOS added).
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir), add_bos_token=True, add_eos_token=False,
                                               local_files_only=True)
    finish(tokenizer).save_pretrained(str(out_dir))
    stamp.write_text(digest + "\n")  # written last: an interrupted run retrains
    return out_dir


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer folder: a Llama-2 / Vicuna HF folder or one written by `train_tokenizer`."""
    path = Path(path)
    tokenizer = None
    # A folder with only tokenizer.model has no config naming its class; AutoTokenizer would build a
    # generic backend there, so go straight to LlamaTokenizer, which converts the sentencepiece model.
    # (Never LlamaTokenizer(vocab_file=...): in transformers 5 that gives an empty 3-token vocabulary.)
    if any((path / name).exists() for name in ("tokenizer_config.json", "tokenizer.json", "config.json")):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True,
                                                      trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError):
            tokenizer = None
    if tokenizer is None:
        if not (path / "tokenizer.model").exists():
            raise InputFileNotFoundError(f"{path}: no tokenizer files (expected tokenizer.model or tokenizer.json)")
        tokenizer = LlamaTokenizer.from_pretrained(str(path), local_files_only=True)
    return finish(tokenizer)


def finish(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token one, and pad on the right, after the text: Llama-2 pads with unk
    (as MiniGPT-4 did); a byte-level tokenizer with no unk (Llama-3, Qwen) reuses its EOS, which labels and
    attention masks leave out wherever it pads."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
