"""Tests of the image-to-lidar pretraining losses against hand-computed values and brute-force loops."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lidarssl.errors import DataError
from lidarssl.methods.pair_losses import (
    gather_across_processes,
    info_nce,
    ppkt_loss,
    sample_pairs,
    scalr_loss,
    slidr_loss,
    stslidr_loss,
    superpixel_pool,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = str(REPO / "src" / "lidarssl" / "methods" / "pair_losses.py")


def unit(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)


def brute_info_nce(k, q, temperature=0.07, weights=None, anchor_weights=None) -> float:
    """-log(exp(s_ii) / (exp(s_ii) + sum_{j != i} w_ij exp(s_ij))), averaged with the anchor weights."""
    n = len(k)
    losses = []
    for i in range(n):
        s = [float(k[i] @ q[j]) / temperature for j in range(n)]
        denominator = sum(
            math.exp(s[j]) * (1.0 if (weights is None or i == j) else float(weights[i][j])) for j in range(n)
        )
        losses.append(-math.log(math.exp(s[i]) / denominator))
    a = [1.0] * n if anchor_weights is None else [float(x) for x in anchor_weights]
    return sum(w * l for w, l in zip(a, losses)) / sum(a)


def cross_entropy_row(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def assert_finite_grads(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()


# ---------------------------------------------------------------------------------------------- info_nce


def test_info_nce_two_orthogonal_pairs_by_hand() -> None:
    # logits [[1, 0], [0, 1]] at τ = 1: each row is -log(e / (e + 1)) = log(1 + 1/e).
    eye = torch.eye(2, dtype=torch.float64)
    assert info_nce(eye, eye, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_info_nce_matches_brute_force_with_weights(seed: int) -> None:
    n = 5
    k, q = unit(n, 4, seed), unit(n, 4, seed + 100)
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(n, n, generator=g, dtype=torch.float64) * 2
    weights[torch.rand(n, n, generator=g) < 0.3] = 0.0
    anchor = torch.rand(n, generator=g, dtype=torch.float64)
    assert info_nce(k, q, 0.5).item() == pytest.approx(brute_info_nce(k, q, 0.5), rel=1e-10)
    assert info_nce(k, q, 0.5, weights).item() == pytest.approx(brute_info_nce(k, q, 0.5, weights), rel=1e-10)
    got = info_nce(k, q, 0.5, weights, anchor)
    assert got.item() == pytest.approx(brute_info_nce(k, q, 0.5, weights, anchor), rel=1e-10)


def test_info_nce_masked_negative_equals_dropping_the_column() -> None:
    k, q = unit(3, 4, 1), unit(3, 4, 2)
    weights = torch.ones(3, 3, dtype=torch.float64)
    weights[0, 2] = 0.0
    logits = (k @ q.T / 0.07).tolist()
    expected = (
        cross_entropy_row(logits[0][:2], 0) + cross_entropy_row(logits[1], 1) + cross_entropy_row(logits[2], 2)
    ) / 3
    assert info_nce(k, q, weights=weights).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_weight_two_equals_a_duplicated_negative() -> None:
    k, q = unit(3, 4, 3), unit(3, 4, 4)
    weights = torch.ones(3, 3, dtype=torch.float64)
    weights[1, 0] = 2.0
    logits = (k @ q.T / 0.07).tolist()
    row1 = logits[1] + [logits[1][0]]  # negative 0 counted twice
    expected = (cross_entropy_row(logits[0], 0) + cross_entropy_row(row1, 1) + cross_entropy_row(logits[2], 2)) / 3
    assert info_nce(k, q, weights=weights).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_diagonal_weight_is_ignored() -> None:
    k, q = unit(4, 3, 5), unit(4, 3, 6)
    weights = torch.ones(4, 4, dtype=torch.float64)
    weights.fill_diagonal_(0.0)
    assert info_nce(k, q, weights=weights).item() == pytest.approx(info_nce(k, q).item(), rel=1e-12)


def test_info_nce_all_negatives_masked_gives_zero_without_nan() -> None:
    k = unit(3, 4, 7).float().requires_grad_()
    q = unit(3, 4, 8).float().requires_grad_()
    weights = torch.eye(3)  # only the positives remain
    loss = info_nce(k, q, weights=weights)
    loss.backward()
    assert loss.item() == 0.0
    assert_finite_grads(k, q)
    # One row fully masked, the others plain: that row adds 0 to the mean.
    weights = torch.ones(3, 3)
    weights[1] = 0.0
    logits = (k.detach().double() @ q.detach().double().T / 0.07).tolist()
    expected = (cross_entropy_row(logits[0], 0) + cross_entropy_row(logits[2], 2)) / 3
    assert info_nce(k, q, weights=weights).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_gradient_through_zero_weights_is_finite() -> None:
    k, q = unit(3, 4, 9).requires_grad_(), unit(3, 4, 10).requires_grad_()
    weights = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [2.0, 1.0, 1.0]], dtype=torch.float64)
    weights.requires_grad_()
    info_nce(k, q, weights=weights).backward()
    assert_finite_grads(k, q, weights)


@pytest.mark.parametrize("n", [0, 1])
def test_info_nce_without_negatives_is_zero(n: int) -> None:
    k = torch.ones(n, 3, requires_grad=True)
    q = torch.ones(n, 3, requires_grad=True)
    loss = info_nce(k, q)
    loss.backward()
    assert loss.item() == 0.0
    assert_finite_grads(k, q)


def test_info_nce_anchor_weights() -> None:
    k, q = unit(4, 3, 11), unit(4, 3, 12)
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    logits = (k @ q.T / 0.07).tolist()
    assert info_nce(k, q, anchor_weights=one_hot).item() == pytest.approx(cross_entropy_row(logits[2], 2), rel=1e-10)
    assert info_nce(k, q, anchor_weights=torch.full((4,), 3.0)).item() == pytest.approx(info_nce(k, q).item())
    k.requires_grad_()
    loss = info_nce(k, q, anchor_weights=torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0
    assert_finite_grads(k)


def test_info_nce_is_invariant_to_permuting_pairs() -> None:
    k, q = unit(6, 5, 13), unit(6, 5, 14)
    weights = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    anchor = torch.arange(1.0, 7.0, dtype=torch.float64)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    expected = info_nce(k, q, 0.1, weights, anchor).item()
    got = info_nce(k[perm], q[perm], 0.1, weights[perm][:, perm], anchor[perm]).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_info_nce_half_precision_input() -> None:
    k, q = unit(4, 8, 15), unit(4, 8, 16)
    got = info_nce(k.half(), q.half())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(info_nce(k, q).item(), rel=1e-2)


def test_info_nce_stays_float32_under_autocast() -> None:
    k, q = unit(6, 8, 17).float(), unit(6, 8, 18).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(k, q)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(info_nce(k, q).item(), rel=1e-6)


def test_info_nce_rejects_bad_inputs() -> None:
    k = unit(3, 4, 0)
    with pytest.raises(DataError):
        info_nce(k, k[:2])
    with pytest.raises(DataError):
        info_nce(k, k, weights=torch.ones(2, 2))
    with pytest.raises(ValueError):
        info_nce(k, k, weights=-torch.ones(3, 3))
    with pytest.raises(ValueError):
        info_nce(k, k, temperature=0.0)


# ------------------------------------------------------------------------------------------ PPKT pairs


@pytest.mark.parametrize(("available", "limit", "expected"), [(10, 4, 4), (3, 4096, 3), (0, 4096, 0), (5, 0, 0)])
def test_sample_pairs_count_and_distinct(available: int, limit: int, expected: int) -> None:
    index = sample_pairs(available, limit, torch.Generator().manual_seed(0))
    assert index.dtype == torch.int64 and index.shape == (expected,)
    assert len(set(index.tolist())) == expected
    assert all(0 <= i < available for i in index.tolist())


def test_sample_pairs_is_reproducible_and_uniform() -> None:
    a = sample_pairs(100, 7, torch.Generator().manual_seed(3))
    b = sample_pairs(100, 7, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    draws = 3000
    for _ in range(draws):
        counts[sample_pairs(10, 3, g)] += 1
    # Each index is drawn with probability 3/10 per draw: 900 ± 25 (sd), so ± 150 is 6 sd.
    assert (counts - 900).abs().max() < 150


def test_sample_pairs_rejects_negative() -> None:
    with pytest.raises(ValueError):
        sample_pairs(-1, 4, None)


def test_ppkt_loss_uses_the_sampled_pairs() -> None:
    points, pixels = unit(50, 8, 20), unit(50, 8, 21)
    index = sample_pairs(50, 16, torch.Generator().manual_seed(5))
    expected = info_nce(points[index], pixels[index]).item()
    got = ppkt_loss(points, pixels, max_pairs=16, generator=torch.Generator().manual_seed(5))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ppkt_loss_with_fewer_pairs_uses_all_of_them() -> None:
    points, pixels = unit(6, 8, 22).requires_grad_(), unit(6, 8, 23)
    loss = ppkt_loss(points, pixels, max_pairs=4096)
    assert loss.item() == pytest.approx(brute_info_nce(points.detach(), pixels), rel=1e-10)
    loss.backward()
    assert_finite_grads(points)


def test_ppkt_loss_gradient_only_reaches_sampled_points() -> None:
    points, pixels = unit(40, 4, 24).requires_grad_(), unit(40, 4, 25)
    ppkt_loss(points, pixels, max_pairs=8, generator=torch.Generator().manual_seed(2)).backward()
    index = sample_pairs(40, 8, torch.Generator().manual_seed(2))
    touched = points.grad.abs().sum(1) > 0
    assert set(touched.nonzero().flatten().tolist()) == set(index.tolist())


@pytest.mark.parametrize("n", [0, 1])
def test_ppkt_loss_fewer_than_two_pairs_is_a_graph_zero(n: int) -> None:
    points = torch.ones(n, 4, requires_grad=True)
    pixels = torch.ones(n, 4, requires_grad=True)
    loss = ppkt_loss(points, pixels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert_finite_grads(points, pixels)


# ----------------------------------------------------------------------------------------- superpixels


def test_superpixel_pool_by_hand() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    pooled, counts = superpixel_pool(features, torch.tensor([2, 0, 2]), 4)
    torch.testing.assert_close(pooled, torch.tensor([[3.0, 4.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]))
    assert counts.tolist() == [1, 0, 2, 0] and counts.dtype == torch.int64
    pooled.sum().backward()
    torch.testing.assert_close(features.grad, torch.tensor([[0.5, 0.5], [1.0, 1.0], [0.5, 0.5]]))


def test_superpixel_pool_renormalize_keeps_empty_segments_zero() -> None:
    features = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, -2.0]])
    pooled, _ = superpixel_pool(features, torch.tensor([0, 0, 3]), 5, renormalize=True)
    # mean (1.5, 2) has norm 2.5
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.8], [0, 0], [0, 0], [0.0, -1.0], [0, 0]]))
    raw, _ = superpixel_pool(features, torch.tensor([0, 0, 3]), 5)
    torch.testing.assert_close(raw[0], torch.tensor([1.5, 2.0]))  # SLidR's average is not re-normalised


def test_superpixel_pool_rejects_bad_ids() -> None:
    with pytest.raises(DataError):
        superpixel_pool(torch.ones(2, 3), torch.tensor([0, 4]), 4)
    with pytest.raises(DataError):
        superpixel_pool(torch.ones(2, 3), torch.tensor([-1, 0]), 4)
    with pytest.raises(DataError):
        superpixel_pool(torch.ones(2, 3), torch.tensor([0.0, 1.0]), 4)


def random_superpixel_batch(seed: int, num_segments: int = 12, c: int = 6):
    """Points in superpixels 0..5 (some with none), pixels in 0..num_segments-1, as float64."""
    g = torch.Generator().manual_seed(seed)
    points = F.normalize(torch.randn(20, c, generator=g, dtype=torch.float64), dim=1)
    point_segment = torch.randint(0, 6, (20,), generator=g)
    pixels = F.normalize(torch.randn(60, c, generator=g, dtype=torch.float64), dim=1)
    pixel_segment = torch.randint(0, num_segments, (60,), generator=g)
    pixel_segment[:6] = torch.arange(6)  # every superpixel holding a point has a pixel
    return points, point_segment, pixels, pixel_segment


def brute_superpixel_means(features, segment) -> dict[int, torch.Tensor]:
    means = {}
    for s in sorted(set(segment.tolist())):
        rows = [features[i] for i in range(len(segment)) if segment[i] == s]
        means[s] = sum(rows) / len(rows)
    return means


def test_slidr_loss_matches_brute_force() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(0)
    k_means = brute_superpixel_means(points, point_segment)
    q_means = brute_superpixel_means(pixels, pixel_segment)
    kept = [s for s in k_means if s in q_means]
    k = torch.stack([k_means[s] for s in kept])
    q = torch.stack([q_means[s] for s in kept])
    got = slidr_loss(points, point_segment, pixels, pixel_segment, 12)
    assert got.item() == pytest.approx(brute_info_nce(k, q), rel=1e-10)
    # Superpixels with pixels but no point (6..11) take no part: removing those pixels changes nothing.
    with_points = pixel_segment < 6
    alone = slidr_loss(points, point_segment, pixels[with_points], pixel_segment[with_points], 12)
    assert alone.item() == pytest.approx(got.item(), rel=1e-12)


def test_slidr_loss_drops_superpixels_without_pixels() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(1)
    keep_pixels = pixel_segment != 2
    keep_points = point_segment != 2
    with_orphans = slidr_loss(points, point_segment, pixels[keep_pixels], pixel_segment[keep_pixels], 12)
    without = slidr_loss(
        points[keep_points], point_segment[keep_points], pixels[keep_pixels], pixel_segment[keep_pixels], 12
    )
    assert with_orphans.item() == pytest.approx(without.item(), rel=1e-12)


def test_slidr_loss_renormalize() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(2)
    k, _ = superpixel_pool(points, point_segment, 12)
    q, _ = superpixel_pool(pixels, pixel_segment, 12)
    kept = torch.arange(6)
    expected = info_nce(F.normalize(k[kept], dim=1), F.normalize(q[kept], dim=1)).item()
    got = slidr_loss(points, point_segment, pixels, pixel_segment, 12, renormalize=True)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_slidr_loss_noncontiguous_ids_and_permutations() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(3)
    expected = slidr_loss(points, point_segment, pixels, pixel_segment, 12).item()
    # Relabel the 12 ids to scattered global ids (as after per-image offsets).
    relabel = torch.tensor([3, 150, 151, 299, 40, 7, 600, 601, 602, 900, 12, 449])
    point_perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    pixel_perm = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    got = slidr_loss(
        points[point_perm],
        relabel[point_segment[point_perm]],
        pixels[pixel_perm],
        relabel[pixel_segment[pixel_perm]],
        1000,
    )
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_slidr_loss_single_superpixel_is_a_graph_zero() -> None:
    points = unit(4, 3, 0).requires_grad_()
    pixels = unit(5, 3, 1).requires_grad_()
    loss = slidr_loss(points, torch.full((4,), 7), pixels, torch.full((5,), 7), 10)
    loss.backward()
    assert loss.item() == 0.0
    assert_finite_grads(points, pixels)


# --------------------------------------------------------------------------------------------- ST-SLidR


def one_row_per_superpixel(n: int, c: int, seed: int):
    """Each superpixel s in 0..n-1 holds exactly point s and pixel s: the pooled features are the rows."""
    segment = torch.arange(n)
    return unit(n, c, seed), segment, unit(n, c, seed + 1), segment


# Teacher features in the positive orthant with distinct positive similarities.
TEACHER = torch.tensor(
    [[1.0, 0.1, 0.2], [0.9, 0.4, 0.1], [0.1, 1.0, 0.3], [0.2, 0.3, 1.0]], dtype=torch.float64
)


def test_stslidr_masked_negative_fixed_versus_original_by_hand() -> None:
    points, segment, pixels, _ = one_row_per_superpixel(4, 5, 30)
    similarity = F.normalize(TEACHER, dim=1) @ F.normalize(TEACHER, dim=1).T
    logits = (points @ pixels.T / 0.07).tolist()
    fixed_rows, original_rows = [], []
    for i in range(4):
        # min_quantile 0.5 of 3 negatives: floor(1.5) = 1 negative removed, the most teacher-similar one.
        masked = max((j for j in range(4) if j != i), key=lambda j: similarity[i, j].item())
        fixed_rows.append(cross_entropy_row([logits[i][j] for j in range(4) if j != masked], i - (masked < i)))
        original_rows.append(cross_entropy_row([0.0 if j == masked else logits[i][j] for j in range(4)], i))
    kwargs = dict(min_quantile=0.5, class_balance=False)
    fixed = stslidr_loss(points, segment, pixels, segment, TEACHER, segment, 4, **kwargs)
    original = stslidr_loss(points, segment, pixels, segment, TEACHER, segment, 4, original=True, **kwargs)
    assert fixed.item() == pytest.approx(sum(fixed_rows) / 4, rel=1e-10)
    assert original.item() == pytest.approx(sum(original_rows) / 4, rel=1e-10)
    assert abs(fixed.item() - original.item()) > 1e-3


def test_stslidr_class_balance_by_hand() -> None:
    # Superpixels 0 and 1 share a teacher feature: S = [[1, 1, 0], [1, 1, 0], [0, 0, 1]], votes (>= 0.5)
    # 2, 2, 1 -> min-max 1, 1, 0 -> anchor weights 0, 0, 1: only anchor 2 counts.
    points, segment, pixels, _ = one_row_per_superpixel(3, 4, 31)
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    logits = (points @ pixels.T / 0.07).tolist()
    got = stslidr_loss(points, segment, pixels, segment, teacher, segment, 3, min_quantile=0.0)
    assert got.item() == pytest.approx(cross_entropy_row(logits[2], 2), rel=1e-10)
    # Equal votes everywhere: no division by zero, all anchors weigh 1 (plain SLidR).
    orthogonal = torch.eye(3, dtype=torch.float64)
    got = stslidr_loss(points, segment, pixels, segment, orthogonal, segment, 3, min_quantile=0.0)
    assert got.item() == pytest.approx(brute_info_nce(points, pixels), rel=1e-10)


def test_stslidr_without_removal_or_balance_is_slidr() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(4)
    teacher = unit(80, 7, 5)
    teacher_segment = torch.randint(0, 12, (80,), generator=torch.Generator().manual_seed(0))
    teacher_segment[:12] = torch.arange(12)
    got = stslidr_loss(
        points, point_segment, pixels, pixel_segment, teacher, teacher_segment, 12,
        min_quantile=0.0, class_balance=False,
    )
    expected = slidr_loss(points, point_segment, pixels, pixel_segment, 12)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_stslidr_drops_superpixels_without_teacher_features() -> None:
    points, segment, pixels, _ = one_row_per_superpixel(5, 4, 32)
    teacher = unit(5, 3, 33)
    teacher[4] = 0.0  # superpixel 4: zero teacher feature
    present = torch.tensor([0, 1, 2, 4])  # superpixel 3: no teacher feature at all
    got = stslidr_loss(
        points, segment, pixels, segment, teacher[present], present, 5, min_quantile=0.0, class_balance=False
    )
    assert got.item() == pytest.approx(brute_info_nce(points[:3], pixels[:3]), rel=1e-10)


def released_reference(k, q, teacher_means, temperature, min_quantile, class_balance, threshold=0.5):
    """ST-SLidR's released loss as the design note describes it, with torch.quantile (small N only)."""
    f = F.normalize(teacher_means, dim=1)
    similarity = f @ f.T
    weight = 1.0 - (similarity if class_balance else similarity.clip(0.0, 1.0))
    if min_quantile > 0:
        low = torch.quantile(weight, min_quantile, dim=1)
        weight[weight < low[:, None]] = 0.0
        weight[weight != 0] = 1.0
    weight.fill_diagonal_(1.0)
    per_anchor = F.cross_entropy(k @ q.T / temperature * weight, torch.arange(len(k)), reduction="none")
    if not class_balance:
        return per_anchor.mean()
    votes = torch.where(similarity >= threshold, similarity, 0.0).sum(1)
    votes = votes - votes.min()
    anchor = 1.0 - votes / votes.max()
    return (per_anchor * anchor).sum() / anchor.sum()


