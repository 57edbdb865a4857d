"""Offline tokenizers: a trained sentencepiece model loads like a Llama-2 folder and encodes like spm."""
import random
import shutil
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from minigpt.models.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402

CORPUS = [
    "a large red circle at the top left and a small blue square on the right.",
    "What color is the circle?", "red", "How many shapes are there?", "two",
    "###Human: ", " ###Assistant: ", "###", "[INST] ", " [/INST] ", "<Img><ImageHere></Img> ",
    "Describe this image in detail.", "There are 12 apples and 345 pears.",
] * 30
# Text that does not start with a space (see the module docstring for leading spaces).
SAMPLES = [
    "hello", "What color is the circle?", "###Human: <Img><ImageHere></Img> Where is it? ###Assistant: left###",
    "a  b   c", "trailing space ", "line one\nline two\n", "tab\tseparated", "digits 2024 and 3.14159",
    "ünïcødé 漢字 🙂 Ωμέγα", "MiXeD CaSe WoRdS", "x",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return train_tokenizer(CORPUS, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=400)


@pytest.fixture(scope="module")
def sp(folder) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


@pytest.fixture(scope="module")
def tok(folder):
    return load_tokenizer(folder)


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Words from the corpus mixed with characters it never saw, joined by single spaces."""
    rng = random.Random(seed)
    words = " ".join(CORPUS[:13]).split() + ["zebra", "Ω", "ü", "漢字", "🙂", "42", "x\ny", "##", "<s", "/>"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def test_folder_layout_and_special_ids(folder, tok):
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "corpus.sha256"} <= {p.name for p in folder.iterdir()}
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    assert len(tok) <= 400


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_match_sentencepiece(tok, sp, text):
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids == sp.encode(text)
    assert tok.decode(ids) == text == sp.decode(ids)


def test_ids_match_sentencepiece_on_random_text(tok, sp):
    for text in random_texts(200):
        assert tok(text, add_special_tokens=False).input_ids == sp.encode(text), text


def test_leading_space_differs_from_sentencepiece(tok, sp):
    # spm keeps its dummy "▁" before a leading space; the transformers 5 Llama tokenizer does not.
    ids = sp.encode(" red")
    assert sp.id_to_piece(ids[0]) == "▁"
    assert tok(" red", add_special_tokens=False).input_ids == ids[1:]


def test_byte_fallback_round_trips_unseen_text(tok):
    text = "Zürich → Ελλάδα, 東京 🙂🚀 naïve café"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert any(piece.startswith("<0x") for piece in tok.convert_ids_to_tokens(ids))
    assert tok.decode(ids) == text


def test_special_token_strings_become_single_ids(tok):
    assert tok("</s>", add_special_tokens=False).input_ids[-1:] == [2]
    assert tok("<s>", add_special_tokens=False).input_ids[-1:] == [1]
    ids = tok("red</s>blue<s>", add_special_tokens=False).input_ids
    assert ids.count(2) == 1 and ids.count(1) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "redblue"
    assert tok.decode(ids) == "red</s>blue<s>"


def test_add_special_tokens_prepends_bos_only(tok):
    plain = tok("hello there", add_special_tokens=False).input_ids
    assert tok("hello there", add_special_tokens=True).input_ids == [1] + plain
    assert tok("hello there").input_ids == [1] + plain


def test_pad_token_is_unk_and_pads_right(tok):
    assert tok.pad_token == tok.unk_token and tok.pad_token_id == 0
    assert tok.padding_side == "right"
    batch = tok(["red", "a small blue square"], add_special_tokens=False, padding=True)
    short = tok("red", add_special_tokens=False).input_ids
    width = len(batch.input_ids[1])
    assert batch.input_ids[0] == short + [0] * (width - len(short))
    assert batch.attention_mask[0] == [1] * len(short) + [0] * (width - len(short))


def test_other_loaders_agree(folder, tok, tmp_path):
    from transformers import AutoTokenizer, LlamaTokenizer

    # Only tokenizer.model, as an old Vicuna folder ships: converted by LlamaTokenizer.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folder / "tokenizer.model", bare / "tokenizer.model")
    others = [load_tokenizer(bare), AutoTokenizer.from_pretrained(str(folder)), LlamaTokenizer.from_pretrained(str(folder))]
    for text in SAMPLES + random_texts(20, seed=1):
        expected = tok(text, add_special_tokens=False).input_ids
        for other in others:
            assert other(text, add_special_tokens=False).input_ids == expected
    assert load_tokenizer(bare).pad_token_id == 0


def test_cache_hit_skips_training_and_change_retrains(tmp_path):
    out = tmp_path / "tok"
    train_tokenizer(CORPUS, out, vocab_size=400)
    model, stamp = out / "tokenizer.model", (out / "corpus.sha256").read_text()
    before = model.stat().st_mtime_ns
    assert train_tokenizer(list(CORPUS), out, vocab_size=400) == out
    assert model.stat().st_mtime_ns == before

    # A new corpus retrains, and the loaded tokenizer follows the new model, not stale HF files.
    text = "zebras graze on the savanna"
    before_ids = load_tokenizer(out)(text, add_special_tokens=False).input_ids
    train_tokenizer(CORPUS + [text] * 50, out, vocab_size=400)
    assert (out / "corpus.sha256").read_text() != stamp
    after_ids = load_tokenizer(out)(text, add_special_tokens=False).input_ids
    assert after_ids == spm.SentencePieceProcessor(model_file=str(model)).encode(text)
    assert len(after_ids) < len(before_ids)


def test_training_is_deterministic(tmp_path):
    a = train_tokenizer(CORPUS, tmp_path / "a", vocab_size=400)
    b = train_tokenizer(CORPUS, tmp_path / "b", vocab_size=400)
    assert (a / "tokenizer.model").read_bytes() == (b / "tokenizer.model").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_symbols_are_one_token_wherever_they_stand(tmp_path):
    """A symbol is the same token after a space and inside JSON, in spm and in the HF folder, and the
    symbols are part of what decides whether a folder is reused."""
    corpus = CORPUS + ['{"color": "red"}', '{"color": "blue"}'] * 30
    folder = train_tokenizer(corpus, tmp_path / "symbols", vocab_size=400, symbols=("red", "blue"))
    tokenizer, sp = load_tokenizer(folder), spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    red = tokenizer.convert_tokens_to_ids("red")
    for text in ("a large red circle", '{"color": "red"}'):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == sp.encode(text) and red in ids and tokenizer.decode(ids) == text
    plain = train_tokenizer(corpus, tmp_path / "symbols", vocab_size=400)  # same folder, no symbols: retrained
    assert "red" not in load_tokenizer(plain).tokenize("a large red circle")
