"""Streaming training and evaluation data from a view set's shards.

The stream is a chain of small stages, each a plain function of explicit arguments
(webdataset style), so that every one of them can be tested on its own:

1. :func:`epoch_order` - the selected clips (split ``"train"`` for training) of every shard,
   in a shard order shuffled with a generator seeded by ``(seed, "shards", epoch)``.
2. :func:`slot_pieces` - that sequence cut into ``world_size x num_workers`` contiguous
   pieces, one per (rank, loader worker) slot. Whole shards stay together except at piece
   boundaries, and a corpus with fewer shards than slots is still split (at clip-range
   level), so every slot gets work and every clip goes to exactly one slot.
3. :func:`read_blocks` - a slot's piece as contiguous clip ranges of at most ``read_block``
   clips of one shard; each block is ONE ``ShardReader.read_range`` call (one zarr read).
4. :func:`buffer_order` - a shuffle buffer of ``shuffle_buffer`` clips (optionally starting
   to emit at ``shuffle_initial`` clips and growing to full size as it goes), seeded by
   ``(seed, "buffer", epoch, rank, worker)``, computed on clip positions before any audio is
   read, so that skipping the first batches of an epoch (resume) reads nothing it drops.
5. crop - a clip longer than ``crop_samples`` gets ONE window start drawn from a generator
   seeded by ``(seed, "crop", epoch, clip_id)``; the same window is cut from all its views.
6. :func:`collate_clips` - zero-padding into a :class:`Batch` with the valid ``lengths``.

Normalisation, attention masks and masked pooling are the model's job (from ``lengths``).

DDP. With ``world_size > 1`` every rank must yield the same number of batches per epoch or
the collective calls hang. Each slot therefore gets exactly ``M // slots`` clips (M training
clips): the at most ``slots - 1`` clips left over are dropped for that epoch. They are the
tail of that epoch's shuffled shard order, so a different few are dropped each epoch and
no clip is ever repeated within an epoch. With ``world_size == 1`` nothing is dropped.

Resume. A DataLoader over an IterableDataset takes its batches from the workers in turn,
skipping exhausted ones. Since every worker can compute every worker's batch count from the
shard metadata, skipping the first ``k`` batches of an epoch is exact: each worker skips its
own share of them, and the loader's workers take over the roles that put the next batch
first (:func:`resume_point`). The batch order depends on the number of
loader workers, so an exact resume needs the same ``num_workers`` and ``world_size``.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.manifest import SAMPLE_RATE, Manifest, ViewSet, other_label
from pipeline.reader import LocatedManifest, choose_view_set, open_shards, reopen_shard
from pipeline.rng import make_rng
from pipeline.shards import (
    ShardError,
    ShardReader,
    int16_to_float,
)
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 256  # clips; ~200 MB at 6 views x 2 s float32, per worker
# Clips in the buffer before it emits; None: a full buffer (the order all results so far
# were measured with). 32 makes the first batch of an epoch wait for one read, not four.
DEFAULT_SHUFFLE_INITIAL: int | None = None
DEFAULT_READ_BLOCK = 64  # clips per zarr read: large enough to amortise one decode call
DEFAULT_PREFETCH = 0  # batches read ahead by a thread without loader workers (see StreamLoader)

T = TypeVar("T")


# ----- records --------------------------------------------------------------------------
@dataclass
class Batch:
    """One padded batch of clips.

    ``audio``: float32 (B, V, T), V = 1 + n_views for training and 1 for evaluation, raw
    waveform in [-1, 1], zero after each clip's length. ``lengths``: int64 (B,) valid samples
    of each clip, the same for all its views. ``y_task`` / ``y_adv``: int64 (B,) indices of
    the kept label y+ and the discarded label y- in the manifest vocabularies.
    """

    audio: torch.Tensor
    lengths: torch.Tensor
    y_task: torch.Tensor
    y_adv: torch.Tensor
    clip_ids: list[str]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with its tensors on ``device``."""
        return Batch(
            audio=self.audio.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            y_task=self.y_task.to(device, non_blocking=non_blocking),
            y_adv=self.y_adv.to(device, non_blocking=non_blocking),
            clip_ids=self.clip_ids,
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for custom batch types."""
        return Batch(
            audio=self.audio.pin_memory(),
            lengths=self.lengths.pin_memory(),
            y_task=self.y_task.pin_memory(),
            y_adv=self.y_adv.pin_memory(),
            clip_ids=self.clip_ids,
        )


@dataclass(frozen=True)
class ClipSample:
    """One clip as :class:`ShardStream` yields it: ``audio`` float32 (V, T) in [-1, 1]."""

    clip_id: str
    audio: np.ndarray
    y_task: int
    y_adv: int


@dataclass(frozen=True)
class ShardIndex:
    """What the plan needs to know of one shard: its path and clip ids, in stored order."""

    path: str
    clip_ids: tuple[str, ...]
    manifest_path: str = ""  # named in the repair command of a damaged-shard error
    checksum: str = ""  # the manifest's, compared again when a loader worker opens it


@dataclass(frozen=True)
class ReadBlock:
    """Clips ``start..stop-1`` of shard ``shard`` read at once; ``keep`` are those streamed."""

    shard: int
    start: int
    stop: int
    keep: tuple[int, ...]


def collate_clips(samples: Sequence[ClipSample]) -> Batch:
    """Zero-pad ``samples`` (each (V, T_i)) to the longest one: a :class:`Batch` (B, V, T).

    Built in numpy (one thread) so that a prefetch thread does not start a second team of
    torch intra-op threads beside the model's.
    """
    if not samples:
        raise ValueError("collate_clips needs at least one sample")
    views = samples[0].audio.shape[0]
    lengths = [s.audio.shape[1] for s in samples]
    audio = np.zeros((len(samples), views, max(lengths)), dtype=np.float32)
    for i, s in enumerate(samples):
        audio[i, :, : lengths[i]] = s.audio
    return Batch(
        audio=torch.from_numpy(audio),
        lengths=torch.tensor(lengths, dtype=torch.int64),
        y_task=torch.tensor([s.y_task for s in samples], dtype=torch.int64),
        y_adv=torch.tensor([s.y_adv for s in samples], dtype=torch.int64),
        clip_ids=[s.clip_id for s in samples],
    )


class _End:
    """End of a :func:`background` stream, with the producer's exception if it failed."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def background(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of ``items``, produced up to ``depth`` ahead by a daemon thread.

    Reading and decoding (zarr, numpy) release the GIL, so with loader workers off the next
    batch is read while the model computes. An exception of the producer is raised here, at
    the item where it happened; closing this generator early stops the producer.
    """
    q: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                q.put(item)
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(_End(e))
            return
        q.put(_End())

    thread = threading.Thread(target=produce, name="ncore-prefetch", daemon=True)
    thread.start()
    try:
        while not isinstance(item := q.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


# ----- plan stages (pure functions of metadata) -------------------------------------------
def epoch_order(
    selected: Sequence[Sequence[int]], seed: int, epoch: int, shuffle: bool
) -> list[tuple[int, int]]:
    """(shard, clip) of every selected clip, shard after shard.

    ``selected[s]`` lists the clip positions of shard ``s`` to stream, ascending. With
    ``shuffle`` the shard order is a permutation drawn from ``(seed, "shards", epoch)``
    and the sequence is rotated by a drawn offset (so it may start and end mid-shard).
    """
    if not shuffle:
        return [(s, int(i)) for s, clips in enumerate(selected) for i in clips]
    rng = make_rng(seed, "shards", epoch)
    order = [(int(s), int(i)) for s in rng.permutation(len(selected)) for i in selected[s]]
    # A random rotation moves the slot boundaries inside shards too, so that a rank's share
    # changes every epoch even when there are only a few shards.
    turn = int(rng.integers(len(order))) if order else 0
    return order[turn:] + order[:turn]


def slot_pieces(total: int, slots: int, equalise: bool) -> list[tuple[int, int]]:
    """Contiguous [start, stop) of each slot in a sequence of ``total`` clips.

    Without ``equalise`` the sizes differ by at most one and cover everything; with it every
    slot gets ``total // slots`` clips and the remainder at the end is left out (DDP).
    """
    if equalise:
        q = total // slots
        return [(s * q, (s + 1) * q) for s in range(slots)]
    return [(s * total // slots, (s + 1) * total // slots) for s in range(slots)]


def read_blocks(items: Sequence[tuple[int, int]], read_block: int) -> list[ReadBlock]:
    """Group consecutive ``(shard, clip)`` items into contiguous reads of <= ``read_block``.

    A block covers the stored range from its first to its last kept clip, so clips of other
    splits in between are decoded too: one large read beats many small ones.
    """
    blocks: list[ReadBlock] = []
    run: list[int] = []
    shard = -1
    for s, i in items:
        if run and (s != shard or len(run) == read_block or i <= run[-1]):
            blocks.append(ReadBlock(shard, run[0], run[-1] + 1, tuple(run)))
            run = []
        shard = s
        run.append(i)
    if run:
        blocks.append(ReadBlock(shard, run[0], run[-1] + 1, tuple(run)))
    return blocks


def buffer_order(
    count: int, buffer_size: int, rng: np.random.Generator | None, initial: int | None = None
) -> list[int]:
    """Output order of ``count`` items read in order 0..count-1 through a shuffle buffer.

    The buffer starts emitting once it holds ``initial`` items (default ``buffer_size``)
    and then grows by one item per item emitted (two reads per emission) up to
    ``buffer_size``; from then on each new item replaces a uniformly drawn one, which is
    emitted. The rest is emitted in a random order at the end. So the item emitted at
    position p was read at position <= min(p + buffer_size, 2p + initial): memory stays
    bounded, and the first batch of an epoch waits for ``initial`` reads, not a full buffer.
    ``rng=None`` keeps the read order.
    """
    if rng is None or buffer_size <= 1:
        return list(range(count))
    limit = buffer_size if initial is None else max(1, min(initial, buffer_size))
    buf: list[int] = []
    out: list[int] = []
    for i in range(count):
        if len(buf) < limit:
            buf.append(i)
            continue
        j = int(rng.integers(len(buf)))
        out.append(buf[j])
        buf[j] = i
        limit = min(limit + 1, buffer_size)
    out.extend(buf[int(k)] for k in rng.permutation(len(buf)))
    return out


def resume_point(batches: Sequence[int], skip: int) -> tuple[list[int], int]:
    """Where each worker resumes so that the loader continues after its first ``skip`` batches.

    The DataLoader takes batch r of worker 0, 1, ..., W-1 in turn, leaving out workers that
    have fewer than r + 1 batches. ``batches[w]`` is worker w's batch count. Returns how many
    of its own batches each worker skips, and the worker whose batch comes next: a resumed
    loader starts its turns at loader worker 0, so loader worker p must play worker
    ``(p + next) % W`` for the rest of the sequence to come out in the same order.
    """
    out = [0] * len(batches)
    left = skip
    for r in range(max(batches, default=0)):
        for w, n in enumerate(batches):
            if r >= n:
                continue
            if left == 0:
                return out, w
            out[w] += 1
            left -= 1
    return out, 0


def crop_window(length: int, crop_samples: int | None, rng: np.random.Generator | None) -> int:
    """Start sample of the window of ``crop_samples`` kept from ``length`` samples.

    ``rng=None`` takes the centre window (evaluation); a clip no longer than the window is
    kept whole (start 0) and padded by :func:`collate_clips`.
    """
    if crop_samples is None or length <= crop_samples:
        return 0
    if rng is None:
        return (length - crop_samples) // 2
    return int(rng.integers(0, length - crop_samples + 1))


# ----- the stream -------------------------------------------------------------------------
class ShardStream(IterableDataset):
    """Per-clip samples of the selected clips of a view set's shards (see module docstring).

    ``rows``: the stored view rows streamed per clip (``[0, 1, .., n]`` for training,
    ``[0]`` for evaluation). ``labels`` maps a clip id to ``(y_task, y_adv)``; clips of the
    shards that are not in ``labels`` are not streamed (other splits). ``crop_samples``:
    longest window kept, in samples (None: whole clips). ``shuffle`` turns on the shard
    order shuffle, the block shuffle, the buffer and random crops; without it the order is
    the stored one and crops are centred. ``batch_size`` is the DataLoader's, needed to
    count and skip batches. Set :attr:`epoch` and :attr:`skip_batches` before iterating.
    """

    def __init__(
        self,
        shards: Sequence[ShardIndex],
        labels: dict[str, tuple[int, int]],
        rows: Sequence[int],
        *,
        batch_size: int,
        crop_samples: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        shuffle_initial: int | None = DEFAULT_SHUFFLE_INITIAL,
        read_block: int = DEFAULT_READ_BLOCK,
        equalise: bool | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise TrainerError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1 or read_block < 1:
            raise TrainerError("batch_size and read_block must be >= 1")
        self.shards = list(shards)
        self.labels = dict(labels)
        self.rows = list(rows)
        self.batch_size = batch_size
        self.crop_samples = crop_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_initial = shuffle_initial
        self.read_block = read_block
        self.equalise = world_size > 1 if equalise is None else equalise
        self.epoch = 0
        self.skip_batches = 0
        self.selected = [
            [i for i, cid in enumerate(s.clip_ids) if cid in self.labels] for s in self.shards
        ]
        self._readers: dict[int, ShardReader] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Readers hold open zarr handles: each loader worker opens its own.
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state

    @property
    def num_clips(self) -> int:
        """Selected clips over all ranks before DDP equalisation."""
        return sum(len(s) for s in self.selected)

    # ----- plan --------------------------------------------------------------------------
    def slot_items(self, worker: int, num_workers: int) -> list[tuple[int, int]]:
        """(shard, clip) items of this rank's ``worker`` in this epoch, in read order."""
        order = epoch_order(self.selected, self.seed, self.epoch, self.shuffle)
        slots = self.world_size * num_workers
        a, b = slot_pieces(len(order), slots, self.equalise)[self.rank * num_workers + worker]
        return order[a:b]

    def batches_per_worker(self, num_workers: int) -> list[int]:
        """Batches each loader worker of this rank yields per epoch (equal across epochs)."""
        slots = self.world_size * num_workers
        pieces = slot_pieces(self.num_clips, slots, self.equalise)
        mine = pieces[self.rank * num_workers : (self.rank + 1) * num_workers]
        return [math.ceil((b - a) / self.batch_size) for a, b in mine]

    def num_batches(self, num_workers: int) -> int:
        """Batches this rank yields in a full epoch with ``num_workers`` loader workers."""
        return sum(self.batches_per_worker(max(num_workers, 1)))

    def worker_plan(self, worker: int, num_workers: int) -> tuple[list[ReadBlock], list[int]]:
        """Read blocks of one worker and the order (indices into their kept clips) to emit."""
        blocks = read_blocks(self.slot_items(worker, num_workers), self.read_block)
        rng = None
        if self.shuffle:
            rng = make_rng(self.seed, "buffer", self.epoch, self.rank, worker)
            blocks = [blocks[int(k)] for k in rng.permutation(len(blocks))]
        count = sum(len(b.keep) for b in blocks)
        order = buffer_order(count, self.shuffle_buffer, rng, self.shuffle_initial)
        skip, _ = resume_point(self.batches_per_worker(num_workers), self.skip_batches)
        return blocks, order[skip[worker] * self.batch_size :]

    # ----- reading -----------------------------------------------------------------------
    def _reader(self, shard: int) -> ShardReader:
        if shard not in self._readers:
            index = self.shards[shard]
            # Checked in full when the loader was built; a worker opens it again, so a
            # shard swapped in since is refused here too.
            reader = reopen_shard(index.path, index.manifest_path or None, index.checksum)
            self._readers[shard] = reader
        return self._readers[shard]

    def _sample(self, clip_id: str, audio: np.ndarray) -> ClipSample:
        rng = make_rng(self.seed, "crop", self.epoch, clip_id) if self.shuffle else None
        start = crop_window(audio.shape[1], self.crop_samples, rng)
        stop = audio.shape[1] if self.crop_samples is None else start + self.crop_samples
        # Only the window is converted (a new array, so the block can be freed once its
        # clips are emitted): with 1-3 s clips and 1 s crops that halves the work.
        window = int16_to_float(audio[:, start:stop])
        y_task, y_adv = self.labels[clip_id]
        return ClipSample(clip_id, window, y_task, y_adv)

    def __iter__(self) -> Iterator[ClipSample]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        _, role = resume_point(self.batches_per_worker(num_workers), self.skip_batches)
        worker = (worker + role) % num_workers
        blocks, order = self.worker_plan(worker, num_workers)
        needed = set(order)
        loaded: dict[int, ClipSample] = {}
        next_block, first = 0, 0  # next block to read; flat index of its first kept clip
        for item in order:
            while item not in loaded:
                block = blocks[next_block]
                wanted = [k for k in range(len(block.keep)) if first + k in needed]
                if wanted:
                    shard = self.shards[block.shard]
                    reader = self._reader(block.shard)
                    clips = reader.read_range(block.start, block.stop, self.rows, raw=True)
                    for k in wanted:
                        i = block.keep[k]
                        loaded[first + k] = self._sample(shard.clip_ids[i], clips[i - block.start])
                first += len(block.keep)
                next_block += 1
            yield loaded.pop(item)


# ----- loaders ----------------------------------------------------------------------------
def shard_error_line(error: ShardError) -> str:
    """The one-line message of a shard error, also when a loader worker re-raised it.

    A DataLoader worker's exception comes back with the worker's traceback in its message;
    the shard's own line is its last line, after the exception's class name.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    for prefix in (
        "pipeline.shards.ShardDamaged: ",
        "pipeline.shards.ShardForeign: ",
        "pipeline.shards.ShardError: ",
    ):
        last = last.removeprefix(prefix)
    return last


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` that knows its epoch and position.

    ``len(loader)`` is the number of batches of a full epoch on this rank. Call
    :meth:`set_epoch` before each epoch (as with DistributedSampler). :meth:`state_dict`
    records the epoch and the batches handed out so far; after :meth:`load_state_dict` the
    next iteration resumes that epoch right after them.

    With ``num_workers=0`` and ``prefetch > 0`` a thread reads ``prefetch`` batches ahead
    (:func:`background`); 0 reads in the consuming thread, which measured faster when the
    model itself runs on the CPU cores (the thread then competes with it for cores and the
    GIL). With workers, the DataLoader's own prefetching applies. The batches and their
    order do not depend on ``prefetch``.
    """

    def __init__(
        self,
        stream: ShardStream,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        if prefetch < 0:
            raise TrainerError(f"prefetch must be >= 0, got {prefetch}")
        self.dataset = stream
        self.num_workers = num_workers
        self.prefetch = prefetch
        self._loader = DataLoader(
            stream,
            batch_size=stream.batch_size,
            num_workers=num_workers,
            collate_fn=collate_clips,
            pin_memory=pin_memory,
            # Fresh workers each epoch: they fork with the current epoch and skip count.
            persistent_workers=False,
        )
        self.batches_done = 0

    def __len__(self) -> int:
        return self.dataset.num_batches(self.num_workers)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch at the next iteration."""
        self.dataset.epoch = epoch
        self.dataset.skip_batches = 0
        self.batches_done = 0

    def __iter__(self) -> Iterator[Batch]:
        self.batches_done = self.dataset.skip_batches
        batches: Iterable[Batch] = self._loader
        if self.num_workers == 0 and self.prefetch > 0:
            batches = background(self._loader, self.prefetch)
        try:
            for batch in batches:
                self.batches_done += 1
                yield batch
        except ShardError as error:  # a damaged shard: one line naming it and the repair
            raise TrainerError(shard_error_line(error)) from None
        self.dataset.skip_batches = 0

    def state_dict(self) -> dict[str, int]:
        """Epoch and batches of it handed out so far, plus the layout they depend on."""
        return {
            "epoch": self.dataset.epoch,
            "batches": self.batches_done,
            "seed": self.dataset.seed,
            "num_workers": self.num_workers,
            "world_size": self.dataset.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue epoch ``state["epoch"]`` after its first batches.

        Resuming under another ``num_workers`` or ``world_size`` keeps the batch count right
        but not which clips the rest of that epoch holds (the order depends on the layout):
        that is logged, not refused.
        """
        for name, mine in (
            ("num_workers", self.num_workers),
            ("world_size", self.dataset.world_size),
        ):
            if name in state and state[name] != mine:
                log.warning(
                    "resuming with %s=%s instead of %s: the rest of epoch %s will not "
                    "repeat the interrupted run's clip order",
                    name,
                    mine,
                    state[name],
                    state["epoch"],
                )
        self.dataset.epoch = int(state["epoch"])
        self.dataset.skip_batches = int(state["batches"])
        self.batches_done = int(state["batches"])


def label_indices(manifest: Manifest, task: str) -> dict[str, tuple[int, int]]:
    """(y_task, y_adv) of every clip: task ``"emotion"`` keeps emotion and discards speaker."""
    if task not in ("emotion", "speaker"):
        raise TrainerError(f"task must be 'emotion' or 'speaker', got {task!r}")
    other = other_label(task)
    keep, drop = manifest.label_index(task), manifest.label_index(other)
    return {c.id: (keep[getattr(c, task)], drop[getattr(c, other)]) for c in manifest.clips}


def _shard_indices(
    source: LocatedManifest,
    view_set: ViewSet,
    skip_unreadable: bool = False,
) -> tuple[int, list[ShardIndex]]:
    """Stored views N and the checked shards of ``view_set`` (``pipeline.reader.open_shards``:
    another view set's or another manifest's shard is refused in one line, as is damage;
    ``skip_unreadable``: a shard that cannot be opened at all is left out)."""
    readers = open_shards(source, view_set, skip_unreadable=skip_unreadable)
    by_path = {s.path: s.checksum for s in view_set.shards}
    stored = min((r.num_views - 1 for r in readers), default=view_set.views)
    return stored, [
        ShardIndex(str(r.path), tuple(r.clip_ids), str(source.path), by_path[r.path.name])
        for r in readers
    ]


def make_train_loader(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    *,
    task: str = "emotion",
    kind: str | None = None,
    views: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    max_seconds: float | None = None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    shuffle_initial: int | None = DEFAULT_SHUFFLE_INITIAL,
    read_block: int = DEFAULT_READ_BLOCK,
    pin_memory: bool = False,
    prefetch: int = DEFAULT_PREFETCH,
    view_set: ViewSet | str | None = None,
) -> StreamLoader:
    """The training loader: views 0..``views`` of the ``train`` clips, shuffled per epoch.

    ``kind``: perturbation kind of the view set (default: the paper's pairing, speaker
    views for the emotion task and vice versa). ``views``: perturbed views per clip
    (0 = the original only, None = every stored view); more than stored is a TrainerError.
    ``max_seconds``: random crop length in seconds, the same window for all views of a clip.
    ``rank`` / ``world_size``: this process's share under DDP. ``view_set``: the view set
    (or its key) to read, the run's; default the largest complete one of ``kind``.
    """
    kind = kind or other_label(task)
    if views is not None and views < 0:
        raise TrainerError(f"views must be >= 0, got {views}")
    source = LocatedManifest.of(manifest, manifest_path)
    stored, shards = _shard_indices(source, choose_view_set(source, kind, views, view_set))
    n = stored if views is None else views
    if n > stored:
        raise TrainerError(f"{n} {kind} views asked for but the shards store {stored}")
    train_ids = {c.id for c in manifest.clips_in("train")}
    labels = {cid: y for cid, y in label_indices(manifest, task).items() if cid in train_ids}
    stream = ShardStream(
        shards,
        labels,
        list(range(n + 1)),
        batch_size=batch_size,
        crop_samples=_crop_samples(max_seconds),
        shuffle=True,
        seed=seed,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=shuffle_buffer,
        shuffle_initial=shuffle_initial,
        read_block=read_block,
    )
    if stream.num_clips == 0:
        raise TrainerError(f"the {kind} view set holds no training clips")
    if world_size > 1 and stream.num_clips < world_size * max(num_workers, 1):
        raise TrainerError(
            f"{stream.num_clips} training clips cannot feed {world_size} ranks x "
            f"{max(num_workers, 1)} loader workers; use fewer workers"
        )
    return StreamLoader(stream, num_workers=num_workers, pin_memory=pin_memory, prefetch=prefetch)


def make_eval_loader(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    split: str,
    *,
    task: str = "emotion",
    kind: str | None = None,
    batch_size: int = 16,
    max_seconds: float | None = None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    read_block: int = DEFAULT_READ_BLOCK,
    pin_memory: bool = False,
    prefetch: int = DEFAULT_PREFETCH,
    view: int = 0,
    view_set: ViewSet | str | None = None,
) -> StreamLoader:
    """An evaluation loader: view 0 of the clips of ``split``, in stored order, not shuffled.

    The originals are read from the shards of a view set (``kind``, else the other kind:
    row 0 is the same original clip in every view set); clips that failed perturbation are
    not stored and therefore not evaluated. ``max_seconds`` keeps the centre window. With
    ``world_size > 1`` ranks get disjoint contiguous parts, not necessarily of equal size.
    ``view`` > 0: that perturbed view instead, from the view set of ``kind`` only (the
    same clips, order and windows as view 0). ``view_set``: read that view set (or key)
    only, the run's.
    """
    if split not in ("train", "val", "test"):
        raise TrainerError(f"split must be train, val or test, got {split!r}")
    source = LocatedManifest.of(manifest, manifest_path)
    kind = kind or other_label(task)
    chosen = choose_view_set(source, kind, view or None, view_set, any_kind=view == 0)
    _, shards = _shard_indices(source, chosen)
    ids = {c.id for c in manifest.clips_in(split)}
    labels = {cid: y for cid, y in label_indices(manifest, task).items() if cid in ids}
    return _view0_loader(
        shards,
        labels,
        batch_size,
        max_seconds,
        rank,
        world_size,
        read_block,
        view=view,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch=prefetch,
    )


def view_loader(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    kind: str,
    view: int,
    *,
    batch_size: int = 16,
    max_seconds: float | None = None,
    view_set: ViewSet | str | None = None,
) -> StreamLoader:
    """View ``view`` (0 the original) of every clip the largest complete ``kind`` view set
    (or ``view_set``) stores, in stored order, centre windows, as the evaluation reads them
    (labels of the emotion task). Refuses shards that do not belong to the manifest, as
    training does."""
    source = LocatedManifest.of(manifest, manifest_path)
    _, shards = _shard_indices(source, choose_view_set(source, kind, max(view, 1), view_set))
    labels = label_indices(manifest, "emotion")
    return _view0_loader(shards, labels, batch_size, max_seconds, view=view)


def _view0_loader(
    shards: Sequence[ShardIndex],
    labels: dict[str, tuple[int, int]],
    batch_size: int,
    max_seconds: float | None,
    rank: int = 0,
    world_size: int = 1,
    read_block: int = DEFAULT_READ_BLOCK,
    view: int = 0,
    **loader: Any,
) -> StreamLoader:
    """View 0 (or ``view``) of the clips in ``labels``, in stored order, centre windows:
    the batches of every evaluation pass (:func:`make_eval_loader`,
    :func:`original_batches`). ``loader``: :class:`StreamLoader` options."""
    stream = ShardStream(
        shards,
        labels,
        [view],
        batch_size=batch_size,
        crop_samples=_crop_samples(max_seconds),
        shuffle=False,
        rank=rank,
        world_size=world_size,
        read_block=read_block,
        equalise=False,
    )
    return StreamLoader(stream, **loader)


def original_batches(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    clip_ids: Sequence[str],
    *,
    task: str = "emotion",
    kind: str | None = None,
    batch_size: int = 16,
    max_seconds: float | None = None,
    on_failure: Callable[[str, str], None],
    view_set: ViewSet | str | None = None,
) -> Iterator[Batch]:
    """Batches of view 0 of ``clip_ids`` from any manifest, for embedding and probing.

    Clips stored in a complete view set are read from its shards exactly as
    :func:`make_eval_loader` reads them (the view set of ``kind`` first, stored order, the
    centre window of ``max_seconds``), so the clips of one split come in the same batches as
    the evaluation's; the others (a manifest never perturbed, clips that failed
    perturbation, an unreadable shard) are decoded from their source files with
    :func:`pipeline.audio.load_audio` and batched after them in ``clip_ids`` order. A clip
    that cannot be read goes to ``on_failure(clip_id, reason)`` and is skipped.
    ``view_set``: read the originals from that view set (or key), the run's.
    """
    from pipeline.audio import AudioError, load_audio

    wanted = set(clip_ids)
    all_labels = label_indices(manifest, task)
    stored: set[str] = set()
    source = LocatedManifest.of(manifest, manifest_path)
    shards = _readable_shards(source, kind or other_label(task), view_set)
    if shards:
        labels = {cid: all_labels[cid] for s in shards for cid in s.clip_ids if cid in wanted}
        stored = set(labels)
        if stored:
            yield from _view0_loader(shards, labels, batch_size, max_seconds)

    def decoded() -> Iterator[tuple[str, np.ndarray, int, int]]:
        data_dir = manifest.data_path(manifest_path)
        by_id = manifest.clip_by_id()
        for cid in clip_ids:
            if cid in stored:
                continue
            try:
                audio, _, _ = load_audio(data_dir / by_id[cid].path)
            except AudioError as error:
                on_failure(cid, error.reason)
                continue
            yield (cid, audio, *all_labels[cid])

    yield from audio_batches(decoded(), batch_size=batch_size, max_seconds=max_seconds)


def audio_batches(
    clips: Iterable[tuple[str, np.ndarray, int, int]],
    *,
    batch_size: int = 16,
    max_seconds: float | None = None,
) -> Iterator[Batch]:
    """Batches of clips already in memory, in the order given: each ``(clip_id, audio,
    y_task, y_adv)`` with ``audio`` float (T,) at 16 kHz in [-1, 1]; clips longer than
    ``max_seconds`` keep their centre window, as in :func:`make_eval_loader`."""
    crop = _crop_samples(max_seconds)
    pending: list[ClipSample] = []
    for clip_id, audio, y_task, y_adv in clips:
        start = crop_window(len(audio), crop, None)
        window = audio[start : len(audio) if crop is None else start + crop]
        pending.append(ClipSample(clip_id, np.asarray(window, np.float32)[None, :], y_task, y_adv))
        if len(pending) == batch_size:
            yield collate_clips(pending)
            pending = []
    if pending:
        yield collate_clips(pending)


def _readable_shards(
    source: LocatedManifest,
    kind: str,
    view_set: ViewSet | str | None = None,
) -> list[ShardIndex]:
    """The shards of the view set :func:`make_eval_loader` reads (``view_set``, or the one
    ``pipeline.reader.choose_view_set`` means for view 0 of ``kind``), none when the manifest
    has no complete view set. A shard that cannot be opened is left out (logged; its clips
    are decoded from source); a damaged one, or one that is not the shard the manifest lists,
    is refused in one line: damaged or foreign audio is never embedded, and never skipped in
    silence."""
    if view_set is None and not any(vs.complete for vs in source.manifest.view_sets):
        return []
    chosen = choose_view_set(source, kind, None, view_set, any_kind=True)
    return _shard_indices(source, chosen, skip_unreadable=True)[1]


def _crop_samples(max_seconds: float | None) -> int | None:
    if max_seconds is None:
        return None
    if max_seconds <= 0:
        raise TrainerError(f"max_seconds must be > 0, got {max_seconds}")
    return max(1, round(max_seconds * SAMPLE_RATE))
