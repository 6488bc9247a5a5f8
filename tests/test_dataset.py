"""Training data: description files, record checks, frame sampling, items, statistics and the bucket sampler.

Media are real files made here (x264 videos of a moving square, PNG/JPG images) at tiny sizes: max_hxw 6144,
min_hxw 1024, stride 16, 17 frames.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora_cli.data.annotations import DataProblem, clip_length, load_data_description
from opensora_cli.data.bucketing import BucketBatchSampler
from opensora_cli.data.dataset import (
    DEFAULT_IMAGE_TEXT,
    DEFAULT_VIDEO_TEXT,
    VideoTextDataset,
    choose_caption,
    collate,
    drop_text,
    sample_frame_indices,
)
from opensora_cli.errors import InputError
from opensora_cli.schemas.mask_config import MaskConfig
from opensora_cli.schemas.masks import IMAGE_MASK_TYPES

from .helpers import write_frames, write_image

SMALL = dict(num_frames=17, max_hxw=6144, min_hxw=1024, hw_stride=16, train_fps=15.0)
VIDEO_FRAMES, VIDEO_H, VIDEO_W = 40, 96, 128
# 96x128 -> max_hxw_resize 67x90 -> stride-16 crop 64x80
VIDEO_BUCKET_HW = (64, 80)


def background_level(i: int) -> int:
    return 5 * i + 20


def write_square_video(path: Path, frames: int = VIDEO_FRAMES) -> Path:
    """Frame i: grey background of level 5i + 20 and a coloured 16x16 square moving right by 2 px per frame."""
    data = np.empty((frames, VIDEO_H, VIDEO_W, 3), np.uint8)
    for i in range(frames):
        data[i] = background_level(i)
        data[i, 48:64, 2 * i : 2 * i + 16] = (230, 40, 90)
    return write_frames(path, data, 30, crf=5, macro_block_size=16)  # CRF 5 (imageio's quality 9): near lossless


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_square_video(root / "videos" / "square.mp4")
    write_square_video(root / "videos" / "square2.mp4")
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    write_image(root / "images" / "a.png", 64, 64, color=(10, 200, 60))
    write_image(root / "images" / "b.jpg", 64, 64, color=(200, 30, 30))
    write_image(root / "images" / "tall.png", 80, 48)
    return root


def video(path="videos/square.mp4", cap="a red square moves", **fields):
    record = {"path": path, "cap": cap, "resolution": {"height": VIDEO_H, "width": VIDEO_W},
              "num_frames": VIDEO_FRAMES, "fps": 15}
    record.update(fields)
    return record


def image(path="images/a.png", cap="a green square", height=64, width=64, **fields):
    return {"path": path, "cap": cap, "resolution": {"height": height, "width": width}, **fields}


def write_data(tmp_path: Path, root: Path, records: list, name: str = "ann.json") -> Path:
    (tmp_path / name).write_text(json.dumps(records), encoding="utf-8")
    data_file = tmp_path / "data.txt"
    data_file.write_text(f"{root} , {name}\n", encoding="utf-8")
    return data_file


def make_dataset(tmp_path, root, records, **kwargs) -> VideoTextDataset:
    return VideoTextDataset(data_file=write_data(tmp_path, root, records), **{**SMALL, **kwargs})


def within_sigmas(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


# ----------------------------------------------------------------------------------------------------------------
# Data description file
# ----------------------------------------------------------------------------------------------------------------


def test_description_resolves_relative_paths_against_its_folder(tmp_path, monkeypatch):
    (tmp_path / "media").mkdir()
    (tmp_path / "ann.json").write_text("[]")
    data_file = tmp_path / "data.txt"
    data_file.write_text(f"\n media , ann.json \n{tmp_path / 'media'},{tmp_path / 'ann.json'}\n")
    monkeypatch.chdir("/")
    entries = load_data_description(data_file)
    assert entries == [(tmp_path / "media", tmp_path / "ann.json", 2)] + [
        (tmp_path / "media", tmp_path / "ann.json", 3)
    ]


@pytest.mark.parametrize(
    ("line", "annotation_text", "expected"),
    [
        ("media", None, r"data\.txt:2: expected 'ROOT,ANNOTATION\.json'"),
        ("media,ann.json,extra", None, r"data\.txt:2: expected"),
        ("media,missing.json", None, r"data\.txt:2: annotation file .*missing\.json not found"),
        ("nowhere,ann.json", None, r"data\.txt:2: media folder .*nowhere not found"),
        ("media,bad.json", '[{"path": "a.png",\n "cap": }]', r"data\.txt:2: .*bad\.json:2:\d+: not valid JSON"),
        ("media,obj.json", '{"path": "a.png"}', r"data\.txt:2: .*obj\.json holds a JSON dict, not a list"),
        ("media,ann.pkl", "", r"data\.txt:2: ann\.pkl is a pickle file, which is not supported"),
    ],
)
def test_description_errors_name_file_and_line(tmp_path, line, annotation_text, expected):
    (tmp_path / "media").mkdir()
    (tmp_path / "ann.json").write_text("[]")
    for name in ("bad.json", "obj.json", "ann.pkl"):
        if name in line and annotation_text is not None:
            (tmp_path / name).write_text(annotation_text)
    data_file = tmp_path / "data.txt"
    data_file.write_text(f"media,ann.json\n{line}\n")
    with pytest.raises(InputError, match=expected):
        VideoTextDataset(data_file=data_file, **SMALL)


def test_missing_data_file(tmp_path):
    with pytest.raises(InputError, match="data file not found"):
        load_data_description(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------------------------------
# Record checks
# ----------------------------------------------------------------------------------------------------------------

BAD_RECORDS = [
    ("missing caption", {"path": "images/a.png", "resolution": {"height": 64, "width": 64}}),
    ("empty caption", image(cap=[])),
    ("bad caption", image(cap=["ok", 3])),
    ("bad resolution", image(height=0)),
    ("bad resolution", {"path": "images/a.png", "cap": "x"}),
    ("too short", video(num_frames=12)),  # 12 frames at 15 fps < 17
    ("bad aspect", image(height=40, width=128)),  # -> 32x128, h/w = 1/4
    ("too small", image(height=30, width=40)),  # -> 16x32 = 512 < 1024
    ("too small", image(height=10, width=128)),  # a side of 0 after the stride crop
    ("unknown extension", image(path="images/a.txt")),
    ("too long", video(num_frames=1000)),  # > 5 x 17 frames at 15 fps
    ("bad num_frames", video(num_frames=0)),
    ("bad fps", video(fps=0)),
    ("bad cut", video(cut=[-1, 5])),
    ("bad crop", image(crop=[0, 100, 0, 10])),
    ("missing path", {"cap": "x", "resolution": {"height": 64, "width": 64}}),
    ("bad record", ["not", "an", "object"]),
]


def test_every_skip_reason_is_a_problem_with_its_path(tmp_path, media_root):
    bad = BAD_RECORDS
    records = [image()] + [record for _, record in bad]
    ds = make_dataset(tmp_path, media_root, records)
    assert len(ds.records) == 1 and ds.records[0].path.endswith("a.png")
    assert [p.reason for p in ds.problems] == [reason for reason, _ in bad]
    for problem, (_, record) in zip(ds.problems, bad):
        assert isinstance(problem, DataProblem) and problem.source.endswith("ann.json")
        assert problem.line == records.index(record) + 1
        if isinstance(record, dict) and record.get("path"):
            assert problem.path == str(media_root / record["path"])
            assert problem.path in problem.render() and problem.reason in problem.render()
    summary = ds.summary()
    assert summary["records_read"] == len(records) and summary["records_used"] == 1
    assert summary["skipped"] == dict(Counter(reason for reason, _ in bad))
    assert summary["buckets"] == {"1x64x64": 1}


def test_bad_data_error_raises_on_the_first_bad_record(tmp_path, media_root):
    records = [image(), image(path="images/x.png", cap=""), image(height=0)]
    with pytest.raises(InputError, match=r"data\.txt:1: .*ann\.json record 2: .*x\.png: empty caption"):
        make_dataset(tmp_path, media_root, records, bad_data="error")


def test_accepted_fields(tmp_path, media_root):
    records = [
        video(),
        {k: v for k, v in video(num_frames=30).items() if k != "fps"},  # fps defaults to 24
        image(path="images/b.jpg", cap=["one", "two"], aes=3.0, aesthetic=7.0, tech=1, motion=0),
        image(path="images/a.png", height=64, width=64, crop=[8, 56, 0, 64]),  # crop: bucket from 64x48
        video(path="videos/square.mp4", cut=[4, 44], num_frames=36),
    ]
    ds = make_dataset(tmp_path, media_root, records)
    assert not ds.problems
    assert ds.bucket_keys == [(17, 64, 80), (17, 64, 80), (1, 64, 64), (1, 64, 48), (17, 64, 80)]
    assert ds.records[1].interval == pytest.approx(24 / 15)
    assert ds.records[4].start == 4


# ----------------------------------------------------------------------------------------------------------------
# Frame sampling
# ----------------------------------------------------------------------------------------------------------------


def test_clip_length_is_the_longest_1_plus_4k_with_a_minimum():
    assert clip_length(100, 93) == 93
    assert clip_length(92, 93) == 89
    assert clip_length(40, 93) == 37
    assert clip_length(29, 93) == 29
    assert clip_length(28, 93) == 0  # below 29: too short
    assert clip_length(20, 17) == 17 and clip_length(16, 17) == 0  # the minimum is min(29, num_frames)


def test_fps_30_to_15_takes_every_second_frame_and_reaches_the_last_start(tmp_path, media_root):
    ds = make_dataset(tmp_path, media_root, [video(fps=30)])
    record = ds.records[0]
    assert (record.candidates, record.num_frames) == (20, 17)  # frames 0, 2, ..., 38
    starts = Counter()
    for seed in range(400):
        indices = sample_frame_indices(record, torch.Generator().manual_seed(seed))
        assert len(indices) == 17 and np.all(np.diff(indices) == 2)
        starts[indices[0]] += 1
    assert set(starts) == {0, 2, 4, 6}  # 6 = the last start (the reference never chose it)
    assert all(within_sigmas(count, 400, 0.25) for count in starts.values())


def test_lengths_truncate_to_1_plus_4k(tmp_path, media_root):
    records = [video(num_frames=n) for n in (28, 29, 35, 40, 50)]
    ds = make_dataset(tmp_path, media_root, records, num_frames=93)
    assert [p.reason for p in ds.problems] == ["too short"] and [k[0] for k in ds.bucket_keys] == [29, 33, 37, 49]
    ds = make_dataset(tmp_path, media_root, records, num_frames=29)
    assert [p.reason for p in ds.problems] == ["too short"] and [k[0] for k in ds.bucket_keys] == [29] * 4


def test_speed_factor_spreads_frames_over_a_longer_span(tmp_path, media_root):
    ds = make_dataset(tmp_path, media_root, [video(num_frames=80)], speed_factor=2.0)
    record = ds.records[0]
    assert (record.source_candidates, record.candidates, record.num_frames) == (80, 40, 17)
    indices = sample_frame_indices(record, torch.Generator().manual_seed(0))
    assert set(np.diff(indices)) <= {2, 3} and indices[-1] < 80


# ----------------------------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------------------------


def assert_item_contract(item, bucket_key):
    t, h, w = bucket_key
    assert item["pixel_values"].shape == (3, t, h, w) and item["pixel_values"].dtype == torch.float32
    assert item["masked_pixel_values"].shape == (3, t, h, w)
    assert item["mask"].shape == (1, t, h, w) and item["mask"].dtype == torch.float32
    pixels, masked, mask = item["pixel_values"], item["masked_pixel_values"], item["mask"]
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    generate = mask.expand_as(pixels) == 1
    assert torch.all(masked[generate] == -1) and torch.equal(masked[~generate], pixels[~generate])
    # whole-frame masks: one value per frame
    assert torch.equal(mask, mask[:, :, :1, :1].expand_as(mask))


def test_items_have_the_bucket_size_and_a_consistent_mask(tmp_path, media_root):
    records = [video(), video(path="videos/square2.mp4", fps=30), image(), image(path="images/b.jpg"),
               image(path="images/tall.png", height=80, width=48)]
    ds = make_dataset(tmp_path, media_root, records, cfg=0.0)
    for index, key in enumerate(ds.bucket_keys):
        item = ds[(0, index)]
        assert_item_contract(item, key)
        assert item["path"] == ds.records[index].path and item["replaced"] == []
        assert item["caption"] == records[index]["cap"]
        types = ds.mask_config.image_ratios() if key[0] == 1 else ds.mask_config.video_ratios()
        assert item["mask_type"] in {str(t) for t, p in types.items() if p > 0}


def test_video_frames_are_the_sampled_ones(tmp_path, media_root):
    # 34 frames at 30 fps -> train 15 fps: frames 0, 2, ..., 32, exactly 17, so no random window.
    ds = make_dataset(tmp_path, media_root, [video(fps=30, num_frames=34)])
    pixels = ds[0]["pixel_values"]  # (3, 17, 64, 80)
    levels = ((pixels[:, :, :8, :] + 1) * 127.5).mean(dim=(0, 2, 3))  # background rows above the square
    expected = torch.tensor([background_level(2 * j) for j in range(17)], dtype=torch.float32)
    torch.testing.assert_close(levels, expected, atol=4.0, rtol=0)


def test_items_are_deterministic_per_epoch_and_index_and_vary_across_epochs(tmp_path, media_root):
    records = [video(cap=[f"caption {i}" for i in range(8)]), image(cap=[f"image {i}" for i in range(8)])]
    ds = make_dataset(tmp_path, media_root, records, seed=7)
    again = make_dataset(tmp_path, media_root, records, seed=7)  # another process builds the same dataset
    for index in range(2):
        first, second, other = ds[(3, index)], again[(3, index)], ds[(3, index)]
        for key in ("pixel_values", "masked_pixel_values", "mask"):
            assert torch.equal(first[key], second[key]) and torch.equal(first[key], other[key])
        assert first["caption"] == second["caption"] and first["mask_type"] == second["mask_type"]
        assert torch.equal(ds[index]["mask"], ds[(0, index)]["mask"]) and ds[index]["caption"] == ds[(0, index)][
            "caption"]
        epochs = [ds[(epoch, index)] for epoch in range(6)]
        assert len({item["caption"] for item in epochs}) > 1
        assert len({tuple(item["mask"][0, :, 0, 0].tolist()) for item in epochs}) > 1 or index == 1
    starts = {ds[(epoch, 0)]["pixel_values"][0, 0, 0, 0].item() for epoch in range(6)}
    assert len(starts) > 1  # the temporal window moves (video: 40 frames -> window of 17)


def test_corrupt_or_short_files_are_replaced_by_the_next_record_of_their_bucket(tmp_path, media_root):
    records = [
        video(),
        video(path="videos/corrupt.mp4"),
        video(path="videos/missing.mp4"),
        video(path="videos/square2.mp4", cut=[30, 70]),  # the file has 40 frames, the record needs 30 + 17
        video(path="videos/square2.mp4"),
        image(path="images/missing.png"),
        image(),
    ]
    ds = make_dataset(tmp_path, media_root, records)
    item = ds[(0, 1)]
    assert_item_contract(item, ds.bucket_keys[1])
    assert item["path"].endswith("square2.mp4")
    assert [p.path for p in item["replaced"]] == [ds.records[i].path for i in (1, 2, 3)]
    assert all(p.reason == "decode failed" and p.detail for p in item["replaced"])
    assert "frames" in item["replaced"][2].detail
    # wrapping: the last video of the bucket is fine, the image bucket wraps from 5 to 6
    assert ds[(0, 5)]["path"].endswith("a.png") and len(ds[(0, 5)]["replaced"]) == 1
    assert ds[(0, 4)]["replaced"] == []
    batch = collate([ds[(0, 1)], ds[(0, 0)]])
    assert batch["pixel_values"].shape == (2, 3, 17, 64, 80) and batch["mask"].shape == (2, 1, 17, 64, 80)
    assert len(batch["replaced"]) == 3 and len(batch["caption"]) == 2 and len(batch["path"]) == 2

    strict = make_dataset(tmp_path, media_root, records, bad_data="error")
    with pytest.raises(InputError, match=r"corrupt\.mp4: decode failed"):
        strict[(0, 1)]


def test_a_bucket_of_only_broken_files_raises(tmp_path, media_root):
    ds = make_dataset(tmp_path, media_root, [video(path="videos/corrupt.mp4"), video(path="videos/nope.mp4")])
    with pytest.raises(InputError, match=r"2 records of bucket 17x64x80 in a row failed to load"):
        ds[0]


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------

STATS_CONFIG = MaskConfig(
    min_clear_ratio=0.2,
    max_clear_ratio=0.8,
    mask_type_ratio_dict_video={"t2iv": 2, "i2v": 5, "transition": 0, "continuation": 1, "clear": 1,
                                "random_temporal": 1},
    mask_type_ratio_dict_image={"t2iv": 1, "clear": 3},
)


def test_mask_type_frequencies_follow_the_config(tmp_path, media_root):
    ds = make_dataset(tmp_path, media_root, [image()], mask_config=STATS_CONFIG)
    n = 2000
    for frames, ratios in ((17, STATS_CONFIG.video_ratios()), (1, STATS_CONFIG.image_ratios())):
        counts = Counter(ds.draw_mask(frames, 1, 1, ds.item_generator(0, i))[1] for i in range(n))
        for mask_type, p in ratios.items():
            if p == 0:
                assert counts[str(mask_type)] == 0
            else:
                assert within_sigmas(counts[str(mask_type)], n, p), (mask_type, counts)
        assert set(counts) <= {str(t) for t, p in ratios.items() if p > 0}
        if frames == 1:
            assert set(counts) <= {str(t) for t in IMAGE_MASK_TYPES}


@pytest.mark.parametrize(("kind", "default_text"), [("video", DEFAULT_VIDEO_TEXT), ("image", DEFAULT_IMAGE_TEXT)])
def test_text_dropout_is_5_5_90(kind, default_text):
    n = 4000
    counts = Counter(drop_text("cap", kind, 0.1, 0.5, torch.Generator().manual_seed(i)) for i in range(n))
    assert set(counts) == {"cap", "", default_text}
    assert within_sigmas(counts["cap"], n, 0.9) and within_sigmas(counts[""], n, 0.05)
    assert within_sigmas(counts[default_text], n, 0.05)


def test_caption_choice_is_uniform():
    n = 3000
    counts = Counter(choose_caption(["a", "b", "c"], torch.Generator().manual_seed(i)) for i in range(n))
    assert all(within_sigmas(counts[c], n, 1 / 3) for c in "abc")


def test_statistics_through_getitem(tmp_path, media_root):
    ds = make_dataset(tmp_path, media_root, [image(cap="cap")], mask_config=STATS_CONFIG, cfg=0.2,
                      default_text_ratio=0.25)
    n = 1000
    items = [ds[(epoch, 0)] for epoch in range(n)]
    captions = Counter(item["caption"] for item in items)
    assert within_sigmas(captions["cap"], n, 0.8) and within_sigmas(captions[DEFAULT_IMAGE_TEXT], n, 0.05)
    assert within_sigmas(captions[""], n, 0.15)
    types = Counter(item["mask_type"] for item in items)
    assert set(types) == {"t2iv", "clear"} and within_sigmas(types["clear"], n, 0.75)
    for item in items[:50]:
        assert item["mask"].unique().tolist() == ([0.0] if item["mask_type"] == "clear" else [1.0])


# ----------------------------------------------------------------------------------------------------------------
# Bucket sampler
# ----------------------------------------------------------------------------------------------------------------

KEYS = ["a"] * 10 + ["b"] * 7 + ["c"] * 3 + ["d"] + ["a", "b"] * 3  # a: 13, b: 10, c: 3, d: 1


def take(sampler, n):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(n)]


def test_sampler_epochs_partition_each_bucket_up_to_a_short_tail():
    sampler = BucketBatchSampler(KEYS, batch_size=4, seed=3)
    assert sampler.small_buckets == {"c": 3, "d": 1}
    assert sampler.batches_per_epoch == 3 + 2 and sampler.samples_per_epoch == 20
    batches = take(sampler, 6 * sampler.batches_per_epoch)
    seen_over_epochs = set()
    for epoch in range(6):
        epoch_batches = batches[epoch * 5 : (epoch + 1) * 5]
        assert all(e == epoch for batch in epoch_batches for e, _ in batch)
        indices = [i for batch in epoch_batches for _, i in batch]
        assert len(indices) == len(set(indices))  # no sample twice in an epoch
        for batch in epoch_batches:
            assert len(batch) == 4 and len({KEYS[i] for _, i in batch}) == 1  # one bucket per batch
        used = Counter(KEYS[i] for i in indices)
        total = Counter(KEYS)
        assert all(0 <= total[k] - used[k] < 4 for k in total if k not in sampler.small_buckets)
        assert used["c"] == used["d"] == 0
        seen_over_epochs |= set(indices)
    def indices(epoch):
        return [[i for _, i in batch] for batch in batches[epoch * 5 : (epoch + 1) * 5]]

    assert indices(0) != indices(1)  # reshuffled every epoch
    # tails change with the epoch, so over epochs every sample of a usable bucket is seen
    assert seen_over_epochs == {i for i, k in enumerate(KEYS) if k in ("a", "b")}


def test_ranks_split_each_global_batch():
    one = take(BucketBatchSampler(KEYS, batch_size=4, num_replicas=1, seed=5), 12)
    ranks = [take(BucketBatchSampler(KEYS, batch_size=2, num_replicas=2, rank=r, seed=5), 12) for r in range(2)]
    for step in range(12):
        r0, r1 = ranks[0][step], ranks[1][step]
        assert not set(r0) & set(r1) and len({KEYS[i] for _, i in r0 + r1}) == 1
        # the ranks' batches of one step, concatenated, are the global batch: the 1-process batch of 4
        assert r0 + r1 == one[step]


def test_set_position_resumes_exactly():
    sampler = BucketBatchSampler(KEYS, batch_size=2, num_replicas=2, rank=1, seed=9)
    uninterrupted = take(sampler, 20)
    for consumed in (0, 3, 5, 11, 14):
        resumed = BucketBatchSampler(KEYS, batch_size=2, num_replicas=2, rank=1, seed=9)
        resumed.set_position(*resumed.position_after(consumed))
        assert take(resumed, 20 - consumed) == uninterrupted[consumed:]
    assert sampler.position_after(11) == (2, 1)
    with pytest.raises(ValueError):
        sampler.set_position(0, sampler.batches_per_epoch)


def test_sampler_is_deterministic_and_seeded():
    assert take(BucketBatchSampler(KEYS, 3, seed=1), 10) == take(BucketBatchSampler(KEYS, 3, seed=1), 10)
    assert take(BucketBatchSampler(KEYS, 3, seed=1), 10) != take(BucketBatchSampler(KEYS, 3, seed=2), 10)


def test_sampler_refuses_when_no_bucket_fills_a_batch():
    with pytest.raises(InputError, match=r"global batch of 16 samples .*a: 13, b: 10, c: 3, d: 1"):
        BucketBatchSampler(KEYS, batch_size=8, num_replicas=2)


def test_dataloader_end_to_end(tmp_path, media_root):
    records = [image(), image(path="images/b.jpg"), video(), video(path="videos/square2.mp4"), image()]
    ds = make_dataset(tmp_path, media_root, records)
    sampler = BucketBatchSampler(ds.bucket_keys, batch_size=2, seed=0)
    assert sampler.small_buckets == {}
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    iterator = iter(loader)
    shapes = {tuple(next(iterator)["pixel_values"].shape) for _ in range(4)}
    assert shapes == {(2, 3, 1, 64, 64), (2, 3, 17, 64, 80)}
