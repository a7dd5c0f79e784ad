"""CUDA-only checks of the one inference path (skipped without a GPU; run by
``bench/gpu_check.sh`` on a lent GPU machine).

On CUDA, ``trainer.inference.infer`` runs under bf16 autocast. These tests bound what that
changes: a clip's embedding must still not depend on the batch it is in beyond bf16's own
rounding, and must stay close to the fp32 CPU embedding of the same model.
"""

from __future__ import annotations

import pytest
import torch

from trainer.data import audio_batches
from trainer.inference import infer
from trainer.model import NCoreModel, load_backbone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LENGTHS = [8000, 32000, 8000, 20000, 11111, 32000, 16000, 4800]
# bf16 keeps 8 significant bits (relative rounding 2**-8 = 0.4 % per value); a few layers
# of accumulated rounding stay within a few per cent of the embedding's norm.
BF16_RELATIVE = 0.05


def relative(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def items(seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [
        (f"c{i}", (0.1 * torch.randn(n, generator=g)).numpy(), i % 4, i % 3)
        for i, n in enumerate(LENGTHS)
    ]


@pytest.mark.parametrize("preset", ["tiny-group", "tiny"])
def test_cuda_inference_does_not_depend_on_the_batch_beyond_bf16_rounding(preset) -> None:
    backbone, spec = load_backbone(preset, seed=3)
    model = NCoreModel(backbone, spec, 4, 3).cuda()
    cuda = torch.device("cuda")
    one = infer(model, audio_batches(items(), batch_size=1), cuda)
    all_ = infer(model, audio_batches(items(), batch_size=len(LENGTHS)), cuda)
    assert one.clip_ids == all_.clip_ids
    worst = max(relative(a, b) for a, b in zip(all_.embeddings, one.embeddings, strict=True))
    print(f"{preset}: worst relative difference, batch of 8 vs alone: {worst:.2e}")
    assert worst < BF16_RELATIVE


def test_cuda_bf16_embeddings_stay_close_to_the_cpu_fp32_ones() -> None:
    backbone, spec = load_backbone("tiny-group", seed=3)
    model = NCoreModel(backbone, spec, 4, 3)
    cpu = infer(model, audio_batches(items(1), batch_size=4), torch.device("cpu"))
    cuda = infer(model.cuda(), audio_batches(items(1), batch_size=4), torch.device("cuda"))
    worst = max(relative(a, b) for a, b in zip(cuda.embeddings, cpu.embeddings, strict=True))
    print(f"worst relative difference, CUDA bf16 vs CPU fp32: {worst:.2e}")
    assert worst < BF16_RELATIVE
