"""Model, GRL and loss properties of the trainer (tiny randomly initialised HuBERT), and what
``load_backbone`` refuses: a backbone folder never runs its own code, and unsafe weights are
one line (regressions of issue 13: a folder whose ``config.json`` has an ``auto_map`` made
transformers ask "run the custom code? [y/N]" on a terminal, and answering y ran the
folder's Python file; a pickled ``pytorch_model.bin`` gave a 61-line traceback). The
terminal is real there (a pseudo-terminal answering y), as is the model folder.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.errors import TrainerError
from trainer.losses import batch_variance_consistency, consistency_loss, ncore_loss
from trainer.model import (
    InputSpec,
    ModelOutput,
    NCoreModel,
    classification_head,
    gradient_reversal,
    load_backbone,
    normalise_waveforms,
    tiny_backbone_config,
)
from trainer.schedules import grl_alpha_at

SR = 16000


@pytest.fixture(scope="module")
def tiny_model() -> NCoreModel:
    backbone, spec = load_backbone("tiny", seed=3)
    model = NCoreModel(backbone, spec, num_task_classes=4, num_adv_classes=3)
    return model.eval()


def random_batch(batch: int, views: int, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    samples = max(lengths)
    audio = 0.1 * torch.randn(batch, views, samples, generator=g)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    for b, n in enumerate(lengths):
        audio[b, :, n:] = 0.0
    return audio, lengths_t


# ----- eq. 1 -------------------------------------------------------------------------------


def brute_force_consistency(embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. 1 as printed: per clip, the sum over i<j of squared distances / (N(N+1)/2)."""
    batch, views, _ = embeddings.shape
    per_clip = []
    for b in range(batch):
        pairs = list(itertools.combinations(range(views), 2))
        total = sum(((embeddings[b, i] - embeddings[b, j]) ** 2).sum() for i, j in pairs)
        n = views - 1
        per_clip.append(total / (n * (n + 1) / 2))
    return torch.stack(per_clip).mean()


@pytest.mark.parametrize("views", [2, 3, 6])
def test_consistency_loss_equals_brute_force_eq1(views: int) -> None:
    g = torch.Generator().manual_seed(views)
    embeddings = torch.randn(5, views, 17, generator=g, dtype=torch.float64) * 3 + 1
    fast = consistency_loss(embeddings)
    slow = brute_force_consistency(embeddings)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_consistency_loss_is_zero_for_identical_views_and_single_view() -> None:
    x = torch.randn(4, 1, 8)
    assert consistency_loss(x.expand(4, 5, 8)).abs().item() < 1e-10
    assert consistency_loss(x).item() == 0.0


def consistency_term(embeddings: torch.Tensor, **options) -> torch.Tensor:
    """The consistency term of ``ncore_loss`` (kept in the graph) for ``embeddings``; float32,
    as ncore_loss computes it."""
    batch = embeddings.shape[0]
    out = ModelOutput(embeddings=embeddings, task_logits=torch.zeros(batch, 2), adv_logits=None)
    labels = torch.zeros(batch, dtype=torch.long)
    return ncore_loss(out, labels, labels, lambda_ce=0.0, lambda_reg=1.0, **options).total


def brute_force_clip_variance(embeddings: torch.Tensor) -> torch.Tensor:
    """Total variance (divide by B, summed over dimensions) of the originals (view 0)."""
    originals = [embeddings[b, 0] for b in range(embeddings.shape[0])]
    mean = sum(originals) / len(originals)
    return sum(((x - mean) ** 2).sum() for x in originals) / len(originals)


