"""Ways to damage a written shard, as a disk, a copy or a hand edit would: shared by the
shard, validate and end-to-end tests (each damages its own copy of a real cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def _first_chunk(shard: Path) -> Path:
    return shard / "audio" / "c" / "0" / "0"


def delete_chunk(shard: Path) -> None:
    _first_chunk(shard).unlink()


def flip_bytes(shard: Path) -> None:
    chunk = _first_chunk(shard)
    data = bytearray(chunk.read_bytes())
    for i in np.linspace(64, len(data) - 64, 40).astype(int):  # 40 bytes across every clip
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))


def edit_offsets(shard: Path) -> None:
    offsets = zarr.open_group(shard, mode="r+", zarr_format=3)["offsets"]
    values = np.asarray(offsets[:])
    values[1:-1] += 1  # every clip boundary one sample later: still increasing, misaligned
    offsets[:] = values


def truncate_chunk(shard: Path) -> None:
    chunk = _first_chunk(shard)
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size // 2)


SHARD_DAMAGE = {
    "deleted chunk": delete_chunk,
    "flipped bytes": flip_bytes,
    "edited offsets": edit_offsets,
    "truncated chunk": truncate_chunk,
}
