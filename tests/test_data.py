"""Streaming data: splitting across ranks and workers, shuffling, crops, views, resume.

The corpus is written with the real shard writer into ``tmp_path``. Every stored sample
encodes where it came from: view row v of clip c at time t holds the int16 value
``v * 5000 + 1 + (131 c + t) % 5000``, so a test can read back, from the audio alone,
which row, which clip and which time window a loader delivered.
"""

from __future__ import annotations

import collections
import itertools
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.manifest import Clip, Manifest, ManifestError
from pipeline.shards import ShardClip, write_view_set
from trainer.data import (
    Batch,
    ClipSample,
    background,
    buffer_order,
    collate_clips,
    make_eval_loader,
    make_train_loader,
    read_blocks,
    resume_point,
    slot_pieces,
)
from trainer.errors import TrainerError

EMOTIONS = ("anger", "fear", "joy")
SPEAKERS = ("s0", "s1", "s2", "s3")
STORED_VIEWS = 5
ROW = 5000  # value band of one view row (see module docstring)


def split_of(c: int) -> str:
    return {4: "val", 5: "test"}.get(c % 6, "train")


def clip_length(c: int) -> int:
    """Between 1000 and 4000 samples (< ROW, so the time code never wraps ambiguously)."""
    return 1000 + (c * 977) % 3000


def encoded(c: int, rows: int, length: int) -> np.ndarray:
    t = np.arange(length)
    codes = np.stack([v * ROW + 1 + (131 * c + t) % ROW for v in range(rows)])
    return codes.astype(np.float64) / 32768.0


