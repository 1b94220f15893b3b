"""Losses of the image-to-lidar pretraining methods PPKT, SLidR, ST-SLidR and ScaLR, as pure torch functions.

Every function takes already-paired features: row i of the point side goes with row i of the image side
(a point and the pixel it projects to), or with a superpixel id. Building the pairs and the superpixel ids
(global over the batch: SLidR offsets the ids of image b by ``b * superpixel_size``) is the data
pipeline's job.

* :func:`info_nce` is the contrastive loss all the methods share, with optional weights of the negatives
  in the denominator and of the anchors in the mean.
* :func:`ppkt_loss` (PPKT): InfoNCE over at most 4096 randomly drawn point-pixel pairs.
* :func:`slidr_loss` (SLidR): InfoNCE over superpixel averages of point and pixel features.
* :func:`stslidr_loss` (ST-SLidR): SLidR that drops the negatives a frozen 2D teacher finds most similar to
  the anchor, and weights anchors down when many superpixels look like them (class balancing).
* :func:`scalr_loss` (ScaLR): mean Euclidean distance between unit student and unit teacher features.
* :func:`gather_across_processes` sets the loss scope: negatives from this process's batch only, or from
  every process.

Every loss computes in float32 at least (float64 inputs stay float64), whatever the input dtype and even
under autocast, and
returns a scalar that stays attached to the graph of its inputs even when nothing can be compared (no
pair, one superpixel), so ``loss.backward()`` never fails on an empty batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lidarssl.errors import DataError

__all__ = [
    "gather_across_processes",
    "info_nce",
    "ppkt_loss",
    "sample_pairs",
    "scalr_loss",
    "slidr_loss",
    "stslidr_loss",
    "superpixel_pool",
]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64: half precision is too coarse for a log-sum-exp."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 attached to the graph of every input, in the compute dtype."""
    dtype = _compute_dtype(*tensors)
    total = torch.zeros((), dtype=dtype, device=tensors[0].device)
    for tensor in tensors:
        total = total + tensor.to(dtype).sum() * 0.0
    return total


def _full_precision(device: torch.device) -> torch.autocast:
    """Turn autocast off: under it a matmul would run in half precision whatever its input dtype."""
    return torch.autocast(device_type=device.type, enabled=False)


