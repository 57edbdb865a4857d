"""Batch streams: reproducible order, exact resume, DDP chunks equal accumulation, shards split by rank."""
import io
import itertools

import torch
from torch.utils.data import Dataset

from minigpt.datasets.caption_shards import CaptionShardDataset
from minigpt.datasets.loader import BatchStream, MixedBatches
from minigpt.processors.image import Blip2ImageProcessor
from minigpt.processors.text import BlipCaptionProcessor


class Numbers(Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return index


def ids(batch):
    return list(batch) if isinstance(batch, list) else batch["ids"]


def take(iterator, count):
    return [ids(b) for b in itertools.islice(iterator, count)]


def stream(rank=0, world_size=1, batch_size=4, seed=1, size=30):
    return BatchStream("n", Numbers(size), batch_size, list, seed, rank, world_size)


def test_map_stream_is_reproducible_and_resumes_exactly():
    full = take(stream().batches(), 20)  # 7 batches per pass: crosses two pass boundaries
    assert take(stream().batches(), 20) == full
    assert take(stream().batches(start=9), 11) == full[9:]
    assert sorted(sum(full[:7], [])) == sorted(set(sum(full[:7], [])))  # no repeats within a pass
    assert full[:7] != full[7:14]  # each pass has its own order


def test_ddp_ranks_see_what_one_process_sees_with_accumulation():
    single = take(stream(batch_size=4).batches(), 6)
    rank0 = take(stream(rank=0, world_size=2).batches(), 3)
    rank1 = take(stream(rank=1, world_size=2).batches(), 3)
    assert [b for pair in zip(rank0, rank1) for b in pair] == single


def test_mixing_follows_ratios_and_resumes(tmp_path):
    streams = {"a": stream(seed=1), "b": BatchStream("b", Numbers(50), 2, list, 2)}
    mixer = MixedBatches(streams, {"a": 3.0, "b": 1.0}, seed=0)
    chosen = [name for name, _ in itertools.islice(mixer.iterate(), 400)]
    assert 0.68 < chosen.count("a") / 400 < 0.82
    full = [(n, b) for n, b in itertools.islice(mixer.iterate(), 30)]
    assert [(n, b) for n, b in itertools.islice(mixer.iterate(start_micro_step=17), 13)] == full[17:]


def test_shards_are_split_by_rank_without_overlap(shapes_dir):
    pattern = f"{shapes_dir}/shards/shapes-{{000000..000003}}.tar"
    seen = []
    for rank in range(2):
        dataset = CaptionShardDataset("shapes", pattern, Blip2ImageProcessor(64), None, shuffle_buffer=50)
        dataset.set_pass(seed=0, pass_index=0, rank=rank, world_size=2)
        seen.append([sample["id"] for sample in dataset])
    assert len(seen[0]) == len(seen[1]) == 200
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 400


def test_corrupt_shard_image_is_reported_not_fatal(tmp_path):
    import webdataset as wds
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(encoded, format="JPEG")
    jpeg = encoded.getvalue()
    with wds.TarWriter(str(tmp_path / "bad.tar")) as sink:
        sink.write({"__key__": "broken", "jpg": b"not a jpeg", "json": {"caption": "x"}})
        sink.write({"__key__": "nocap", "jpg": b"", "json": {"text": "x"}})
        sink.write({"__key__": "nullcap", "jpg": jpeg, "json": {"caption": None}})  # an img2dataset row without text
        sink.write({"__key__": "good", "jpg": jpeg, "json": {"caption": "A Red square."}})
    dataset = CaptionShardDataset("bad", str(tmp_path / "bad.tar"), Blip2ImageProcessor(64), BlipCaptionProcessor())
    samples = {s["id"].split(":")[-1]: s for s in dataset}
    assert set(samples) == {"broken", "nocap", "nullcap", "good"}
    assert [key for key, s in samples.items() if "skip" not in s] == ["good"] and samples["good"]["turns"][0][1] == "a red square"
    errors = {key: s["skip"][1] for key, s in samples.items() if "skip" in s}
    assert "caption" in errors["nocap"] and "caption is None" in errors["nullcap"] and "bad.tar" in samples["broken"]["id"]
    strict = CaptionShardDataset("bad", str(tmp_path / "bad.tar"), Blip2ImageProcessor(64), None, strict=True)
    try:
        list(strict)
        raise AssertionError("strict mode must raise")
    except ValueError as error:
        assert "bad.tar" in str(error)


def test_mixing_ratios_hold_over_2000_draws_and_follow_the_seed():
    streams = {name: stream(seed=i) for i, name in enumerate("abc")}
    ratios = {"a": 5.0, "b": 3.0, "c": 2.0}
    chosen = [name for name, _ in itertools.islice(MixedBatches(streams, ratios, seed=7).iterate(), 2000)]
    for name, ratio in ratios.items():
        assert abs(chosen.count(name) / 2000 - ratio / 10) < 0.035, (name, chosen.count(name))
    again = [name for name, _ in itertools.islice(MixedBatches(streams, ratios, seed=7).iterate(), 2000)]
    other = [name for name, _ in itertools.islice(MixedBatches(streams, ratios, seed=8).iterate(), 2000)]
    assert again == chosen and other != chosen


def shard_ids(batch):
    return [sample["id"] for sample in batch]


def test_shards_split_by_rank_and_worker_cover_every_sample_once(shapes_dir):
    pattern = f"{shapes_dir}/shards/shapes-{{000000..000003}}.tar"
    seen = []
    for rank in range(2):
        dataset = CaptionShardDataset("shapes", pattern, Blip2ImageProcessor(64), None, shuffle_buffer=20)
        batches = BatchStream("shapes", dataset, 10, shard_ids, seed=3, rank=rank, world_size=2, num_workers=2)
        seen += sum(itertools.islice(batches.batches(), 20), [])  # one pass: 200 samples per rank
    assert len(seen) == 400 and len(set(seen)) == 400


class Texts(Numbers):
    """Samples whose text lengths vary from 10 to 500 characters."""

    def __init__(self, size: int):
        super().__init__(size)
        self.lengths = torch.randint(10, 500, (size,), generator=torch.Generator().manual_seed(0)).tolist()

    def text_length(self, index):
        return self.lengths[index]


def padded_fraction(dataset, batches):
    """Share of a batch's positions that padding fills, when every sample is padded to the batch's longest."""
    padded = sum(max(dataset.lengths[i] for i in b) * len(b) - sum(dataset.lengths[i] for i in b) for b in batches)
    return padded / sum(max(dataset.lengths[i] for i in b) * len(b) for b in batches)


def test_grouping_by_length_cuts_padding_and_keeps_the_pass_and_resume():
    dataset = Texts(2000)
    plain = take(BatchStream("t", dataset, 8, list, seed=3).batches(), 250)  # one pass
    grouped_stream = lambda rank=0, world=1: BatchStream("t", dataset, 8, list, seed=3, rank=rank, world_size=world,  # noqa: E731
                                                         group_by_length=True)
    grouped = take(grouped_stream().batches(), 250)
    assert sorted(sum(grouped, [])) == list(range(2000))  # every sample once per pass
    assert padded_fraction(dataset, grouped) < 0.1 < 0.3 < padded_fraction(dataset, plain)
    assert take(grouped_stream().batches(start=100), 50) == grouped[100:150]  # resumes exactly
    ranks = [take(grouped_stream(rank, 2).batches(), 125) for rank in (0, 1)]
    assert [b for pair in zip(*ranks) for b in pair] == grouped  # DDP ranks split one process's batches
    print(f"padding: {padded_fraction(dataset, plain):.2f} of positions plain, {padded_fraction(dataset, grouped):.2f} grouped")


def test_record_data_sets_give_text_lengths_without_reading_images(tmp_path, shapes_dir):
    from conftest import dataset_config
    from minigpt.datasets.builders.base import build_dataset

    (tmp_path / "no_images_here").mkdir()
    config, _ = dataset_config(tmp_path, shapes_dir, {"sharegpt4v": {"build_info": {
        "ann_path": str(shapes_dir / "train.json"), "image_path": str(tmp_path / "no_images_here")}}})
    dataset = build_dataset("sharegpt4v", config.datasets.sharegpt4v)
    turns = dataset.sample_content(5)["turns"]
    assert dataset.text_length(5) == sum(len(text) for _, text in turns) > 0  # its images folder is empty
    batches = take(BatchStream("s", dataset, 8, list, seed=0, group_by_length=True).batches(), 3)
    assert all(len(batch) == 8 for batch in batches)