@pytest.mark.parametrize("views", [2, 3, 6])
def test_batch_variance_consistency_is_eq1_over_twice_the_clip_variance(views: int) -> None:
    g = torch.Generator().manual_seed(10 + views)
    embeddings = torch.randn(5, views, 17, generator=g, dtype=torch.float64) * 3 + 1
    expected = brute_force_consistency(embeddings) / (
        2.0 * brute_force_clip_variance(embeddings) + 1e-8
    )
    assert torch.allclose(batch_variance_consistency(embeddings), expected, rtol=1e-10, atol=0)
    got = consistency_term(embeddings, consistency_norm="batch-variance")
    assert math.isclose(got.item(), expected.item(), rel_tol=1e-5)
    # The default is eq. 1 itself.
    eq1 = consistency_term(embeddings).item()
    assert math.isclose(eq1, brute_force_consistency(embeddings).item(), rel_tol=1e-5)


@pytest.mark.parametrize("scale", [0.01, 7.0])
def test_batch_variance_consistency_is_scale_free_and_eq1_is_not(scale: float) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, 9, generator=g, dtype=torch.float64)
    free, free_scaled = (
        consistency_term(e, consistency_norm="batch-variance") for e in (x, scale * x)
    )
    assert math.isclose(free_scaled.item(), free.item(), rel_tol=1e-5)
    eq1, eq1_scaled = consistency_term(x).item(), consistency_term(scale * x).item()
    assert math.isclose(eq1_scaled, scale**2 * eq1, rel_tol=1e-5)
    assert not math.isclose(eq1_scaled, eq1, rel_tol=0.1)


def test_batch_variance_consistency_gives_no_gradient_towards_shrinking() -> None:
    """The normaliser stays in the graph, so the gradient has no component along the
    embeddings themselves (Euler: x . grad = 0 for a scale-free loss), whereas eq. 1's is
    x . grad = 2 L: it is lowered by shrinking every embedding."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 9, generator=g, dtype=torch.float64).requires_grad_(True)
    free = consistency_term(x, consistency_norm="batch-variance")
    (grad,) = torch.autograd.grad(free, x)
    assert abs((x * grad).sum().item()) < 1e-5 * grad.norm().item() * x.norm().item()
    assert grad.norm().item() > 1e-3  # views can still be pulled together
    eq1 = consistency_term(x)
    (grad,) = torch.autograd.grad(eq1, x)
    assert math.isclose((x * grad).sum().item(), 2 * eq1.item(), rel_tol=1e-5)


# ----- GRL signs -------------------------------------------------------------------------


def test_gradient_reversal_is_identity_forward_and_minus_alpha_backward() -> None:
    x = torch.randn(3, 5, requires_grad=True)
    y = gradient_reversal(x, 0.7)
    assert torch.equal(y, x)
    upstream = torch.randn(3, 5)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.7 * upstream)


@pytest.mark.parametrize("objective, head_sign, encoder_sign", [("dann", 1, -1), ("paper", -1, 1)])
def test_adversarial_gradients_follow_objective(objective, head_sign, encoder_sign) -> None:
    """dann: h- gets +l_GRL * dCE and the encoder -alpha * l_GRL * dCE; paper (eq. 4 literal):
    h- gets -l_GRL * dCE and the encoder +alpha * l_GRL * dCE (the two flips cancel)."""
    torch.manual_seed(0)
    alpha, lam = 0.6, 0.25
    head = classification_head(8, 3, dropout=0.0)
    x0 = torch.randn(6, 8)
    y_adv = torch.tensor([0, 1, 2, 0, 1, 2])

    # Reference: the ordinary CE of the head on x0, no GRL, no weighting.
    x_ref = x0.clone().requires_grad_(True)
    head.zero_grad()
    torch.nn.functional.cross_entropy(head(x_ref), y_adv).backward()
    ref_head = [p.grad.clone() for p in head.parameters()]
    ref_x = x_ref.grad.clone()

    # N-CORE objective with only the adversarial term active.
    x = x0.clone().requires_grad_(True)
    head.zero_grad()
    out = ModelOutput(
        embeddings=x[:, None, :],
        task_logits=torch.zeros(6, 2, requires_grad=True),
        adv_logits=head(gradient_reversal(x, alpha)),
    )
    terms = ncore_loss(
        out,
        torch.zeros(6, dtype=torch.long),
        y_adv,
        lambda_ce=0.0,
        lambda_reg=0.0,
        lambda_grl=lam,
        grl_objective=objective,
    )
    terms.total.backward()
    for got, ref in zip(head.parameters(), ref_head, strict=True):
        assert torch.allclose(got.grad, head_sign * lam * ref, atol=1e-7)
    assert torch.allclose(x.grad, encoder_sign * alpha * lam * ref_x, atol=1e-7)


@pytest.mark.parametrize("progress", [0.0, 0.05, 0.3, 1.0])
def test_encoder_gets_minus_scheduled_alpha_times_the_adversary_gradient(progress) -> None:
    """With the ``dann`` schedule set as the loop sets it, the gradient reaching the pooled
    embedding from h- is -alpha_p times the gradient of h-'s loss at its input."""
    alpha = 0.8
    alpha_p = alpha * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)  # Ganin & Lempitsky
    backbone, spec = load_backbone("tiny", seed=5)
    torch.manual_seed(5)
    model = NCoreModel(backbone, spec, 4, 3, dropout=0.0, grl_alpha=alpha).eval()
    model.grl_alpha = grl_alpha_at(alpha, "dann", progress)
    audio, lengths = random_batch(3, 1, [4000, 3000, 4000], seed=5)
    y_adv = torch.tensor([0, 2, 1])

    out = model(audio, lengths)
    out.embeddings.retain_grad()
    torch.nn.functional.cross_entropy(out.adv_logits, y_adv).backward()

    x_ref = out.embeddings[:, 0].detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model.adv_head(x_ref), y_adv).backward()
    assert x_ref.grad.abs().max() > 1e-4  # a gradient that can be told apart from zero
    assert torch.allclose(out.embeddings.grad[:, 0], -alpha_p * x_ref.grad, atol=1e-7)
    if progress == 0.0:
        assert torch.count_nonzero(out.embeddings.grad) == 0  # nothing reversed at the start


