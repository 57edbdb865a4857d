"""Reading annotation files: errors name the file, the record and the field; pickles cannot run code."""
import json
import os
import pickle

import pytest

from minigpt.datasets.annotations import (
    AnnotationError,
    load_plain_pickle,
    load_records,
    parse_conversation,
    require,
    subsample,
)


def test_malformed_json_names_file_and_record(tmp_path):
    path = tmp_path / "ann.json"
    good = json.dumps({"id": "a", "caption": "x"})
    path.write_text("[\n" + ",\n".join([good, good, good, '{"id": "b", "caption": "oops}', good]) + "\n]")
    with pytest.raises(AnnotationError, match=r"ann\.json: record 3: malformed JSON at line 5"):
        load_records(path)
    nested = tmp_path / "filter_cap.json"
    nested.write_text('{"annotations": [' + good + ", " + good + ', {"image_id": 3, "caption": }]}')
    with pytest.raises(AnnotationError, match=r"filter_cap\.json: record 2: malformed JSON"):
        load_records(nested, key="annotations")


def test_jsonl_records_and_their_errors(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3\n')
    with pytest.raises(AnnotationError, match=r"record 2: malformed JSON on line 4"):
        load_records(path)
    path.write_text('{"id": 1}\n{"id": 2}\n')
    assert [r["id"] for r in load_records(path)] == [1, 2]
    # Unicode line and paragraph separators are text inside a JSON string, not ends of lines
    texts = ["line one\u2028line two", "end\u0085of\u2029section"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [r["text"] for r in load_records(path)] == texts


def test_wrong_shape_and_missing_field(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"data": []}')
    with pytest.raises(AnnotationError, match="expected a list of records"):
        load_records(path)
    with pytest.raises(AnnotationError, match=r"ann\.json: record 7 \(id 'x1'\): missing field 'caption'"):
        require({"id": "x1"}, "caption", path, 7)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_load_plain_data_only(tmp_path):
    plain = tmp_path / "refs(unc).p"
    refs = [{"ref_id": 1, "sentences": [{"sent": "the red square"}], "bbox": [1.5, 2, 3, 4]}]
    plain.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_plain_pickle(plain) == refs
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(AnnotationError, match=r"evil\.p: unsafe or broken pickle: refusing to load posix\.system"):
        load_plain_pickle(evil)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_conversation_turns_and_marker_notes():
    turns, notes = parse_conversation([{"from": "human", "value": "<image>\nWhat is it?"},
                                       {"from": "gpt", "value": "a cat"}], "f.json", 0)
    assert turns == [("user", "What is it?"), ("assistant", "a cat")] and notes == []
    _, notes = parse_conversation([{"from": "human", "value": "What <image> is it?"},
                                   {"from": "gpt", "value": "a cat <image>"}], "f.json", 0)
    assert notes == ["conversations[0]: <image> marker in the middle of the text",
                     "conversations[1]: <image> marker outside the first human turn"]
    with pytest.raises(AnnotationError, match=r"record 4 \(id 'r4'\): conversations\[1\]\.from is 'bot'"):
        parse_conversation([{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}], "f.json", 4, "r4")


def test_subsample_by_ids_and_count(tmp_path):
    records = [{"id": str(i)} for i in range(100)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("3\n5\n77\n")
    assert [r["id"] for r in subsample(records, None, str(ids_file))] == ["3", "5", "77"]
    assert [r["id"] for r in subsample(records, None, [5, "9"])] == ["5", "9"]
    drawn = subsample(records, 10, None, seed=1)
    assert len(drawn) == 10 and drawn == subsample(records, 10, None, seed=1) != subsample(records, 10, None, seed=2)


def test_fields_of_the_wrong_type_name_the_field(tmp_path):
    """null, empty or non-text values are refused at parse time, naming the field (not trained on as "None")."""
    from omegaconf import OmegaConf

    from minigpt.datasets.builders.conversation_builders import parse_sharegpt_records
    from minigpt.datasets.builders.vqa_builders import VQABuilder

    question = [{"from": "human", "value": "<image>\nWhat?"}]
    with pytest.raises(AnnotationError, match=r"record 3 \(id 'x'\): conversations\[1\]\.value must be a non-empty string, got None"):
        parse_conversation([*question, {"from": "gpt", "value": None}], "f.json", 3, "x")
    with pytest.raises(AnnotationError, match=r"conversations\[1\]\.value must be a non-empty string, got ' '"):
        parse_conversation([*question, {"from": "gpt", "value": " "}], "f.json", 3, "x")
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([{"id": "m", "image": ["a.jpg", "b.jpg"], "conversations": [*question, {"from": "gpt", "value": "x"}]}]))
    with pytest.raises(AnnotationError, match=r"record 0 \(id 'm'\): field 'image' must be one file name"):
        parse_sharegpt_records(str(path))

    vqa = tmp_path / "vqa.json"
    builder = VQABuilder("ok_vqa", OmegaConf.create({"builder": "ok_vqa", "layout": None, "build_info": {"ann_path": str(vqa)}}))
    def parsed(answer):
        vqa.write_text(json.dumps([{"question_id": 7, "image": "a.jpg", "question": "How many?", "answer": answer}]))
        return builder.parse(vqa)[0]["answers"]
    assert parsed(2) == ["2"] and parsed(["2", "two"]) == ["2", "two"]
    with pytest.raises(AnnotationError, match=r"record 0 \(id 7\): field 'answer' must be a non-empty string, got None"):
        parsed(None)
    with pytest.raises(AnnotationError, match=r"record 0: field 'answer\[1\]' must be a non-empty string, got None"):
        parsed(["2", None])
    with pytest.raises(AnnotationError, match=r"field 'answer' has no answer"):
        parsed([])
