"""Benchmark metrics: VQA soft accuracy, exact match, grounding accuracy, captioning BLEU-4 and CIDEr.

Every metric scores a list of predictions (the model's answer text) against their references and
returns the averaged scores plus one score per prediction, so a predictions file shows which answers
counted. The reference of a prediction is a dict, whose fields depend on the metric:

    vqa_accuracy     {"answers": [human answers]}            VQAv2 / OK-VQA / VizWiz style soft accuracy
    exact_match      {"answers": [accepted answers]}         GQA style and the synthetic tasks
    refer_accuracy   {"box": [x1, y1, x2, y2] pixels}        RefCOCO / + / g; with "image_size" [w, h]
    caption          {"captions": [reference captions]}      BLEU-4 and CIDEr(-D), from pycocoevalcap
    attributes       {"section", "attributes": {name: value}} per-section attribute words (attribute_metrics.py)
"""
from __future__ import annotations

import re
from typing import Callable

from minigpt.common.errors import MissingExtraError
from minigpt.conversation.boxes import box_iou, parse_boxes
from minigpt.evaluation.attribute_metrics import score_attributes

# ---- answer normalisation (the rules of the official VQA evaluation) ----------------------------
# Written-out numbers become digits, articles go, and apostrophe-less contractions get theirs back.
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
CONTRACTIONS = {word.replace("'", ""): word for word in (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd she'd've "
    "she'll she's should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's "
    "someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd "
    "there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd we'd've we'll "
    "we're we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've "
    "who'll who're who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll "
    "y'all'd've you'd you'd've you'll you're you've").split()}
PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a full stop, not a decimal point
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")


def normalize_answer(text: str) -> str:
    """'Two dogs.' -> '2 dogs': lower case, punctuation, number words, articles and contractions as the
    official VQA evaluation treats them."""
    original = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = original
    for mark in PUNCTUATION:
        # A mark next to a space (or any mark, when a comma sits inside a number) is dropped; one
        # inside a word splits it.
        dropped = f"{mark} " in original or f" {mark}" in original or _COMMA_IN_NUMBER.search(original)
        text = text.replace(mark, "" if dropped else " ")
    text = _PERIOD.sub("", text)
    words = [NUMBER_WORDS.get(word, word) for word in text.split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


# ---- one score per prediction -------------------------------------------------------------------
def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQAv2 soft accuracy: min(1, matches / 3), averaged over the ways of leaving one human answer out
    (with the usual 10 answers: 3 matches give 0.9, 4 or more give 1.0)."""
    if len(answers) < 2:
        raise ValueError("vqa_accuracy needs several human answers per question; use exact_match for one")
    prediction = normalize_answer(prediction)
    matches = [normalize_answer(answer) == prediction for answer in answers]
    total = sum(matches)
    return sum(min(1.0, (total - match) / 3) for match in matches) / len(answers)


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the normalised prediction equals any normalised accepted answer."""
    return float(normalize_answer(prediction) in {normalize_answer(answer) for answer in answers})


def grounding_iou(prediction: str, box: list[float], image_size: tuple[int, int]) -> float:
    """IoU of the first box the answer names (0-100 grid, scaled to the image) with the target box;
    0.0 when the answer names none."""
    parsed = parse_boxes(prediction, *image_size)
    return box_iou(parsed.boxes[0].box, tuple(box)) if parsed.boxes else 0.0


def caption_tokens(text: str) -> str:
    """Lower case, punctuation split off and dropped, as coco-caption's PTB tokenizer leaves captions."""
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()))


# ---- a metric over a whole data set ------------------------------------------------------------
Scored = tuple[dict[str, float], list[dict[str, float]]]  # (data-set scores, one dict per prediction)


def score_vqa(predictions: list[str], references: list[dict]) -> Scored:
    per_item = [{"vqa_accuracy": vqa_accuracy(p, r["answers"])} for p, r in zip(predictions, references)]
    return _mean(per_item), per_item


def score_exact_match(predictions: list[str], references: list[dict]) -> Scored:
    per_item = [{"exact_match": exact_match(p, r["answers"])} for p, r in zip(predictions, references)]
    return _mean(per_item), per_item


def score_refer(predictions: list[str], references: list[dict]) -> Scored:
    """Accuracy at IoU >= 0.5, the RefCOCO measure, and the mean IoU."""
    per_item = []
    for prediction, reference in zip(predictions, references):
        iou = grounding_iou(prediction, reference["box"], reference["image_size"])
        per_item.append({"refer_accuracy": float(iou >= 0.5), "iou": iou})
    return _mean(per_item), per_item


def score_captions(predictions: list[str], references: list[dict]) -> Scored:
    """Corpus BLEU-4 and CIDEr-D (pycocoevalcap's implementations; CIDEr's document frequencies come
    from this set's references, as in the COCO caption evaluation). Per prediction: its CIDEr."""
    try:  # the `eval` extra
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as error:
        raise MissingExtraError("the caption metric (BLEU-4, CIDEr)", "pycocoevalcap", "eval") from error

    if not predictions:
        return {"bleu4": 0.0, "cider": 0.0}, []
    keys = [str(i) for i in range(len(predictions))]
    candidates = {k: [caption_tokens(p)] for k, p in zip(keys, predictions)}
    gold = {k: [caption_tokens(c) for c in r["captions"]] for k, r in zip(keys, references)}
    bleu, _ = Bleu(4).compute_score(gold, candidates, verbose=0)
    cider, cider_per_item = Cider().compute_score(gold, candidates)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}, [{"cider": float(c)} for c in cider_per_item]


def _mean(per_item: list[dict[str, float]]) -> dict[str, float]:
    if not per_item:
        return {}
    return {key: sum(item[key] for item in per_item) / len(per_item) for key in per_item[0]}


METRICS: dict[str, Callable[[list[str], list[dict]], Scored]] = {
    "vqa_accuracy": score_vqa,
    "exact_match": score_exact_match,
    "refer_accuracy": score_refer,
    "caption": score_captions,
    "attributes": score_attributes,
}
