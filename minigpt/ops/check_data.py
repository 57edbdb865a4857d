"""Check every data set of a training config before training on it.

    minigpt check-data --cfg-path train_configs/X.yaml [--options ...] [--limit N]

For each data set: the annotation file parses (schema and fields), each record's image exists and
decodes, conversation turns alternate, the `<image>` marker sits at the start or end of the first
human turn, and the tokenized sample (with the model's template and image tokens) fits `max_txt_len`.
Prints a summary per data set and the first problems with their record ids; exits with 1 when any
record could not be trained on (truncation and marker placement are warnings).
"""
from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field

from torch.utils.data import IterableDataset
from tqdm import tqdm

from minigpt.common.paths import resolve_path
from minigpt.conversation.collator import ConversationCollator, UnsupervisedSampleError
from minigpt.conversation.template import ConversationError, PromptTemplate
from minigpt.datasets.builders.base import build_dataset
from minigpt.datasets.image_records import read_image
from minigpt.models.image_tokens import image_token_count
from minigpt.models.tokenizer import load_tokenizer

WARNINGS = ("truncated", "<image> marker")


@dataclass
class Report:
    name: str
    records: int = 0
    checked: int = 0
    lengths: list[int] = field(default_factory=list)
    counts: collections.Counter = field(default_factory=collections.Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (record id, kind, detail)

    def add(self, record_id: str, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        self.problems.append((record_id, kind, detail))

    @property
    def errors(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind not in WARNINGS)


def check_sample(report: Report, collator: ConversationCollator, sample: dict) -> None:
    """Template, token budget and turn order of one template-free sample."""
    try:
        encoded = collator.encode(sample)
    except UnsupervisedSampleError as error:
        report.add(sample["id"], "no answer token fits", str(error))
        return
    except ConversationError as error:
        report.add(sample["id"], "invalid conversation", str(error))
        return
    report.lengths.append(len(encoded.input_ids))
    if encoded.truncated:
        report.add(sample["id"], "truncated", f"over max_txt_len={collator.max_txt_len} tokens after the first "
                                              f"question (or a prompt over max_context_len={collator.max_context_len}): "
                                              "the rest is cut")


def check_records(report: Report, dataset, collator: ConversationCollator, limit: int | None) -> None:
    indices = range(min(len(dataset), limit or len(dataset)))
    for index in tqdm(indices, desc=report.name, leave=False):
        record = dataset.records[index]
        record_id = str(record["id"])
        for note in record.get("notes", []):
            report.add(record_id, "<image> marker", note)
        path = dataset.image_file(record)
        if path is not None:
            try:
                read_image(path)
            except FileNotFoundError:
                report.add(record_id, "missing image", str(path))
                continue
            except Exception as error:
                report.add(record_id, "unreadable image", f"{path}: {type(error).__name__}: {error}")
                continue
        try:
            sample = dataset.sample_content(index)
        except Exception as error:  # a record the builder cannot turn into a sample: report it, go on
            report.add(record_id, "invalid record", f"{type(error).__name__}: {error}")
            continue
        check_sample(report, collator, {**sample, "image": True if path is not None else None})
        report.checked += 1


def check_stream(report: Report, dataset, collator: ConversationCollator, limit: int | None) -> None:
    for sample in tqdm(dataset, desc=report.name, leave=False):
        report.records += 1
        if "skip" in sample:
            report.add(str(sample["id"]), sample["skip"][0], sample["skip"][1])
        else:
            check_sample(report, collator, sample)
            report.checked += 1
        if limit and report.records >= limit:
            break


def check_config(config, limit: int | None = None) -> list[Report]:
    model = config.model
    tokenizer = load_tokenizer(resolve_path(model.tokenizer or model.llama_model))
    collator = ConversationCollator(tokenizer, PromptTemplate.from_model_config(model, tokenizer),
                                    image_token_count(model),
                                    model.max_txt_len, max_context_len=model.max_context_len)
    reports = []
    for name, dataset_cfg in config.datasets.items():
        report = Report(str(name))
        reports.append(report)
        try:
            dataset = build_dataset(str(name), dataset_cfg)
        except Exception as error:  # annotation errors name the file, record and field; others are reported too
            report.add("-", "annotation error", str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}")
            continue
        if isinstance(dataset, IterableDataset):
            dataset.resampled = False  # one pass over each shard: a resampled stream never ends
            check_stream(report, dataset, collator, limit)
        else:
            report.records = len(dataset)
            check_records(report, dataset, collator, limit)
        if report.records == 0:  # training would stop on it: fewer samples than one batch
            report.add("-", "no records", "the data set yields no sample (an empty file, or every record filtered out)")
    return reports


def print_reports(reports: list[Report], show: int) -> None:
    header = f"{'dataset':<22} {'records':>8} {'checked':>8} {'errors':>7} {'tokens mean/p95/max':>20}  problems"
    print(header)
    print("-" * len(header))
    for r in reports:
        lengths = sorted(r.lengths)
        tokens = (f"{statistics.mean(lengths):.0f}/{lengths[int(0.95 * (len(lengths) - 1))]}/{lengths[-1]}"
                  if lengths else "-")
        kinds = ", ".join(f"{kind}: {n}" for kind, n in r.counts.items()) or "none"
        print(f"{r.name:<22} {r.records:>8} {r.checked:>8} {r.errors:>7} {tokens:>20}  {kinds}")
    for r in reports:
        if r.problems:
            print(f"\n{r.name}: first problems")
            for record_id, kind, detail in r.problems[:show]:
                print(f"  record {record_id}: {kind}: {detail}")
