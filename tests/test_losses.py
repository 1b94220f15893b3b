"""Tests of the Lovász-softmax loss against the Jaccard loss and a brute-force Lovász extension."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lidarssl.errors import DataError
from lidarssl.losses import LovaszSoftmax, lovasz_grad, lovasz_softmax

FAST = settings(max_examples=30, deadline=None)


def jaccard_set_loss(mask: np.ndarray, fg: np.ndarray) -> float:
    """Delta(M) = |M| / |G ∪ M| for the error set M = ``mask`` and ground truth G = ``fg``; Delta(∅) = 0."""
    union = np.sum(fg | mask)
    return float(mask.sum() / union) if mask.any() else 0.0


def brute_force_extension(m: np.ndarray, fg: np.ndarray) -> float:
    """Lovász extension of the submodular Jaccard loss: max over all orders of the greedy sum."""
    n = len(m)
    best = -np.inf
    for order in itertools.permutations(range(n)):
        mask = np.zeros(n, dtype=bool)
        total, prev = 0.0, 0.0
        for i in order:
            mask[i] = True
            cur = jaccard_set_loss(mask, fg)
            total += m[i] * (cur - prev)
            prev = cur
        best = max(best, total)
    return best


def test_lovasz_grad_hand_computed() -> None:
    # G = {0, 2} of 4 sorted points: Delta(M_i) = i / (|G| + i - |G ∩ M_i|) = 1/2, 2/3, 1, 1.
    grad = lovasz_grad(torch.tensor([1, 0, 1, 0]))
    np.testing.assert_allclose(grad.numpy(), [1 / 2, 1 / 6, 1 / 3, 0], rtol=1e-6)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), c=st.integers(2, 5))
def test_equals_jaccard_loss_at_hard_predictions(seed: int, n: int, c: int) -> None:
    rng = np.random.default_rng(seed)
    labels, pred = rng.integers(0, c, n), rng.integers(0, c, n)
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), c).double()  # 0/1 error vectors
    per_class = []
    for k in range(c):
        inter = np.sum((pred == k) & (labels == k))
        union = np.sum((pred == k) | (labels == k))
        per_class.append(1.0 - inter / union if union else 0.0)
    per_class = np.array(per_class)
    present = np.isin(np.arange(c), labels)
    got_present = lovasz_softmax(probs, torch.from_numpy(labels), classes="present")
    got_all = lovasz_softmax(probs, torch.from_numpy(labels), classes="all")
    assert got_present.item() == pytest.approx(per_class[present].mean(), abs=1e-6)
    assert got_all.item() == pytest.approx(per_class.mean(), abs=1e-6)


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 6),
    c=st.integers(2, 4),
    classes=st.sampled_from(["present", "all"]),
)
def test_matches_brute_force_lovasz_extension(seed: int, n: int, c: int, classes: str) -> None:
    rng = np.random.default_rng(seed)
    probs = torch.from_numpy(rng.normal(size=(n, c)) * 2).double().softmax(1)
    labels = rng.integers(0, c, n)
    fg = labels[:, None] == np.arange(c)[None]
    errors = np.abs(fg - probs.numpy())
    per_class = np.array([brute_force_extension(errors[:, k], fg[:, k]) for k in range(c)])
    expected = per_class[fg.any(0)].mean() if classes == "present" else per_class.mean()
    got = lovasz_softmax(probs, torch.from_numpy(labels), classes=classes)  # type: ignore[arg-type]
    assert got.item() == pytest.approx(expected, abs=1e-6)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_sorted_lovasz_grad_is_the_extension_for_any_errors(seed: int, n: int) -> None:
    # Errors need not come from a softmax: the greedy order must win for every m in [0, 1]^n.
    rng = np.random.default_rng(seed)
    m, fg = rng.uniform(size=n), rng.uniform(size=n) < 0.5
    order = np.argsort(-m, kind="stable")
    greedy = float(np.dot(m[order], lovasz_grad(torch.from_numpy(fg[order])).double().numpy()))
    assert greedy == pytest.approx(brute_force_extension(m, fg), abs=1e-6)


def test_gradient_flows_and_ignored_points_do_not_count() -> None:
    torch.manual_seed(0)
    logits = torch.randn(50, 4, requires_grad=True)
    labels = torch.randint(0, 4, (50,))
    labels[::5] = 255
    loss = lovasz_softmax(logits.softmax(1), labels)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    ignored = labels == 255
    assert logits.grad[~ignored].abs().sum() > 0
    assert (logits.grad[ignored] == 0).all()

    # Changing the ignored points' predictions leaves the loss unchanged, and so does dropping them.
    other = logits.detach().clone()
    other[ignored] = torch.randn(int(ignored.sum()), 4) * 5
    assert lovasz_softmax(other.softmax(1), labels).item() == pytest.approx(loss.item(), abs=1e-6)
    kept = lovasz_softmax(logits.detach()[~ignored].softmax(1), labels[~ignored])
    assert kept.item() == pytest.approx(loss.item(), abs=1e-6)


def test_perfect_prediction_gives_zero() -> None:
    labels = torch.tensor([0, 2, 2, 1, 255, 0])
    probs = torch.nn.functional.one_hot(labels.clamp(max=2), 3).float()
    assert lovasz_softmax(probs, labels).item() == 0.0
    assert lovasz_softmax(probs, labels, classes="all").item() == 0.0
    # Better predictions score lower.
    soft = 0.8 * probs + 0.2 / 3
    assert 0 < lovasz_softmax(soft, labels).item() < lovasz_softmax(1 - probs, labels).item()


def test_all_ignored_gives_attached_zero() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = lovasz_softmax(logits.softmax(1), torch.full((4,), 255))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph, so DDP and AMP see a gradient (of zeros)
    assert logits.grad is not None and (logits.grad == 0).all()


def test_module_wrapper() -> None:
    torch.manual_seed(1)
    logits, labels = torch.randn(30, 5), torch.randint(0, 5, (30,))
    module = LovaszSoftmax(from_logits=True)
    assert module(logits, labels).item() == pytest.approx(lovasz_softmax(logits.softmax(1), labels).item())
    assert LovaszSoftmax()(logits.softmax(1), labels).item() == pytest.approx(module(logits, labels).item())
    assert "classes='present'" in repr(module)
    half = module(logits.half(), labels)  # AMP outputs: computed in float32 inside
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_errors() -> None:
    probs = torch.full((3, 2), 0.5)
    with pytest.raises(DataError, match=r"labels hold class id 2, outside 0..1 \(ignore_index=255\)"):
        lovasz_softmax(probs, torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match=r"expects probs \(N, C\) and labels \(N,\)"):
        lovasz_softmax(probs, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="classes must be 'present' or 'all'"):
        lovasz_softmax(probs, torch.tensor([0, 1, 1]), classes="some")  # type: ignore[arg-type]
