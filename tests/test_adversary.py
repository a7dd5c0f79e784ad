"""The adversary that can learn (trainer/adversary.py) and its recipes (trainer/config.py).

Each test checks a property with a reference computed here, independently of the code
under test: whitening gives an identity covariance, reweighting makes the labels
independent, a whitened adversary reads a low-variance y- direction a raw one misses, the
reversed gradient's share scales with its weight and vanishes with the reversal off, the
view shift is measured in the discarded label's units.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.adversary import InputNorm, adversary_updates, gradient_share, pair_weights
from trainer.config import RECIPES, TrainConfig, resolve_config
from trainer.errors import TrainerError
from trainer.probes import fit_accuracy, view_shift


def _entangled_embeddings(n: int = 600, dim: int = 24, seed: int = 0):
    """Embeddings as a task-trained encoder leaves them: 4 emotion clusters spread wide in
    3 directions, the speaker (3 classes) in one small direction that is not axis-aligned,
    holding about 1 % of the variance."""
    rng = np.random.default_rng(seed)
    emotion = rng.integers(0, 4, n)
    speaker = rng.integers(0, 3, n)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    centres = rng.normal(size=(4, 3)) * 10.0
    x = np.zeros((n, dim))
    x[:, :3] = centres[emotion] + rng.normal(size=(n, 3))
    x[:, 3] = (speaker - 1.0) * 0.9 + rng.normal(size=n) * 0.15
    x[:, 4:] = rng.normal(size=(n, dim - 4)) * 0.3
    return x @ basis.T, emotion, speaker


class _Adversary(torch.nn.Module):
    """The adversary part of NCoreModel, alone (the same methods)."""

    def __init__(self, dim: int, classes: int, adv_input: str):
        super().__init__()
        from trainer.model import classification_head

        torch.manual_seed(0)
        self.adv_head = classification_head(dim, classes, 0.0)
        self.adv_norm = None if adv_input == "raw" else InputNorm(dim, adv_input)
        self.adv_condition = "none"

    def adversary_logits(self, x, y_task):
        return self.adv_head(x if self.adv_norm is None else self.adv_norm(x))

    def adversary_weights(self, y_task, y_adv):
        return None


def test_whitening_gives_the_embeddings_an_identity_covariance():
    x, _, _ = _entangled_embeddings()
    norm = InputNorm(x.shape[1], "whiten", ridge=0.0)
    for part in np.array_split(x, 10):  # the running statistics over batches
        norm.update(torch.as_tensor(part, dtype=torch.float32))
    white = norm(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    # The cumulative average over batches equals the whole set's statistics here.
    np.testing.assert_allclose(
        np.cov(white, rowvar=False, bias=True), np.eye(x.shape[1]), atol=2e-3
    )
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-3)


def test_standardising_scales_each_dimension_to_unit_variance():
    x, _, _ = _entangled_embeddings()
    norm = InputNorm(x.shape[1], "standardize", ridge=0.0)
    norm.update(torch.as_tensor(x, dtype=torch.float32))
    out = norm(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-3)


def test_reweighting_makes_the_two_labels_independent():
    rng = np.random.default_rng(1)
    emotion = rng.integers(0, 4, 500)
    # 90 % of an emotion's clips from "its" speaker, as the entangled synthetic corpus.
    speaker = np.where(rng.random(500) < 0.9, emotion % 3, rng.integers(0, 3, 500))
    weights = pair_weights(emotion, speaker, 4, 3).numpy()
    joint = np.zeros((4, 3))
    np.add.at(joint, (emotion, speaker), weights[emotion, speaker])
    joint /= joint.sum()
    # Weighted, the joint is the product of its marginals, which are the unweighted ones.
    np.testing.assert_allclose(joint, np.outer(joint.sum(1), joint.sum(0)), atol=1e-12)
    np.testing.assert_allclose(joint.sum(1), np.bincount(emotion, minlength=4) / 500, atol=1e-12)
    assert weights[emotion, speaker].mean() == pytest.approx(1.0)


@pytest.mark.slow  # about 12 s on 2 shared cores
def test_a_whitened_adversary_reads_a_small_speaker_direction_a_raw_one_misses():
    x, emotion, speaker = _entangled_embeddings()
    reference = fit_accuracy(x, speaker)  # what a standardised linear probe reads
    assert reference > 0.9
    x_t = torch.as_tensor(x, dtype=torch.float32)
    y_task, y_adv = torch.as_tensor(emotion), torch.as_tensor(speaker)
    accuracy = {}
    for adv_input in ("raw", "whiten"):
        model = _Adversary(x.shape[1], 3, adv_input)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        for step in range(40):  # 2 epochs of 20 optimizer steps of 30 clips, 5 updates each
            rows = slice(30 * (step % 20), 30 * (step % 20) + 30)
            adversary_updates(model, optimizer, x_t[rows], y_task[rows], y_adv[rows], steps=5)
        with torch.no_grad():
            pred = model.adversary_logits(x_t, y_task).argmax(-1)
        accuracy[adv_input] = float((pred == y_adv).float().mean())
    assert accuracy["whiten"] > 0.8, accuracy
    assert accuracy["whiten"] > accuracy["raw"] + 0.2, accuracy


def test_the_reversed_gradients_share_scales_with_its_weight_and_vanishes_without_reversal():
    from trainer.losses import ncore_loss
    from trainer.model import ModelOutput, classification_head, gradient_reversal

    torch.manual_seed(0)
    task_head, adv_head = classification_head(8, 3, 0.0), classification_head(8, 4, 0.0)
    embeddings = torch.randn(6, 2, 8, requires_grad=True)
    y_task, y_adv = torch.randint(0, 3, (6,)), torch.randint(0, 4, (6,))

    def share(alpha: float, lambda_grl: float) -> float:
        x0 = embeddings[:, 0]
        out = ModelOutput(embeddings, task_head(x0), adv_head(gradient_reversal(x0, alpha)))
        terms = ncore_loss(out, y_task, y_adv, 1.0, 0.005, lambda_grl)
        return gradient_share(terms.task_term, terms.adv_term, embeddings)

    # Reference: the two gradients at x0 computed by hand with autograd, here.
    x0 = embeddings[:, 0].detach().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(task_head(x0), y_task)
    adv = torch.nn.functional.cross_entropy(adv_head(x0), y_adv)
    (g_ce,) = torch.autograd.grad(ce, x0)
    (g_adv,) = torch.autograd.grad(adv, x0)
    expected = float(0.01 * g_adv.norm() / g_ce.norm())
    assert share(1.0, 0.01) == pytest.approx(expected, rel=1e-5)
    assert share(1.0, 0.02) == pytest.approx(2 * share(1.0, 0.01), rel=1e-5)
    assert share(0.0, 0.01) == 0.0


def test_view_shift_is_in_units_of_the_discarded_labels_spread():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    # Two speakers whose centroids are 4 apart along one axis, a large unrelated spread
    # (the kept label) along another.
    x = np.zeros((100, 3))
    x[:, 0] = labels * 4.0
    x[:, 1] = np.tile(rng.normal(size=50) * 50.0, 2)  # the same spread in both classes
    half_a_speaker = x + np.array([2.0, 0.0, 0.0])
    assert view_shift(x, [half_a_speaker], labels) == pytest.approx(0.5)
    assert view_shift(x, [x], labels) == 0.0
    # The unrelated spread does not enter: a view moved by 2 is half a speaker apart
    # whatever the other dimensions do.
    x[:, 1] *= 10
    assert view_shift(x, [x + np.array([2.0, 0.0, 0.0])], labels) == pytest.approx(0.5)


def test_recipes_fill_what_is_not_given_and_old_records_mean_the_paper():
    default = resolve_config(None, {"manifest": "m.json"})
    assert default.recipe == "ncore"
    assert {k: getattr(default, k) for k in RECIPES["ncore"]} == RECIPES["ncore"]
    paper = resolve_config(None, {"manifest": "m.json", "recipe": "paper"})
    assert {k: getattr(paper, k) for k in RECIPES["paper"]} == RECIPES["paper"]
    mixed = resolve_config({"recipe": "paper"}, {"manifest": "m.json", "adv_input": "whiten"})
    assert (mixed.adv_input, mixed.adv_steps) == ("whiten", 0)
    # A config.json from before recipes existed was trained with the paper's adversary.
    old = {k: v for k, v in default.to_dict().items() if k not in {"recipe", *RECIPES["ncore"]}}
    assert TrainConfig.from_dict(old).adv_lr is None
    assert TrainConfig.from_dict(old).adv_steps == 0
    with pytest.raises(TrainerError, match="adv_steps needs"):
        resolve_config(None, {"manifest": "m.json", "recipe": "paper", "adv_steps": 3})
    with pytest.raises(TrainerError, match="recipe must be one of"):
        resolve_config(None, {"manifest": "m.json", "recipe": "best"})


def _leakage_reference(z: np.ndarray, y: np.ndarray, classes: int, groups=None) -> float:
    """The eraser's estimate by its definition, in a double loop: centre the embeddings and
    the one-hot labels (within each group), average (z_i . z_j)(y_i . y_j) over the ordered
    pairs of distinct clips, divide by the mean squared norm of the centred z per dimension."""
    z, onehot = z.astype(np.float64).copy(), np.eye(classes)[y]
    groups = np.zeros(len(y), int) if groups is None else np.asarray(groups)
    for g in np.unique(groups):
        rows = groups == g
        z[rows] -= z[rows].mean(axis=0)
        onehot[rows] -= onehot[rows].mean(axis=0)
    n = len(y)
    total = sum(
        (z[i] @ z[j]) * (onehot[i] @ onehot[j]) for i in range(n) for j in range(n) if i != j
    )
    spread = np.mean([z[i] @ z[i] for i in range(n)]) / z.shape[1]
    return total / (n * (n - 1)) / spread


def test_the_linear_eraser_measures_what_a_linear_map_can_read_of_the_discarded_label():
    from trainer.adversary import linear_leakage

    rng = np.random.default_rng(3)
    n, dim, classes = 40, 6, 3
    y = rng.integers(0, classes, n)
    groups = rng.integers(0, 2, n)
    z = rng.normal(size=(n, dim))
    for g in (None, groups):
        got = linear_leakage(
            torch.tensor(z), torch.tensor(y), classes, None if g is None else torch.tensor(g)
        )
        assert float(got) == pytest.approx(_leakage_reference(z, y, classes, g), rel=1e-5)
    # Unbiased: with labels independent of the embeddings it averages to about 0 over
    # batches, while class means one spread apart give a value of the order of that spread.
    independent = [
        float(linear_leakage(torch.randn(n, dim), torch.randint(0, classes, (n,)), classes))
        for _ in range(200)
    ]
    means = rng.normal(size=(classes, dim))
    separated = float(linear_leakage(torch.tensor(z + means[y]), torch.tensor(y), classes))
    assert abs(np.mean(independent)) < 0.1 * separated
    # Scale-free: shrinking every embedding does not lower it.
    scaled = linear_leakage(torch.tensor(z + means[y]) * 1e-3, torch.tensor(y), classes)
    assert float(scaled) == pytest.approx(separated, rel=1e-4)
    # Conditional on a group label that determines y-, nothing is left to erase.
    assert (
        float(linear_leakage(torch.tensor(z + means[y]), torch.tensor(y), classes, torch.tensor(y)))
        == 0.0
    )


@pytest.mark.slow  # about 12 s on 2 shared cores
def test_descending_the_linear_eraser_removes_a_small_speaker_direction_and_keeps_the_emotion():
    """Gradient steps on the embeddings themselves (whitened, as the adversary reads them):
    a standardised linear probe's speaker accuracy falls to near chance, its emotion
    accuracy stays; with the emotion as the condition, the same holds."""
    from trainer.adversary import linear_leakage

    x, emotion, speaker = _entangled_embeddings(n=300)
    before = fit_accuracy(x, speaker)
    for groups in (None, torch.tensor(emotion)):
        norm = InputNorm(x.shape[1], "whiten")
        norm.update(torch.tensor(x, dtype=torch.float32))
        z = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.SGD([z], lr=50.0)
        for _ in range(200):
            opt.zero_grad()
            linear_leakage(norm(z), torch.tensor(speaker), 3, groups).backward()
            opt.step()
        after = z.detach().numpy()
        assert before > 0.9
        assert fit_accuracy(after, speaker) < 0.5  # chance 1/3
        assert fit_accuracy(after, emotion) > 0.95


def test_the_eraser_is_on_in_the_recipe_off_in_the_paper_and_old_records_and_needs_an_adversary():
    default = resolve_config(None, {"manifest": "m.json"})
    assert default.lambda_erase > 0
    assert resolve_config(None, {"manifest": "m.json", "recipe": "paper"}).lambda_erase == 0
    # A config.json of the ncore recipe from before the eraser existed trained without it.
    old = {k: v for k, v in default.to_dict().items() if k != "lambda_erase"}
    assert TrainConfig.from_dict(old).lambda_erase == 0.0
    given = resolve_config(None, {"manifest": "m.json", "lambda_erase": 2.0})
    assert given.lambda_erase == 2.0
    # Without the adversary the recipe's eraser is off; asked for explicitly, one line.
    assert resolve_config(None, {"manifest": "m.json", "adversary": False}).lambda_erase == 0
    assert default.replace(adversary=False).lambda_erase == 0  # an experiment's row
    with pytest.raises(TrainerError, match="lambda_erase needs the adversary"):
        resolve_config(None, {"manifest": "m.json", "lambda_erase": 1.0, "adversary": False})


def test_the_erasers_weight_gives_its_gradient_the_asked_share_of_the_task_gradient():
    from trainer.adversary import balanced_weight

    x = torch.randn(8, 5, requires_grad=True)
    anchor = (x[:, 0] * 3.0).sum()  # gradient norm 3 * sqrt(8)
    term = (x**2).sum()  # gradient 2x
    weight = balanced_weight(anchor, term, x, 0.5)
    expected = 0.5 * 3.0 * np.sqrt(8) / float((2 * x).norm())
    assert weight == pytest.approx(expected, rel=1e-5)
    assert balanced_weight(anchor, term, x, 0.0) == 0.0