# ----- batching, pooling, normalisation ---------------------------------------------------


def test_batched_views_equal_separate_forward_passes(tiny_model: NCoreModel) -> None:
    audio, lengths = random_batch(3, 4, [24000, 16000, 9000], seed=1)
    with torch.no_grad():
        together = tiny_model.embed(audio, lengths)
        for v in range(4):
            alone = tiny_model.embed(audio[:, v : v + 1], lengths)
            assert torch.allclose(together[:, v : v + 1], alone, atol=1e-5)


def test_masked_pooling_same_embedding_alone_and_padded(tiny_model: NCoreModel) -> None:
    assert tiny_model.spec.return_attention_mask  # the tiny preset takes a mask
    audio, lengths = random_batch(3, 1, [32000, 11111, 20000], seed=2)
    with torch.no_grad():
        padded = tiny_model.embed(audio, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = tiny_model.embed(audio[b : b + 1, :, :n], lengths[b : b + 1])
            assert torch.allclose(padded[b], alone[0], atol=1e-5), b


def test_padding_changes_embedding_without_mask_but_not_the_valid_frame_count() -> None:
    """Guard that the pooling test above could fail: averaging padded frames (as the
    reference code did) gives a different embedding for the short clip."""
    backbone, _ = load_backbone("tiny", seed=3)
    model = NCoreModel(backbone, InputSpec(True, True), 2, None).eval()
    audio, lengths = random_batch(2, 1, [32000, 8000], seed=4)
    with torch.no_grad():
        hidden = backbone(audio[:, 0], attention_mask=(audio[:, 0] != 0).long()).last_hidden_state
        naive = hidden[1].mean(dim=0)
        masked = model.embed(audio, lengths)[1, 0]
    assert not torch.allclose(naive, masked, atol=1e-3)
    # The valid frame count follows the conv stack: floor((L - kernel) / stride) + 1 per layer.
    frames = 8000
    for kernel, stride in zip(
        backbone.config.conv_kernel, backbone.config.conv_stride, strict=True
    ):
        frames = (frames - kernel) // stride + 1
    assert model.frame_lengths(torch.tensor([8000])).item() == frames
    assert hidden.shape[1] == model.frame_lengths(torch.tensor([32000])).item()


def test_normalisation_uses_valid_samples_only() -> None:
    audio, lengths = random_batch(2, 1, [1000, 400], seed=5)
    audio = audio[:, 0] + 0.3
    audio[1, 400:] = 0.0
    valid = torch.arange(1000)[None, :] < lengths[:, None]
    out = normalise_waveforms(audio, valid)
    clip = out[1, :400]
    assert abs(clip.mean().item()) < 1e-5
    assert abs(clip.std(unbiased=False).item() - 1.0) < 1e-3


def test_views_of_one_clip_differ_only_in_their_own_embedding(tiny_model: NCoreModel) -> None:
    """Changing view 2 of clip 0 changes that embedding only (no cross-talk in the batch)."""
    audio, lengths = random_batch(2, 3, [16000, 16000], seed=6)
    changed = audio.clone()
    changed[0, 2] = changed[0, 2].flip(-1)
    with torch.no_grad():
        a = tiny_model.embed(audio, lengths)
        b = tiny_model.embed(changed, lengths)
    diff = (a - b).abs().amax(dim=-1)
    assert diff[0, 2] > 1e-4
    diff[0, 2] = 0
    assert diff.max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast_step_keeps_float32_weights_and_finite_gradients() -> None:
    from trainer.inference import autocast

    device = torch.device("cuda")
    backbone, spec = load_backbone("tiny", seed=3)
    model = NCoreModel(backbone, spec, 4, 3).to(device).train()
    audio, lengths = random_batch(4, 3, [16000, 12000, 9000, 16000], seed=7)
    with autocast(device):
        out = model(audio.to(device), lengths.to(device))
    assert out.task_logits.dtype == torch.bfloat16  # autocast is really on (Linear in bf16)
    terms = ncore_loss(
        out, torch.tensor([0, 1, 2, 3], device=device), torch.tensor([0, 1, 2, 0], device=device)
    )
    terms.total.backward()
    assert torch.isfinite(terms.total)
    for p in model.parameters():
        assert p.dtype == torch.float32
        assert p.grad is None or torch.isfinite(p.grad).all()


# ----- what load_backbone refuses -------------------------------------------------------------
LOAD = "import sys; from trainer.model import load_backbone; load_backbone(sys.argv[1])"


def remote_code_folder(root: Path, marker: Path) -> Path:
    folder = root / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "evilnet", "architectures": ["EvilModel"], "auto_map": '
        '{"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}'
    )
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('the folder ran its code')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evilnet'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    return folder


def test_a_folder_with_auto_map_is_refused_even_when_the_user_answers_yes(tmp_path):
    marker = tmp_path / "RAN"
    folder = remote_code_folder(tmp_path, marker)
    master, slave = os.openpty()  # a terminal, where transformers would ask
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(folder)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    os.close(slave)
    os.write(master, b"y\n")
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    text = out.decode()
    assert proc.returncode != 0
    assert not marker.exists(), "the folder's Python code ran"
    assert "[y/N]" not in text  # no question asked: the answer is always no
    assert "never runs code from a model folder" in text
    with pytest.raises(TrainerError, match="auto_map"):
        load_backbone(str(folder))


def test_a_pickled_weights_file_is_one_line_and_never_unpickled(tmp_path):
    folder = tmp_path / "pickled"
    tiny_backbone_config().save_pretrained(folder)
    marker = tmp_path / "PICKLED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(TrainerError) as info:
        load_backbone(str(folder))
    assert "\n" not in str(info.value) and "cannot be loaded safely" in str(info.value)
    assert not marker.exists()