@pytest.mark.parametrize("class_balance", [False, True])
@pytest.mark.parametrize("min_quantile", [0.0, 0.01, 0.2, 0.45])
def test_stslidr_original_matches_the_released_rule(min_quantile: float, class_balance: bool) -> None:
    n = 9
    points, segment, pixels, _ = one_row_per_superpixel(n, 5, 40)
    teacher = torch.randn(n, 4, generator=torch.Generator().manual_seed(41), dtype=torch.float64)
    teacher[:, 0] += 0.8  # mostly positive similarities, some negative
    expected = released_reference(points, pixels, teacher, 0.07, min_quantile, class_balance)
    got = stslidr_loss(
        points, segment, pixels, segment, teacher, segment, n,
        min_quantile=min_quantile, class_balance=class_balance, original=True,
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def brute_fixed_stslidr(k, q, teacher_means, temperature, min_quantile, class_balance, threshold=0.5) -> float:
    n = len(k)
    f = F.normalize(teacher_means, dim=1)
    similarity = (f @ f.T).tolist()
    removed = math.floor(min_quantile * (n - 1) + 1e-9)
    weights = [[1.0] * n for _ in range(n)]
    for i in range(n):
        order = sorted((j for j in range(n) if j != i), key=lambda j: -similarity[i][j])
        for j in order[:removed]:
            weights[i][j] = 0.0
    anchor = None
    if class_balance:
        votes = [sum(s for s in row if s >= threshold) for row in similarity]
        lo, hi = min(votes), max(votes)
        anchor = [1.0 - (v - lo) / (hi - lo) for v in votes]
    return brute_info_nce(k, q, temperature, weights, anchor)


@pytest.mark.parametrize("class_balance", [False, True])
@pytest.mark.parametrize("min_quantile", [0.1, 0.3, 1.0])
def test_stslidr_fixed_matches_brute_force(min_quantile: float, class_balance: bool) -> None:
    n = 11
    points, segment, pixels, _ = one_row_per_superpixel(n, 5, 50)
    teacher = torch.randn(n, 4, generator=torch.Generator().manual_seed(51), dtype=torch.float64)
    teacher[:, 0] += 0.8
    got = stslidr_loss(
        points, segment, pixels, segment, teacher, segment, n, min_quantile=min_quantile, class_balance=class_balance
    )
    expected = brute_fixed_stslidr(points, pixels, teacher, 0.07, min_quantile, class_balance)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_stslidr_is_invariant_to_permutations_and_ids() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(6)
    teacher = unit(80, 7, 7)
    teacher_segment = torch.randint(0, 12, (80,), generator=torch.Generator().manual_seed(2))
    expected = stslidr_loss(
        points, point_segment, pixels, pixel_segment, teacher, teacher_segment, 12, min_quantile=0.3
    )
    relabel = torch.tensor([11, 5, 9, 0, 3, 7, 1, 2, 4, 6, 8, 10]) * 10 + 3
    p1, p2, p3 = (torch.randperm(n, generator=torch.Generator().manual_seed(n)) for n in (20, 60, 80))
    got = stslidr_loss(
        points[p1], relabel[point_segment[p1]], pixels[p2], relabel[pixel_segment[p2]],
        teacher[p3], relabel[teacher_segment[p3]], 120, min_quantile=0.3,
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_stslidr_original_quantile_beyond_torch_quantile_limit() -> None:
    # 4200^2 > 2^24 elements: torch.quantile would refuse the similarity matrix.
    n = 4200
    g = torch.Generator().manual_seed(0)
    segment = torch.arange(n)
    feats = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    teacher = torch.randn(n, 8, generator=g)
    loss = stslidr_loss(feats, segment, feats, segment, teacher, segment, n, original=True)
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------ ScaLR


def test_scalr_loss_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, -1.0]])
    teacher = torch.tensor([[0.0, 1.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]])
    # distances: sqrt(2), 0, |0 - (0, 1)| = 1 (zero vector stays zero), 2
    expected = (math.sqrt(2) + 0 + 1 + 2) / 4
    assert scalr_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_scalr_loss_is_sqrt_two_minus_two_cos_and_permutation_invariant() -> None:
    s, t = torch.randn(30, 6, dtype=torch.float64), torch.randn(30, 6, dtype=torch.float64)
    expected = torch.sqrt(2 - 2 * F.cosine_similarity(s, t, dim=1)).mean()
    assert scalr_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-10)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    assert scalr_loss(s[perm], t[perm]).item() == pytest.approx(expected.item(), rel=1e-10)


