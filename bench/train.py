"""Training benchmarks (reported in README, never asserted in tests).

Data stall (:func:`measure_data_stall`): one training epoch fed by the real streaming
loader (``trainer.data.make_train_loader`` over Zarr shards in a temporary folder) against
the same batches held in memory. ``stall = 1 - t_memory / t_stream`` is the share of the
step time lost to data (waiting, and on a small box the CPU the loader workers take from
the model); the time the loop spends blocked in ``next()`` is reported beside it, as is the
loader alone (clips per second).
The consumer is a forward/backward pass of the tiny backbone with the N-CORE loss (or, with
``--consumer cpu``, a fixed amount of matrix work per batch, for a box without the model;
``--consumer idle``, a step that leaves the CPU idle, standing in for a GPU step).

    .venv/bin/python bench/train.py data-stall [--clips 256 --views 5 --workers 0,1,2
                                                --prefetch 0,2]

Cost of N views (:func:`measure_view_cost`): one optimizer step (forward of the 1 + N views
as one batch, N-CORE loss, backward, AdamW) on random in-memory batches for N = 0, 1, 5,
reported as step time, audio seconds processed per second (all views counted, and
original clips only), and, on CUDA, model FLOP utilisation (FLOPs counted by
``torch.utils.flop_counter`` over one step, against the GPU's dense bf16 peak). The
``hubert-base`` backbone is a randomly initialised ``HubertConfig()``: the shapes (and so
the cost) of facebook/hubert-base-ls960 without downloading it.

    .venv/bin/python bench/train.py views [--backbone tiny|hubert-base --views 0,1,5]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from pipeline.manifest import SAMPLE_RATE as SR
from pipeline.manifest import Manifest
from pipeline.rng import make_rng
from pipeline.testing.toy import ToyClip, write_toy_corpus

EMOTIONS = ("calm", "joy", "anger", "fear")
SPEAKERS = ("s0", "s1", "s2", "s3", "s4", "s5")


# ----- data stall -------------------------------------------------------------------------
def write_bench_cache(
    folder: Path, clips: int = 256, views: int = 5, shard_size: int = 64, seed: int = 0
) -> Path:
    """A speaker view set of ``clips`` clips of 1-3 s with ``views`` views; the manifest path.

    Audio is a harmonic tone with vibrato plus noise (so that zstd compresses it about as
    much as speech, not like silence); views are gain/brightness variations of it.
    """
    toys = []
    for c in range(clips):
        rng = make_rng(seed, "bench-clip", c)
        n = int(rng.integers(SR, 3 * SR + 1))
        t = np.arange(n) / SR
        f0 = 120 + 300 * rng.random()
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))) / SR
        tone = sum(k**-1.2 * np.sin(k * phase) for k in range(1, 9))
        rows = [0.3 * tone / np.abs(tone).max() + 0.01 * rng.standard_normal(n)]
        for _ in range(views):
            gain, bright = rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.5)
            rows.append(gain * (rows[0] + bright * np.gradient(rows[0])))
        toys.append(
            ToyClip(
                f"b{c:05d}",
                EMOTIONS[c % len(EMOTIONS)],
                SPEAKERS[c % len(SPEAKERS)],
                "train",
                np.clip(np.stack(rows), -1, 1),
            )
        )
    return write_toy_corpus(
        folder,
        toys,
        emotions=EMOTIONS,
        speakers=SPEAKERS,
        dataset="bench",
        key="bench",
        seed=seed,
        shard_size=shard_size,
        data_dir="audio",
    )


def model_consumer(seed: int = 0) -> Callable[[object], None]:
    """One training step of the tiny backbone + heads + N-CORE loss per batch (AdamW)."""
    from trainer.losses import ncore_loss
    from trainer.model import NCoreModel, load_backbone

    backbone, spec = load_backbone("tiny", seed=seed)
    model = NCoreModel(backbone, spec, len(EMOTIONS), len(SPEAKERS)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch) -> None:
        out = model(batch.audio, batch.lengths)
        ncore_loss(out, batch.y_task, batch.y_adv).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def idle_consumer(step_s: float) -> Callable[[object], None]:
    """A step that keeps the CPU idle for ``step_s`` seconds, as a GPU step does for the
    process driving it (blocked in a CUDA synchronisation, GIL released). Not a GPU
    measurement: what it shows is whether the loader hides behind device time."""

    def step(batch) -> None:
        time.sleep(step_s)

    return step


def cpu_consumer(size: int = 512, repeats: int = 8) -> Callable[[object], None]:
    """A fixed amount of matrix work per batch, independent of the batch's contents."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)

    def step(batch) -> None:
        x = a
        for _ in range(repeats):
            x = torch.tanh(x @ a)
        float(x.sum() + batch.audio[:, 0, 0].sum())

    return step