def _check_pairs(name: str, a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise DataError(
            f"{name} expects {a_name} and {b_name} of the same shape (N, C), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def info_nce(
    k: torch.Tensor,
    q: torch.Tensor,
    temperature: float = 0.07,
    weights: torch.Tensor | None = None,
    anchor_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE loss of N anchors: row i of ``k`` must pick ``q[i]`` among all rows of ``q``.

    ``l_i = -log( exp(s_ii) / (exp(s_ii) + sum_{j != i} w_ij exp(s_ij)) )`` with ``s = k q^T / temperature``,
    i.e. the cross-entropy of the logits ``s_ij + log w_ij`` with target i. Nothing is normalised here:
    pass L2-normalised features (cosine logits), or the un-normalised superpixel averages SLidR uses.

    Args:
        k: (N, C) anchors (the 3D side: point or superpoint features).
        q: (N, C) their positives, row for row (the 2D side); the other rows are the negatives.
        temperature: softmax temperature τ > 0.
        weights: (N, N) >= 0 weights of the negatives **in the denominator**. ``w_ij = 0`` removes
            negative j from row i entirely (it contributes 0, not ``exp(0)``), ``w_ij = 1`` everywhere is
            plain InfoNCE. The diagonal is ignored: the positive always has weight 1. A row whose negatives
            are all removed has loss ``log(exp(s_ii) / exp(s_ii)) = 0``.
        anchor_weights: (N,) >= 0 weights of the anchors: the loss is ``sum_i a_i l_i / sum_i a_i``
            (0 when all weights are 0) instead of the plain mean.

    Returns:
        Scalar loss; 0 (attached to the graph) when N <= 1, where there is no negative.
    """
    _check_pairs("info_nce", k, q, "k", "q")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = k.shape[0]
    if weights is not None and weights.shape != (n, n):
        raise DataError(f"info_nce expects weights of shape ({n}, {n}), got {tuple(weights.shape)}")
    if anchor_weights is not None and anchor_weights.shape != (n,):
        raise DataError(f"info_nce expects anchor_weights of shape ({n},), got {tuple(anchor_weights.shape)}")
    if n <= 1:
        return _zero(k, q)
    dtype = _compute_dtype(k, q)
    with _full_precision(k.device):
        logits = (k.to(dtype) @ q.to(dtype).T) / temperature
    if weights is not None:
        if bool((weights < 0).any()):
            raise ValueError("info_nce weights of the negatives must be >= 0")
        w = weights.to(dtype)
        eye = torch.eye(n, dtype=torch.bool, device=logits.device)
        # log 0 = -inf: a removed negative drops out of the log-sum-exp. The clamp keeps the gradient of
        # the unused branch finite (torch.where would otherwise turn 0 * inf into NaN).
        log_w = torch.where(w > 0, w.clamp_min(torch.finfo(dtype).tiny).log(), float("-inf"))
        logits = logits + log_w.masked_fill(eye, 0.0)
    # The diagonal is always finite, so the log-sum-exp is too, even when the rest of the row is -inf.
    per_anchor = torch.logsumexp(logits, dim=1) - logits.diagonal()
    if anchor_weights is None:
        return per_anchor.mean()
    if bool((anchor_weights < 0).any()):
        raise ValueError("info_nce anchor_weights must be >= 0")
    a = anchor_weights.to(dtype)
    total = a.sum()
    return (a * per_anchor).sum() / torch.where(total > 0, total, torch.ones_like(total))


def sample_pairs(num_pairs: int, max_pairs: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``min(num_pairs, max_pairs)`` pairs drawn uniformly without replacement.

    PPKT draws 4096 of the point-pixel pairs of a batch; with fewer pairs available all of them are used
    (the released code crashes instead).

    Args:
        num_pairs: number of pairs available, >= 0.
        max_pairs: largest number of pairs to keep, >= 0.
        generator: random generator (its device is used); the global one when None.

    Returns:
        (min(num_pairs, max_pairs),) int64 indices into 0..num_pairs-1, distinct, in random order.
    """
    if num_pairs < 0 or max_pairs < 0:
        raise ValueError(f"num_pairs and max_pairs must be >= 0, got {num_pairs} and {max_pairs}")
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(num_pairs, generator=generator, device=device)[: min(num_pairs, max_pairs)]


def ppkt_loss(
    point_feats: torch.Tensor,
    pixel_feats: torch.Tensor,
    max_pairs: int = 4096,
    temperature: float = 0.07,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PPKT loss: InfoNCE over at most ``max_pairs`` random point-pixel pairs, the other pairs as negatives.

    Args:
        point_feats: (P, C) L2-normalised point features, one row per pair.
        pixel_feats: (P, C) L2-normalised pixel features of the same pairs.
        max_pairs: pairs drawn without replacement (PPKT: 4096 per GPU batch).
        temperature: softmax temperature (0.07).
        generator: random generator of the draw.

    Returns:
        Scalar loss; 0 (attached to the graph) with fewer than 2 pairs.
    """
    _check_pairs("ppkt_loss", point_feats, pixel_feats, "point_feats", "pixel_feats")
    index = sample_pairs(point_feats.shape[0], max_pairs, generator).to(point_feats.device)
    if index.numel() < 2:
        return _zero(point_feats, pixel_feats)
    return info_nce(point_feats[index], pixel_feats[index], temperature)


def superpixel_pool(
    features: torch.Tensor, segment: torch.Tensor, num_segments: int, renormalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of every superpixel, by a scatter-add (no dense one-hot matrix).

    Args:
        features: (P, C) features of points or pixels.
        segment: (P,) int64 superpixel id of each row, in 0..num_segments-1; ids need not be contiguous.
        num_segments: number of superpixel ids S.
        renormalize: L2-normalise the means. SLidR does not: the mean of unit vectors is shorter than 1
            when they disagree, which lowers that superpixel's logits. Empty superpixels stay 0.

    Returns:
        pooled: (S, C) mean features, 0 for superpixels without members; float32 at least.
        counts: (S,) int64 number of rows in each superpixel.
    """
    if features.ndim != 2 or segment.shape != features.shape[:1]:
        raise DataError(
            f"superpixel_pool expects features (P, C) and segment (P,), got {tuple(features.shape)} and "
            f"{tuple(segment.shape)}"
        )
    if segment.dtype not in (torch.int64, torch.int32):
        raise DataError(f"superpixel_pool expects integer superpixel ids, got {segment.dtype}")
    if segment.numel():
        lo, hi = map(int, torch.aminmax(segment))
        if lo < 0 or hi >= num_segments:
            raise DataError(f"superpixel id {lo if lo < 0 else hi} is outside 0..{num_segments - 1}")
    segment = segment.long()
    dtype = _compute_dtype(features)
    counts = torch.bincount(segment, minlength=num_segments)
    sums = features.new_zeros((num_segments, features.shape[1]), dtype=dtype)
    sums = sums.index_add(0, segment, features.to(dtype))
    pooled = sums / counts.clamp_min(1).unsqueeze(1).to(dtype)
    if renormalize:
        pooled = F.normalize(pooled, dim=1)
    return pooled, counts


def slidr_loss(
    point_feats: torch.Tensor,
    point_segment: torch.Tensor,
    pixel_feats: torch.Tensor,
    pixel_segment: torch.Tensor,
    num_segments: int,
    temperature: float = 0.07,
    renormalize: bool = False,
) -> torch.Tensor:
    """SLidR superpixel-driven loss: InfoNCE between superpixel averages of points and of pixels.

    Superpixel s has ``k_s`` = mean of the (unit) point features of the pairs whose pixel lies in s and
    ``q_s`` = mean of the (unit) pixel embeddings of all pixels of s. Superpixels with no point or no pixel
    are dropped (by count: SLidR tests ``k[:, 0] != 0``, which also drops a superpixel whose mean happens to
    have a zero first channel). The negatives are all other kept superpixels of the batch given.

    Args:
        point_feats: (P, C) point features of the pairs.
        point_segment: (P,) global superpixel id of each pair's pixel.
        pixel_feats: (Q, C) pixel embeddings of all pixels of the images.
        pixel_segment: (Q,) global superpixel id of each pixel.
        num_segments: number of superpixel ids (images × superpixels per image).
        temperature: softmax temperature (0.07).
        renormalize: L2-normalise the averages first (SLidR does not).

    Returns:
        Scalar loss; 0 (attached to the graph) with fewer than 2 kept superpixels.
    """
    if point_feats.ndim != 2 or pixel_feats.ndim != 2 or point_feats.shape[1] != pixel_feats.shape[1]:
        raise DataError(
            f"slidr_loss expects point_feats (P, C) and pixel_feats (Q, C), got {tuple(point_feats.shape)} "
            f"and {tuple(pixel_feats.shape)}"
        )
    k, point_counts = superpixel_pool(point_feats, point_segment, num_segments, renormalize)
    q, pixel_counts = superpixel_pool(pixel_feats, pixel_segment, num_segments, renormalize)
    keep = (point_counts > 0) & (pixel_counts > 0)
    return info_nce(k[keep], q[keep], temperature)


def _row_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per-row ``torch.quantile(values, quantile, dim=1)`` (linear interpolation), by ``kthvalue``.

    ``torch.quantile`` refuses inputs of more than 2^24 elements (N > 4096 superpixels).
    """
    n = values.shape[1]
    position = quantile * (n - 1)
    lo = math.floor(position)
    hi = min(lo + 1, n - 1)
    lower = torch.kthvalue(values, lo + 1, dim=1).values
    upper = torch.kthvalue(values, hi + 1, dim=1).values
    return torch.lerp(lower, upper, torch.full_like(lower, position - lo))


def stslidr_loss(
    point_feats: torch.Tensor,
    point_segment: torch.Tensor,
    pixel_feats: torch.Tensor,
    pixel_segment: torch.Tensor,
    teacher_feats: torch.Tensor,
    teacher_segment: torch.Tensor,
    num_segments: int,
    temperature: float = 0.07,
    min_quantile: float = 0.01,
    class_balance: bool = True,
    balance_threshold: float = 0.5,
    original: bool = False,
    renormalize: bool = False,
) -> torch.Tensor:
    """ST-SLidR semantically tolerant loss: SLidR without the negatives the 2D teacher deems the same thing.

    The frozen teacher gives superpixel s the feature ``f_s`` = mean of its raw features over s; ``S`` is
    the cosine similarity of the ``f_s`` of the kept superpixels (those with a point, a pixel and a nonzero
    teacher feature). Then, with N kept superpixels:

    * **Negative removal**: the ``m = floor(min_quantile * (N - 1))`` negatives most similar to anchor i
      (off-diagonal ``S_ij`` at least the m-th largest of row i; ties are all removed) get weight 0 in
      the denominator of :func:`info_nce`, the others weight 1.
    * **Class balancing** (``class_balance``): votes ``v_i = sum_j S_ij [S_ij >= balance_threshold]``
      (the diagonal included), min-max normalised to ``v̂`` (all 0 when the votes are all equal, where the
      released code divides by 0), anchor weights ``a_i = 1 - v̂_i``: the most self-similar (background)
      anchor gets weight 0. The loss is ``sum a_i l_i / sum a_i``; without balancing, the plain mean.

    ``original=True`` reproduces the released implementation instead, for comparison: ``W = 1 - S`` (with
    ``S`` clipped to [0, 1] unless ``class_balance``), then if ``min_quantile > 0`` the entries of W below
    the row's ``min_quantile`` quantile (``torch.quantile``'s linear interpolation over the whole row, the
    diagonal included) and those exactly 0 become 0, the others 1 (with ``min_quantile = 0``, W stays the
    continuous ``1 - S``), the diagonal is set to 1, and the **logits are multiplied by W**: a removed
    negative keeps logit 0 and so still adds ``exp(0) = 1`` to the denominator. It therefore masks
    ``ceil(min_quantile * (N - 1)) - 1`` negatives per row, one fewer than this function's count when
    ``min_quantile * (N - 1)`` is an integer. The anchor weights are the same in both modes.

    Args:
        point_feats: (P, C) point features of the pairs.
        point_segment: (P,) global superpixel id of each pair's pixel.
        pixel_feats: (Q, C) pixel embeddings of all pixels.
        pixel_segment: (Q,) global superpixel id of each pixel.
        teacher_feats: (R, D) raw features of the frozen teacher (no gradient flows into them).
        teacher_segment: (R,) global superpixel id of each teacher feature, e.g. of the superpixel map
            resized (nearest) to the feature map's resolution.
        num_segments: number of superpixel ids.
        temperature: softmax temperature (0.07).
        min_quantile: fraction in [0, 1] of each anchor's negatives to remove (0.01 as released).
        class_balance: weight anchors by teacher-similarity votes (the headline method).
        balance_threshold: similarities below it cast no vote (0.5).
        original: reproduce the released logit multiplication instead of the weighted denominator.
        renormalize: L2-normalise the point and pixel averages first (SLidR and ST-SLidR do not).

    Returns:
        Scalar loss; 0 (attached to the graph) with fewer than 2 kept superpixels.
    """
    if not 0.0 <= min_quantile <= 1.0:
        raise ValueError(f"min_quantile must be in [0, 1], got {min_quantile}")
    if teacher_feats.ndim != 2:
        raise DataError(f"stslidr_loss expects teacher_feats (R, D), got {tuple(teacher_feats.shape)}")
    if point_feats.ndim != 2 or pixel_feats.ndim != 2 or point_feats.shape[1] != pixel_feats.shape[1]:
        raise DataError(
            f"stslidr_loss expects point_feats (P, C) and pixel_feats (Q, C), got {tuple(point_feats.shape)} "
            f"and {tuple(pixel_feats.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k, point_counts = superpixel_pool(point_feats, point_segment, num_segments, renormalize)
    q, pixel_counts = superpixel_pool(pixel_feats, pixel_segment, num_segments, renormalize)
    with torch.no_grad():
        f, teacher_counts = superpixel_pool(teacher_feats.detach(), teacher_segment, num_segments)
        keep = (point_counts > 0) & (pixel_counts > 0) & (teacher_counts > 0) & (f.norm(dim=1) > 0)
        f_unit = F.normalize(f[keep], dim=1)
        with _full_precision(f_unit.device):
            similarity = f_unit @ f_unit.T
    k, q = k[keep], q[keep]
    n = k.shape[0]
    if n <= 1:
        return _zero(k, q)
    dtype = k.dtype
    with torch.no_grad():
        similarity = similarity.to(dtype)
        anchor_weights = None
        if class_balance:
            votes = torch.where(similarity >= balance_threshold, similarity, 0.0).sum(1)
            votes = votes - votes.min()
            top = votes.max()
            votes = votes / torch.where(top > 0, top, torch.ones_like(top))
            anchor_weights = 1.0 - votes
        eye = torch.eye(n, dtype=torch.bool, device=k.device)
        if original:
            weight = 1.0 - (similarity if class_balance else similarity.clamp(0.0, 1.0))
            if min_quantile > 0.0:
                threshold = _row_quantile(weight, min_quantile)
                weight = torch.where(weight < threshold[:, None], 0.0, weight)
                weight = (weight != 0).to(dtype)
            weight = weight.masked_fill(eye, 1.0)
        else:
            weight = torch.ones_like(similarity)
            num_removed = math.floor(min_quantile * (n - 1) + 1e-9)
            if num_removed > 0:
                off_diagonal = similarity.masked_fill(eye, float("-inf"))
                # The num_removed-th largest off-diagonal similarity of each row.
                kth = -torch.kthvalue(-off_diagonal, num_removed, dim=1).values
                weight = weight.masked_fill(off_diagonal >= kth[:, None], 0.0)
    if not original:
        return info_nce(k, q, temperature, weights=weight, anchor_weights=anchor_weights)
    with _full_precision(k.device):
        logits = (k @ q.T) / temperature * weight
    per_anchor = torch.logsumexp(logits, dim=1) - logits.diagonal()
    if anchor_weights is None:
        return per_anchor.mean()
    total = anchor_weights.sum()
    return (anchor_weights * per_anchor).sum() / torch.where(total > 0, total, torch.ones_like(total))


def scalr_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ScaLR distillation loss: mean over pairs of ``|| student/|student| - teacher/|teacher| ||_2``.

    Unsquared, so each term is ``sqrt(2 - 2 cos)``, in [0, 2]. A zero vector stays zero after the
    normalisation (``x / max(|x|, eps)``), so its term is the norm of the other side, and gradients stay
    finite (also where student and teacher coincide).

    Args:
        student: (P, C) point features from the student's distillation head.
        teacher: (P, C) teacher features at the pixels the points project to.
        eps: lower bound of the norm in the normalisation.

    Returns:
        Scalar loss; 0 (attached to the graph) without pairs.
    """
    _check_pairs("scalr_loss", student, teacher, "student", "teacher")
    if student.shape[0] == 0:
        return _zero(student, teacher)
    dtype = _compute_dtype(student, teacher)
    s = F.normalize(student.to(dtype), dim=1, eps=eps)
    t = F.normalize(teacher.to(dtype), dim=1, eps=eps)
    return torch.linalg.vector_norm(s - t, dim=1).mean()


def gather_across_processes(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor's rows over all processes, in rank order; the local rows keep their gradient.

    This sets the **loss scope**:

    * ``'process'``: compute the loss on this process's tensors as they are; the negatives come from this
      process's batch only. This is SLidR's and ST-SLidR's behaviour, so their results depend on the number
      of GPUs (the batch per GPU sets the number of negatives).
    * ``'global'``: pass the tensors through this function first; the negatives then come from the batches
      of all processes, and the loss no longer depends on how the global batch is split.

    When ``torch.distributed`` is initialised with more than one process, every tensor may have a different
    number of rows on each process (they are padded to the largest, gathered, and cut back); the trailing
    dimensions and the dtype must agree. The rows of the other processes arrive without gradient; this
    process's own rows are spliced back in unchanged, so gradients flow to them. When every process
    computes the same loss over all gathered rows, the gradient of each process is exact for its own rows,
    so the full gradient is the *sum* over processes: DDP averages, which divides it by the world size
    (scale the loss or the learning rate accordingly). Superpixel ids must be made unique across processes
    before gathering (e.g. add ``rank * num_segments`` and use ``world_size * num_segments`` ids).

    Args:
        tensors: tensors of at least one dimension, rows along the first; on the device the process group
            communicates on (CUDA for NCCL).

    Returns:
        The gathered tensors, or the inputs themselves outside a multi-process group.
    """
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(tensors)
    for tensor in tensors:
        if tensor.ndim == 0:
            raise ValueError("gather_across_processes needs tensors with a row dimension, got a scalar")
    world, rank = dist.get_world_size(), dist.get_rank()
    device = tensors[0].device
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64, device=device)
    all_lengths = [torch.empty_like(lengths) for _ in range(world)]
    dist.all_gather(all_lengths, lengths)
    sizes = torch.stack(all_lengths).tolist()  # sizes[r][i]: rows of tensor i on rank r
    gathered = []
    for i, tensor in enumerate(tensors):
        rows = [sizes[r][i] for r in range(world)]
        # Not every backend gathers booleans: ship them as bytes.
        payload = tensor.detach().to(torch.uint8) if tensor.dtype == torch.bool else tensor.detach()
        padded = payload.new_zeros((max(rows), *payload.shape[1:]))
        padded[: tensor.shape[0]] = payload
        buffers = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(buffers, padded)
        parts = [
            tensor if r == rank else buffers[r][: rows[r]].to(tensor.dtype) for r in range(world)
        ]
        gathered.append(torch.cat(parts))
    return tuple(gathered)