def write_corpus(folder, n_clips: int, shard_size: int, split=split_of) -> str:
    """A manifest with one complete speaker view set of ``STORED_VIEWS`` views; its path."""
    clips = tuple(
        Clip(
            id=f"c{c:04d}",
            path=f"c{c:04d}.wav",
            emotion=EMOTIONS[c % 3],
            speaker=SPEAKERS[(c // 3) % 4],
            split=split(c),
            num_samples=clip_length(c),
            source_sample_rate=16000,
            source_channels=1,
        )
        for c in range(n_clips)
    )
    path = folder / "manifest.json"
    stored = [
        ShardClip(f"c{c:04d}", encoded(c, 1 + STORED_VIEWS, clip_length(c)), [{}] * 5)
        for c in range(n_clips)
    ]
    view_set = write_view_set(
        folder / "cache" / "coded" / "speaker-n5-k",
        stored,
        manifest_path=path,
        kind="speaker",
        views=STORED_VIEWS,
        seed=1,
        key="k",
        shard_size=shard_size,
        code_version="test",
    )
    manifest = Manifest(
        dataset="coded",
        source="test",
        data_dir="audio",
        labels={"emotion": EMOTIONS, "speaker": SPEAKERS},
        clips=clips,
        view_sets=(view_set,),
    )
    manifest.save(path)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Manifest, str]:
    """48 clips (32 train, 8 val, 8 test) in 5 shards of up to 10 clips."""
    path = write_corpus(tmp_path_factory.mktemp("coded"), n_clips=48, shard_size=10)
    return Manifest.load(path), path


def train_ids(manifest: Manifest) -> list[str]:
    return sorted(c.id for c in manifest.clips_in("train"))


def epoch_ids(loader, epoch: int) -> list[str]:
    loader.set_epoch(epoch)
    return [cid for batch in loader for cid in batch.clip_ids]


def decode(batch: Batch, b: int) -> tuple[int, np.ndarray]:
    """Clip index and int16 codes (V, length) of item ``b`` of ``batch``."""
    n = int(batch.lengths[b])
    codes = np.rint(batch.audio[b, :, :n].numpy().astype(np.float64) * 32768).astype(np.int64)
    return int(batch.clip_ids[b][1:]), codes


def window_start(c: int, row: int, codes: np.ndarray) -> int:
    """Start time of the window in clip ``c`` that row ``row``'s codes were cut from."""
    return int((codes[0] - row * ROW - 1 - 131 * c) % ROW)


# ----- one epoch across ranks and workers ---------------------------------------------------
def test_every_training_clip_once_per_epoch_across_2_ranks_x_2_workers(corpus):
    manifest, path = corpus

    def run(seed: int, epoch: int) -> list[list[str]]:
        per_rank = []
        for rank in range(2):
            loader = make_train_loader(
                manifest, path, batch_size=3, seed=seed, num_workers=2, rank=rank, world_size=2
            )
            ids = epoch_ids(loader, epoch)
            assert loader.batches_done == len(loader)
            per_rank.append(ids)
        return per_rank

    first = run(seed=7, epoch=0)
    again = run(seed=7, epoch=0)
    second = run(seed=7, epoch=1)
    other_seed = run(seed=8, epoch=0)
    for per_rank in (first, second):
        seen = [cid for ids in per_rank for cid in ids]
        assert sorted(seen) == train_ids(manifest)  # each exactly once, nothing else
        assert len(per_rank[0]) == len(per_rank[1])
    assert first == again
    assert first != second
    assert first != other_seed
    # The ranks' shares themselves change between epochs, not just their internal order.
    assert set(first[0]) != set(second[0])


def test_ddp_ranks_yield_equal_batches_when_the_corpus_does_not_divide(tmp_path):
    # 30 training clips over 2 ranks x 2 workers: 7 per slot, 2 left out per epoch.
    path = write_corpus(tmp_path, n_clips=30, shard_size=8, split=lambda c: "train")
    manifest = Manifest.load(path)
    covered: set[str] = set()
    for epoch in range(4):
        counts, seen = [], []
        for rank in range(2):
            loader = make_train_loader(
                manifest, path, batch_size=3, seed=1, num_workers=2, rank=rank, world_size=2
            )
            loader.set_epoch(epoch)
            batches = list(loader)
            counts.append(len(batches))
            assert len(batches) == len(loader)
            seen += [cid for b in batches for cid in b.clip_ids]
        assert counts[0] == counts[1]
        assert len(seen) == len(set(seen)) == 28
        covered |= set(seen)
    # Which clips are left out changes with the epoch's shard order.
    assert covered == {c.id for c in manifest.clips}


def test_few_shards_are_split_at_clip_level_so_every_slot_gets_work(tmp_path):
    path = write_corpus(tmp_path, n_clips=16, shard_size=16, split=lambda c: "train")
    manifest = Manifest.load(path)
    per_rank = []
    for rank in range(2):
        loader = make_train_loader(
            manifest, path, batch_size=2, seed=3, num_workers=2, rank=rank, world_size=2
        )
        # Each worker of each rank has 4 clips of the single shard: 2 batches each.
        assert loader.dataset.batches_per_worker(2) == [2, 2]
        per_rank.append(epoch_ids(loader, 0))
    assert sorted(per_rank[0] + per_rank[1]) == sorted(c.id for c in manifest.clips)


def test_too_few_clips_for_the_slots_is_a_clear_error(tmp_path):
    path = write_corpus(tmp_path, n_clips=3, shard_size=3, split=lambda c: "train")
    with pytest.raises(TrainerError, match="cannot feed 2 ranks x 2 loader workers"):
        make_train_loader(Manifest.load(path), path, num_workers=2, rank=0, world_size=2)


# ----- crops, views, labels -----------------------------------------------------------------
def test_every_view_of_a_clip_gets_the_same_crop(corpus):
    manifest, path = corpus
    loader = make_train_loader(manifest, path, batch_size=4, seed=5, max_seconds=0.1)
    crop = 1600
    starts: dict[int, dict[str, int]] = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        starts[epoch] = {}
        for batch in loader:
            assert batch.audio.shape[1] == 1 + STORED_VIEWS
            for b in range(len(batch)):
                c, codes = decode(batch, b)
                n = codes.shape[1]
                assert n == min(clip_length(c), crop)
                t0 = window_start(c, 0, codes[0])
                assert 0 <= t0 <= clip_length(c) - n
                for v in range(codes.shape[0]):
                    expected = v * ROW + 1 + (131 * c + t0 + np.arange(n)) % ROW
                    np.testing.assert_array_equal(codes[v], expected)
                assert not batch.audio[b, :, n:].any()  # zero padding after the clip
                starts[epoch][batch.clip_ids[b]] = t0
    assert starts[0].keys() == starts[1].keys()
    assert any(t > 0 for t in starts[0].values())  # crops are not all at the start ...
    assert starts[0] != starts[1]  # ... and are drawn anew each epoch


@pytest.mark.parametrize("views", [0, 2])
def test_views_selects_rows_0_to_n(corpus, views):
    manifest, path = corpus
    loader = make_train_loader(manifest, path, views=views, batch_size=8, seed=1)
    batch = next(iter(loader))
    assert batch.audio.shape[1] == 1 + views
    c, codes = decode(batch, 0)
    assert [window_start(c, v, codes[v]) for v in range(1 + views)] == [0] * (1 + views)


def test_more_views_than_stored_is_a_clear_error(corpus):
    manifest, path = corpus
    with pytest.raises(ManifestError, match="9 speaker views asked for"):
        make_train_loader(manifest, path, views=9)


def test_missing_view_set_is_a_clear_error(corpus):
    manifest, path = corpus
    with pytest.raises(ManifestError, match="no emotion view set"):
        make_train_loader(manifest, path, task="speaker")


@pytest.mark.parametrize("task", ["emotion", "speaker"])
def test_labels_are_vocabulary_indices_of_kept_and_discarded_label(corpus, task):
    manifest, path = corpus
    loader = make_eval_loader(manifest, path, "val", task=task, kind="speaker", batch_size=16)
    clips = manifest.clip_by_id()
    other = "speaker" if task == "emotion" else "emotion"
    checked = 0
    for batch in loader:
        for cid, yt, ya in zip(batch.clip_ids, batch.y_task, batch.y_adv, strict=True):
            assert manifest.labels[task][int(yt)] == getattr(clips[cid], task)
            assert manifest.labels[other][int(ya)] == getattr(clips[cid], other)
            checked += 1
    assert checked == len(manifest.clips_in("val"))


# ----- evaluation ---------------------------------------------------------------------------
def test_eval_reads_view_0_of_the_split_whole_in_stored_order(corpus):
    manifest, path = corpus
    loader = make_eval_loader(manifest, path, "test", batch_size=3)
    ids = []
    for batch in loader:
        assert batch.audio.shape[1] == 1
        for b in range(len(batch)):
            c, codes = decode(batch, b)
            assert codes.shape[1] == clip_length(c)
            np.testing.assert_array_equal(codes[0], 1 + (131 * c + np.arange(clip_length(c))) % ROW)
        ids += batch.clip_ids
    assert ids == [c.id for c in manifest.clips_in("test")]
    assert len(loader) == 3
    # Two workers: the same clips, in an order that repeats.
    with_workers = make_eval_loader(manifest, path, "test", batch_size=3, num_workers=2)
    first = [cid for b in with_workers for cid in b.clip_ids]
    assert sorted(first) == sorted(ids)
    assert [cid for b in with_workers for cid in b.clip_ids] == first


def test_eval_max_seconds_keeps_the_centre_window(corpus):
    manifest, path = corpus
    loader = make_eval_loader(manifest, path, "val", batch_size=8, max_seconds=0.1)
    for batch in loader:
        for b in range(len(batch)):
            c, codes = decode(batch, b)
            n = min(clip_length(c), 1600)
            assert codes.shape[1] == n
            assert window_start(c, 0, codes[0]) == (clip_length(c) - n) // 2


# ----- resume -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize(("num_workers", "skip"), [(2, 3), (3, 5), (0, 4)])
def test_resume_skips_exactly_the_first_batches_of_the_epoch(corpus, num_workers, skip):
    manifest, path = corpus

    def loader():
        return make_train_loader(
            manifest, path, batch_size=5, seed=11, max_seconds=0.1, num_workers=num_workers
        )

    full = loader()
    full.set_epoch(2)
    batches = []
    for batch in full:
        batches.append(batch)
        if len(batches) == skip:
            state = full.state_dict()
    assert state["epoch"] == 2 and state["batches"] == skip
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(batches) - skip == len(resumed) - skip
    for a, b in zip(batches[skip:], rest, strict=True):
        assert a.clip_ids == b.clip_ids
        assert torch.equal(a.audio, b.audio)  # same crops too
    # After the resumed epoch, the next one starts from its beginning.
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(resumed)


# ----- prefetch thread ----------------------------------------------------------------------
def test_prefetch_thread_changes_no_batch(corpus):
    manifest, path = corpus

    def epoch(prefetch: int) -> list[Batch]:
        loader = make_train_loader(
            manifest, path, batch_size=3, seed=5, max_seconds=0.1, prefetch=prefetch
        )
        loader.set_epoch(1)
        return list(loader)

    direct, ahead = epoch(0), epoch(3)
    assert len(direct) == len(ahead) > 1
    for a, b in zip(direct, ahead, strict=True):
        assert a.clip_ids == b.clip_ids
        assert torch.equal(a.audio, b.audio) and torch.equal(a.lengths, b.lengths)


def test_background_raises_the_producers_error_at_its_item():
    def items():
        yield from (1, 2)
        raise ValueError("shard-00003.zarr: damaged")

    got = []
    with pytest.raises(ValueError, match="damaged"):
        for item in background(items(), depth=4):
            got.append(item)
    assert got == [1, 2]


def test_closing_background_early_stops_its_thread():
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    stream = background(endless(), depth=2)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert not any(t.name == "ncore-prefetch" for t in threading.enumerate())
    assert len(produced) <= 2 + 2 + 1  # what was taken, the queue, one in hand


# ----- stages -------------------------------------------------------------------------------
def test_collate_pads_with_zeros_and_records_lengths():
    a = ClipSample("a", np.full((2, 3), 0.5, dtype=np.float32), 1, 2)
    b = ClipSample("b", np.full((2, 5), -0.25, dtype=np.float32), 0, 3)
    batch = collate_clips([a, b])
    assert batch.audio.shape == (2, 2, 5)
    assert batch.lengths.tolist() == [3, 5]
    assert batch.y_task.tolist() == [1, 0] and batch.y_adv.tolist() == [2, 3]
    assert (batch.audio[0, :, :3] == 0.5).all() and not batch.audio[0, :, 3:].any()
    assert (batch.audio[1] == -0.25).all()


@settings(max_examples=80, deadline=None)
@given(
    count=st.integers(0, 200),
    size=st.integers(1, 40),
    initial=st.one_of(st.none(), st.integers(1, 50)),
    seed=st.integers(0, 2**32),
)
def test_buffer_order_is_a_permutation_with_bounded_lookahead(count, size, initial, seed):
    order = buffer_order(count, size, np.random.default_rng(seed), initial)
    assert sorted(order) == list(range(count))
    start = size if initial is None else min(initial, size)
    for position, item in enumerate(order):
        assert item <= position + size  # bounded memory
        assert item <= 2 * position + start  # the first items come out early


def test_buffer_order_with_initial_at_full_size_is_the_plain_buffer():
    def plain(initial):
        return buffer_order(100, 30, np.random.default_rng(3), initial)

    assert plain(30) == plain(None) == plain(99)
    assert plain(4) != plain(None)


def round_robin(batches: list[int]) -> list[tuple[int, int]]:
    """The DataLoader's order: round r takes batch r of every worker that has one."""
    return [(w, r) for r in range(max(batches, default=0)) for w, n in enumerate(batches) if r < n]


@settings(max_examples=80, deadline=None)
@given(
    batches=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    skip=st.integers(0, 30),
)
def test_resume_point_continues_the_loaders_round_robin(batches, skip):
    sequence = round_robin(batches)
    skips, role = resume_point(batches, skip)
    taken = collections.Counter(w for w, _ in sequence[:skip])
    assert skips == [taken[w] for w in range(len(batches))]
    # A fresh loader whose worker p plays worker (p + role) % W yields the rest in order.
    workers = len(batches)
    roles = [(p + role) % workers for p in range(workers)]
    left = [batches[w] - skips[w] for w in roles]
    resumed = [(roles[p], skips[roles[p]] + r) for p, r in round_robin(left)]
    assert resumed == sequence[skip:]


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 100), slots=st.integers(1, 9), equalise=st.booleans())
def test_slot_pieces_are_disjoint_and_contiguous(total, slots, equalise):
    pieces = slot_pieces(total, slots, equalise)
    sizes = [b - a for a, b in pieces]
    assert all(p[1] == q[0] for p, q in itertools.pairwise(pieces))
    assert pieces[0][0] == 0
    assert max(sizes) - min(sizes) <= (0 if equalise else 1)
    assert total - sum(sizes) == (total % slots if equalise else 0)


def test_read_blocks_are_contiguous_ranges_of_one_shard():
    items = [(2, 0), (2, 1), (2, 3), (2, 4), (2, 5), (0, 7), (0, 9), (1, 0)]
    blocks = read_blocks(items, read_block=3)
    assert [(b.shard, b.start, b.stop, b.keep) for b in blocks] == [
        (2, 0, 4, (0, 1, 3)),
        (2, 4, 6, (4, 5)),
        (0, 7, 10, (7, 9)),
        (1, 0, 1, (0,)),
    ]
