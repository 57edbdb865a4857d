"""The benchmark metrics against hand-computed cases."""
import math

import pytest

from minigpt.evaluation.metrics import (
    METRICS,
    caption_tokens,
    exact_match,
    grounding_iou,
    normalize_answer,
    score_captions,
    score_refer,
    vqa_accuracy,
)


@pytest.mark.parametrize("text, normalised", [
    ("Two dogs.", "2 dogs"),
    ("The red-and-blue one", "red and blue 1"),
    ("dont know", "don't know"),
    ("1,000", "1000"),
    ("Yes!", "yes"),
    ("It is 3.5 m", "it is 3.5 m"),
    ("  a\tcat\n", "cat"),
])
def test_answers_are_normalised_as_the_vqa_evaluation_does(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize("matching, expected", [(10, 1.0), (4, 1.0), (3, 0.9), (2, 0.6), (1, 0.3), (0, 0.0)])
def test_vqa_soft_accuracy_over_ten_human_answers(matching, expected):
    # Leave-one-out: with k matches, k subsets hold k-1 of them and 10-k hold all k; each scores min(1, m/3).
    answers = ["2"] * matching + ["3"] * (10 - matching)
    assert vqa_accuracy("Two.", answers) == pytest.approx(expected)


def test_vqa_accuracy_needs_several_answers():
    with pytest.raises(ValueError, match="exact_match"):
        vqa_accuracy("yes", ["yes"])


def test_exact_match_normalises_both_sides():
    assert exact_match("Yes.", ["yes"]) == 1.0
    assert exact_match("the Red square", ["red square", "red box"]) == 1.0
    assert exact_match("red", ["red and blue"]) == 0.0
    assert METRICS["exact_match"](["red", "blue", "no"], [{"answers": ["red"]}, {"answers": ["blue"]},
                                                          {"answers": ["yes"]}])[0] == {"exact_match": pytest.approx(2 / 3)}


def test_grounding_reads_the_first_box_on_the_0_100_grid():
    target, size = [0, 0, 100, 100], (200, 200)
    # {<0><0><49><49>} -> bin centres (0.5 / 100 and 49.5 / 100 of 200 px): (1, 1, 99, 99) px
    assert grounding_iou("{<0><0><49><49>}", target, size) == pytest.approx(98 * 98 / 100 ** 2)
    # (51, 1, 149, 99): 49 x 98 px overlap, union 10000 + 98 * 98 - 4802
    assert grounding_iou("{<25><0><74><49>}", target, size) == pytest.approx(4802 / 14802)
    assert grounding_iou("<p>it</p> {<0><0><49><49>}<delim>{<50><50><99><99>}", target, size) > 0.9  # the first box
    assert grounding_iou("on the left", target, size) == 0.0
    scores, per_item = score_refer(["{<0><0><49><49>}", "{<25><0><74><49>}", "no box"],
                                   [{"box": target, "image_size": size}] * 3)
    assert scores["refer_accuracy"] == pytest.approx(1 / 3)
    assert [item["refer_accuracy"] for item in per_item] == [1.0, 0.0, 0.0]


def test_caption_scores_perfect_and_partial():
    references = [{"captions": ["a red square on the left side", "a red box"]},
                  {"captions": ["two blue circles at the top of the image"]}]
    perfect, per_item = score_captions(["A red square on the left side.", "two blue circles at the top of the image"],
                                       references)
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    # CIDEr-D of a candidate equal to a reference: cosine 1 on every n-gram order, no length penalty, x10;
    # averaged over the image's references (the first image's second reference shares only "a red").
    assert per_item[1]["cider"] == pytest.approx(10.0, abs=1e-6)
    assert perfect["cider"] > 5.0
    # One candidate, one reference: n-gram precisions 4/5, 3/4, 2/3, 1/2 and no brevity penalty.
    partial, _ = score_captions(["a b c d e"], [{"captions": ["a b c d f"]}])
    assert partial["bleu4"] == pytest.approx(math.prod([4 / 5, 3 / 4, 2 / 3, 1 / 2]) ** 0.25, abs=1e-6)


def test_caption_tokens_drop_punctuation():
    assert caption_tokens("A man's hat, (red)!") == "a man's hat red"