def timed(batches: Iterable, consume: Callable[[object], None]) -> tuple[float, float, int]:
    """Seconds to consume every batch of ``batches``, seconds of it spent waiting for the
    next batch (the loop blocked on data), and the clip count."""
    clips, waiting = 0, 0.0
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        waiting += time.perf_counter() - asked
        if batch is None:
            break
        consume(batch)
        clips += len(batch)
    return time.perf_counter() - start, waiting, clips


def minor_faults() -> int:
    """Minor page faults of this process so far (pages mapped in one by one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_data_stall(
    clips: int = 256,
    views: int = 5,
    shard_size: int = 64,
    batch_size: int = 8,
    max_seconds: float = 1.0,
    workers: Iterable[int] = (0, 1, 2),
    prefetch: Iterable[int] = (0, 2),
    consumer: str = "model",
    repeats: int = 3,
    seed: int = 0,
    malloc: str = "tuned",
    shuffle_initial: int | None = None,
    idle_step: float = 0.1,
) -> list[dict[str, float]]:
    """Per loader layout: loader-alone clips/s, epoch time streamed vs in memory, stall.

    The layouts are each count of ``workers``; with 0 workers, once per ``prefetch`` depth
    (batches read ahead by a thread of the training process, 0 = none). ``malloc="tuned"``
    applies :func:`pipeline.memory.tune_malloc` first, as ``trainer.loop.train`` does;
    ``"default"`` leaves glibc's defaults (to measure what that setting is worth).
    ``shuffle_initial``: the shuffle buffer's ramp (None: the loader's default).
    ``consumer``: ``model`` (a tiny-model training step), ``cpu`` (fixed matrix work) or
    ``idle`` (``idle_step`` seconds with the CPU idle, standing in for a GPU step).

    Each configuration runs one warm-up epoch of the consumer first (allocator, first-call
    costs), then, ``repeats`` times, epoch 1 from the same batches materialised beforehand
    in a list and epoch 1 streamed (workers start inside the timing, as they do every
    epoch). ``stall`` compares the fastest of each; ``stall_median`` is the median over the
    repeats of each streamed epoch against the in-memory epoch run just before it.
    """
    from pipeline.memory import tune_malloc
    from trainer.data import make_train_loader

    if malloc == "tuned":
        tune_malloc()
    results = []
    with tempfile.TemporaryDirectory(prefix="ncore-bench-") as tmp:
        path = write_bench_cache(Path(tmp), clips, views, shard_size, seed)
        manifest = Manifest.load(path)
        consume = {
            "model": lambda: model_consumer(seed),
            "cpu": cpu_consumer,
            "idle": lambda: idle_consumer(idle_step),
        }[consumer]()
        layouts = [(w, p) for w in workers for p in (prefetch if w == 0 else [0])]
        for num_workers, depth in layouts:
            loader = make_train_loader(
                manifest,
                path,
                task="emotion",
                batch_size=batch_size,
                seed=seed,
                max_seconds=max_seconds,
                num_workers=num_workers,
                prefetch=depth,
                shuffle_initial=shuffle_initial,
            )
            loader.set_epoch(0)
            t_loader, _, n_loader = timed(loader, lambda batch: None)
            loader.set_epoch(0)
            timed(loader, consume)  # warm-up
            loader.set_epoch(1)
            in_memory = list(loader)
            # Alternate the two so that the box's own drift (turbo, other processes) biases
            # neither side.
            runs = []
            for _ in range(repeats):
                f0 = minor_faults()
                t_mem = timed(in_memory, consume)[0]
                f1 = minor_faults()
                loader.set_epoch(1)
                t, waited, n = timed(loader, consume)
                runs.append((t_mem, t, waited / t, f1 - f0, minor_faults() - f1))
            t_memory, t_stream = min(r[0] for r in runs), min(r[1] for r in runs)
            row = {
                "workers": num_workers,
                "prefetch": depth,
                "malloc": malloc,
                "loader_clips_per_s": n_loader / t_loader,
                "stream_s": t_stream,
                "memory_s": t_memory,
                "steps_per_s_stream": len(in_memory) / t_stream,
                "steps_per_s_memory": len(in_memory) / t_memory,
                "stall": 1 - t_memory / t_stream,
                "stall_median": float(np.median(pairs := [1 - r[0] / r[1] for r in runs])),
                "stall_q1": float(np.percentile(pairs, 25)),
                "stall_q3": float(np.percentile(pairs, 75)),
                # The loader's own CPU time per epoch against the 2-core (all-core) time of
                # an in-memory epoch: what it must take from the model on a CPU-bound box.
                "loader_cpu_share": (n / (n_loader / t_loader)) / (t_memory * os.cpu_count()),
                "blocked": float(np.median([r[2] for r in runs])),
                "faults_memory": float(np.median([r[3] for r in runs])),
                "faults_stream": float(np.median([r[4] for r in runs])),
                "clips": n,
            }
            results.append(row)
            print(
                f"workers={num_workers} prefetch={depth} malloc={malloc}: "
                f"loader alone {row['loader_clips_per_s']:.0f} clips/s; "
                f"epoch {t_stream:.2f} s streamed vs {t_memory:.2f} s in memory "
                f"({row['steps_per_s_stream']:.2f} vs {row['steps_per_s_memory']:.2f} steps/s); "
                f"data stall {100 * row['stall']:.1f} % (median of pairs "
                f"{100 * row['stall_median']:.1f} %, quartiles {100 * row['stall_q1']:.1f} to "
                f"{100 * row['stall_q3']:.1f} %); loader CPU "
                f"{100 * row['loader_cpu_share']:.1f} % of the box; loop blocked on next() "
                f"{100 * row['blocked']:.1f} %; page faults per epoch "
                f"{row['faults_stream']:.0f} streamed, {row['faults_memory']:.0f} in memory",
                flush=True,
            )
    return results


# ----- cost of N views ---------------------------------------------------------------------
# Dense bf16 tensor-core peaks (TFLOP/s) used for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def bench_model(backbone: str, seed: int = 0):
    """N-CORE model for the view benchmark: ``tiny`` or ``hubert-base`` (random weights)."""
    from trainer.model import InputSpec, NCoreModel, load_backbone

    if backbone == "hubert-base":
        from transformers import HubertConfig, HubertModel

        torch.manual_seed(seed)
        # Layer drop and SpecAugment off: every step then does the same work.
        config = HubertConfig(layerdrop=0.0, apply_spec_augment=False, mask_time_prob=0.0)
        net, spec = HubertModel(config), InputSpec(do_normalize=True, return_attention_mask=False)
    else:
        net, spec = load_backbone(backbone, seed=seed)
    return NCoreModel(net, spec, len(EMOTIONS), len(SPEAKERS)).train()


def peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of ``device`` if it is a GPU this table knows, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def measure_view_cost(
    backbone: str = "tiny",
    views: Iterable[int] = (0, 1, 5),
    batch_size: int = 16,
    seconds: float = 2.0,
    steps: int = 5,
    warmup: int = 2,
    device: str | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Per N: seconds per optimizer step, audio seconds per second, FLOPs and MFU (CUDA).

    Batches are random waveforms of ``seconds`` (full length, no padding) held on the
    device, so the numbers are the model's cost alone. bf16 autocast on CUDA as in training.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.memory import tune_malloc
    from trainer.inference import autocast
    from trainer.losses import ncore_loss

    tune_malloc()  # as trainer.loop.train does
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = bench_model(backbone, seed).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    samples = round(seconds * SR)
    g = torch.Generator().manual_seed(seed)
    peak = peak_tflops(dev)
    results = []

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for n in views:
        audio = (0.1 * torch.randn(batch_size, 1 + n, samples, generator=g)).to(dev)
        lengths = torch.full((batch_size,), samples, dtype=torch.long, device=dev)
        y_task = torch.randint(len(EMOTIONS), (batch_size,), generator=g).to(dev)
        y_adv = torch.randint(len(SPEAKERS), (batch_size,), generator=g).to(dev)

        def step(audio=audio, lengths=lengths, y_task=y_task, y_adv=y_adv) -> None:
            with autocast(dev):
                out = model(audio, lengths)
            ncore_loss(out, y_task, y_adv).total.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        step_s = (time.perf_counter() - start) / steps
        flops = float(counter.get_total_flops())
        row = {
            "views": n,
            "step_s": step_s,
            "audio_s_per_s": batch_size * (1 + n) * seconds / step_s,
            "clip_audio_s_per_s": batch_size * seconds / step_s,
            "gflops_per_step": flops / 1e9,
            "mfu": (flops / step_s / 1e12) / peak if peak else float("nan"),
        }
        results.append(row)
        mfu = f"; MFU {100 * row['mfu']:.1f} %" if peak else ""
        print(
            f"{backbone} N={n}: {step_s:.3f} s/step (batch {batch_size} x {1 + n} views x "
            f"{seconds:g} s); {row['audio_s_per_s']:.0f} audio s/s all views, "
            f"{row['clip_audio_s_per_s']:.0f} clip s/s; {row['gflops_per_step']:.1f} GFLOP/step"
            f"{mfu}",
            flush=True,
        )
    return results


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}"
    ).replace("  ", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    stall = sub.add_parser("data-stall", help="streaming loader vs batches held in memory")
    stall.add_argument("--clips", type=int, default=256)
    stall.add_argument("--views", type=int, default=5)
    stall.add_argument("--shard-size", type=int, default=64)
    stall.add_argument("--batch-size", type=int, default=8)
    stall.add_argument("--max-seconds", type=float, default=1.0)
    stall.add_argument("--workers", default="0,1,2", help="loader worker counts to try")
    stall.add_argument("--prefetch", default="0,2", help="prefetch depths to try with 0 workers")
    stall.add_argument(
        "--shuffle-initial", type=int, default=None, help="shuffle buffer ramp (clips)"
    )
    stall.add_argument("--consumer", choices=("model", "cpu", "idle"), default="model")
    stall.add_argument(
        "--idle-step", type=float, default=0.1, help="seconds per step of --consumer idle"
    )
    stall.add_argument("--repeats", type=int, default=3)
    stall.add_argument(
        "--malloc", choices=("tuned", "default"), default="tuned", help="glibc malloc settings"
    )
    cost = sub.add_parser("views", help="cost of N = 0, 1, 5 views per step (in memory)")
    cost.add_argument("--backbone", default="tiny", help="tiny, hubert-base, or a model folder")
    cost.add_argument("--views", default="0,1,5")
    cost.add_argument("--batch-size", type=int, default=16)
    cost.add_argument("--seconds", type=float, default=2.0)
    cost.add_argument("--steps", type=int, default=5)
    cost.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    print(machine())
    if args.bench == "data-stall":
        measure_data_stall(
            clips=args.clips,
            views=args.views,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            max_seconds=args.max_seconds,
            workers=[int(w) for w in args.workers.split(",")],
            prefetch=[int(p) for p in args.prefetch.split(",")],
            consumer=args.consumer,
            repeats=args.repeats,
            malloc=args.malloc,
            shuffle_initial=args.shuffle_initial,
            idle_step=args.idle_step,
        )
    if args.bench == "views":
        measure_view_cost(
            backbone=args.backbone,
            views=[int(v) for v in args.views.split(",")],
            batch_size=args.batch_size,
            seconds=args.seconds,
            steps=args.steps,
            device=args.device,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