def test_scalr_loss_gradients_finite_at_zero_and_coinciding_vectors() -> None:
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]])
    scalr_loss(student, teacher).backward()
    assert_finite_grads(student)
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = scalr_loss(empty, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0
    assert_finite_grads(empty)


# ------------------------------------------------------------------------------------- all losses: grads


def test_every_loss_has_finite_gradients() -> None:
    points, point_segment, pixels, pixel_segment = random_superpixel_batch(8)
    points = points.float().requires_grad_()
    pixels = pixels.float().requires_grad_()
    teacher = unit(80, 7, 9).float()
    teacher_segment = torch.randint(0, 12, (80,), generator=torch.Generator().manual_seed(3))
    losses = {
        "info_nce": info_nce(points, F.normalize(pixels[:20], dim=1)),
        "ppkt": ppkt_loss(points, pixels[:20], max_pairs=8),
        "slidr": slidr_loss(points, point_segment, pixels, pixel_segment, 12),
        "stslidr": stslidr_loss(
            points, point_segment, pixels, pixel_segment, teacher, teacher_segment, 12, min_quantile=0.3
        ),
        "stslidr_original": stslidr_loss(
            points, point_segment, pixels, pixel_segment, teacher, teacher_segment, 12, min_quantile=0.3, original=True
        ),
        "scalr": scalr_loss(points, pixels[:20]),
    }
    for name, loss in losses.items():
        points.grad = pixels.grad = None
        assert torch.isfinite(loss), name
        loss.backward()
        assert_finite_grads(points, pixels)
        assert points.grad.abs().sum() > 0 and pixels.grad.abs().sum() > 0, name


# -------------------------------------------------------------------------------------------- loss scope


def test_gather_across_processes_single_process_returns_inputs() -> None:
    a, b = torch.ones(3, 2, requires_grad=True), torch.arange(4)
    gathered = gather_across_processes(a, b)
    assert gathered[0] is a and gathered[1] is b
    assert gather_across_processes() == ()


WORKER = textwrap.dedent(
    """
    import importlib.util
    import sys
    import torch
    import torch.distributed as dist

    rank, store, out, source = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    # Load the module file alone: the lidarssl.methods package imports Lightning, seconds per process.
    spec = importlib.util.spec_from_file_location("contrastive", source)
    contrastive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contrastive)
    gather_across_processes = contrastive.gather_across_processes
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    feats = torch.arange(6.0 * (rank + 2)).reshape(rank + 2, 6).add(100 * rank).requires_grad_()
    ids = torch.arange(3 * rank + 1) + 10 * rank  # 1 row on rank 0, 4 on rank 1
    mask = torch.tensor([True, rank == 1, False])
    all_feats, all_ids, all_mask = gather_across_processes(feats, ids, mask)
    # A loss that weighs every gathered row differently: row r gets weight r + 1.
    weights = torch.arange(1.0, all_feats.shape[0] + 1)[:, None]
    (all_feats * weights).sum().backward()
    torch.save({"feats": all_feats.detach(), "ids": all_ids, "mask": all_mask, "grad": feats.grad}, out)
    dist.destroy_process_group()
    """
)


def test_gather_across_processes_two_gloo_processes(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(tmp_path / "store"), str(outputs[r]), SOURCE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    for proc in procs:
        log, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, log.decode()
    results = [torch.load(path) for path in outputs]
    expected_feats = torch.cat(
        [torch.arange(12.0).reshape(2, 6), torch.arange(18.0).reshape(3, 6) + 100]
    )
    for result in results:
        torch.testing.assert_close(result["feats"], expected_feats)
        assert result["ids"].tolist() == [0, 10, 11, 12, 13]
        assert result["mask"].tolist() == [True, False, False, True, True, False]
        assert result["mask"].dtype == torch.bool
    # Gradients reach only the local rows: rank 0 holds gathered rows 0-1, rank 1 rows 2-4.
    torch.testing.assert_close(results[0]["grad"], torch.tensor([[1.0], [2.0]]).expand(2, 6))
    torch.testing.assert_close(results[1]["grad"], torch.tensor([[3.0], [4.0], [5.0]]).expand(3, 6))
