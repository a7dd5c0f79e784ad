"""Batch-invariant inference: a clip's embedding is the same alone and inside any batch,
also for a backbone without attention mask (group-norm feature encoder, as hubert-base)."""

from __future__ import annotations

import pytest
import torch

from trainer.model import NCoreModel, load_backbone

LENGTHS = [8000, 32000, 8000, 20000, 11111, 32000]  # samples at 16 kHz


def model_for(preset: str) -> NCoreModel:
    backbone, spec = load_backbone(preset, seed=3)
    return NCoreModel(backbone, spec, num_task_classes=4, num_adv_classes=3).eval()


def clips(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in LENGTHS]


def batch_of(members: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, 1, T) batch and lengths, as the loaders build it."""
    longest = max(len(c) for c in members)
    audio = torch.zeros(len(members), 1, longest)
    for row, clip in enumerate(members):
        audio[row, 0, : len(clip)] = clip
    return audio, torch.tensor([len(c) for c in members])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_without_a_mask_padding_moves_the_embedding_of_a_plain_forward() -> None:
    """What the rule fixes: the group-norm tiny model has no attention mask, and a 0.5 s clip
    padded to 2 s inside a batch gets another embedding from the plain forward."""
    model = model_for("tiny-group")
    assert not model.spec.return_attention_mask
    short, long = clips()[0], clips()[1]
    with torch.no_grad():
        alone = model(*batch_of([short])).embeddings[0, 0]
        padded = model(*batch_of([short, long])).embeddings[0, 0]
    assert relative(padded, alone) > 0.01


@pytest.mark.parametrize("preset", ["tiny-group", "tiny"])
def test_inference_gives_a_clip_the_same_embedding_alone_and_in_any_batch(preset) -> None:
    model = model_for(preset)
    audio = clips(seed=1)
    with torch.no_grad():
        alone = [model.infer(*batch_of([c])) for c in audio]
        batchings = [
            list(range(len(audio))),  # all together
            [5, 4, 3, 2, 1, 0],  # reversed
            [0, 2],  # two clips of equal length
            [2, 1, 3],  # a short clip with longer ones
        ]
        for order in batchings:
            out = model.infer(*batch_of([audio[i] for i in order]))
            for row, i in enumerate(order):
                assert relative(out.embeddings[row, 0], alone[i].embeddings[0, 0]) < 1e-5
                assert torch.allclose(out.task_logits[row], alone[i].task_logits[0], atol=1e-5)
                assert torch.allclose(out.adv_logits[row], alone[i].adv_logits[0], atol=1e-5)


def test_embed_and_evaluation_passes_do_not_depend_on_the_batch_size() -> None:
    """The one forward pass of evaluation, probes and ``embed`` (``trainer.inference``) with
    batches of 1 and of 6 mixed-length clips gives the same embeddings on the mask-less
    backbone."""
    from trainer.data import audio_batches
    from trainer.inference import infer

    model = model_for("tiny-group")
    items = [(f"c{i}", c.numpy(), 0, 0) for i, c in enumerate(clips(seed=2))]
    cpu = torch.device("cpu")
    one = infer(model, audio_batches(items, batch_size=1), cpu)
    six = infer(model, audio_batches(items, batch_size=6), cpu)
    assert one.clip_ids == six.clip_ids and (one.task_pred == six.task_pred).all()
    for a, b in zip(one.embeddings, six.embeddings, strict=True):
        assert relative(torch.from_numpy(b), torch.from_numpy(a)) < 1e-5
