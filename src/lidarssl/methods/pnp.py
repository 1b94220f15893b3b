"""A batched, differentiable Perspective-n-Point solver on normalised image coordinates (bearings).

NCLR regresses each view's camera-from-lidar pose from soft point-to-pixel matches. This solver takes 3D
points and their **normalised image coordinates** ``(x / z, y / z) = K^-1 [u, v, 1]`` rather than pixels,
so it needs no intrinsics and stays correct under any pixel-space augmentation (crops, resizes, and a
horizontal flip, whose intrinsics have a negative ``fx``).

The solve has three stages, all batched over views, with a per-point mask so views may use different
numbers of points:

1. **DLT** (no gradient, float64): the 3x4 projection ``[R | t]`` up to scale is the null vector of the
   usual 2N x 12 linear system on Hartley-normalised points; its sign is chosen so that the points lie in
   front of the camera, and its left 3x3 block is projected onto SO(3).
2. **Levenberg-Marquardt** (no gradient): a few iterations on the reprojection error in normalised
   coordinates, with the rotation updated on the left, ``R <- exp([w]x) R``.
3. **One Gauss-Newton step with gradient** from the detached optimum. At a minimum of the reprojection
   error this step's derivative with respect to the points and bearings is the implicit-function gradient
   of the optimum (in the Gauss-Newton approximation), so gradients stay exact enough and never pass
   through an eigen- or singular-value decomposition (whose gradients blow up on repeated values).

Degenerate inputs do not raise: a view with fewer than ``min_points`` points, (near) coplanar or
collinear points, an ill-conditioned normal matrix, most points behind the camera, or a non-finite result
gets ``valid = False`` and an identity pose, and contributes no gradient (the differentiable step runs on
the valid views only), so a loss over the valid views is never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PnPResult", "solve_pnp", "skew", "rotation_error_deg"]


@dataclass
class PnPResult:
    """Camera-from-world poses of a batch of views.

    Attributes:
        R: (B, 3, 3) rotations (identity where not valid).
        t: (B, 3) translations (zero where not valid): ``X_cam = R X + t``.
        valid: (B,) bool, the views with a usable solution.
        residual: (B,) RMS reprojection error in normalised coordinates at the solution (inf where not valid).
    """

    R: torch.Tensor
    t: torch.Tensor
    valid: torch.Tensor
    residual: torch.Tensor


def skew(w: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) cross-product matrices of (..., 3) vectors."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*w.shape[:-1], 3, 3)


def rotation_error_deg(R: torch.Tensor, R_ref: torch.Tensor) -> torch.Tensor:
    """(B,) angle in degrees of ``R R_ref^T``."""
    cos = ((R @ R_ref.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def _project_to_rotation(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The closest rotation to each (B, 3, 3) ``M`` and the mean singular value (its scale)."""
    U, S, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return U @ D @ Vh, S.mean(-1)


def _dlt(X: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial ``(R, t)`` by the DLT, and whether the 3D points span space (not coplanar or collinear)."""
    wsum = w.sum(1).clamp_min(1.0)
    c = (w[..., None] * X).sum(1) / wsum[:, None]
    Xc = X - c[:, None]
    cov = torch.einsum("bn,bni,bnj->bij", w, Xc, Xc) / wsum[:, None, None]
    ev = torch.linalg.eigvalsh(cov)  # ascending
    spread = ev[:, 0] > 1e-8 * ev[:, 2].clamp_min(1e-300)
    s = (3.0 ** 0.5) / ((w * Xc.norm(dim=-1)).sum(1) / wsum).clamp_min(1e-12)
    Xn = torch.cat([Xc * s[:, None, None], torch.ones_like(X[..., :1])], dim=-1)  # (B, N, 4)
    zeros = torch.zeros_like(Xn)
    r1 = torch.cat([Xn, zeros, -b[..., :1] * Xn], dim=-1)
    r2 = torch.cat([zeros, Xn, -b[..., 1:] * Xn], dim=-1)
    A = torch.cat([r1, r2], dim=1) * torch.cat([w, w], dim=1)[..., None]  # (B, 2N, 12)
    _, vecs = torch.linalg.eigh(A.transpose(1, 2) @ A)
    P = vecs[:, :, 0].reshape(-1, 3, 4)
    # undo the normalisation: P @ [[s I, -s c], [0, 1]]
    T = torch.zeros(len(X), 4, 4, dtype=X.dtype, device=X.device)
    T[:, :3, :3] = torch.eye(3, dtype=X.dtype, device=X.device) * s[:, None, None]
    T[:, :3, 3] = -s[:, None] * c
    T[:, 3, 3] = 1.0
    P = P @ T
    depth = torch.einsum("bi,bni->bn", P[:, 2, :3], X) + P[:, 2, 3:]
    front = (w * torch.sign(depth)).sum(1)
    P = P * torch.where(front < 0, -1.0, 1.0)[:, None, None]
    R, scale = _project_to_rotation(P[:, :, :3])
    t = P[:, :, 3] / scale.clamp_min(1e-300)[:, None]
    return R, t, spread


def _residuals(R: torch.Tensor, t: torch.Tensor, X: torch.Tensor, b: torch.Tensor, w: torch.Tensor,
               jacobian: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Weighted residuals (B, N, 2), their Jacobian (B, N, 2, 6) w.r.t. (w, t) of ``exp([w]x) R, t + dt``,
    and the camera depths (B, N)."""
    RX = X @ R.transpose(1, 2)
    Xc = RX + t[:, None]
    z = Xc[..., 2]
    zs = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    proj = Xc[..., :2] / zs[..., None]
    sw = w.sqrt()[..., None]
    r = (proj - b) * sw
    if not jacobian:
        return r, None, z
    inv = 1.0 / zs
    zero = torch.zeros_like(inv)
    dpi = torch.stack([inv, zero, -proj[..., 0] * inv, zero, inv, -proj[..., 1] * inv], dim=-1).reshape(*z.shape, 2, 3)
    dX = torch.cat([-skew(RX), torch.eye(3, dtype=X.dtype, device=X.device).expand(*z.shape, 3, 3)], dim=-1)
    J = (dpi @ dX) * sw[..., None]
    return r, J, z


def _normal_equations(r: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    Jf = J.reshape(len(J), -1, 6)
    rf = r.reshape(len(r), -1)
    return Jf.transpose(1, 2) @ Jf, (Jf.transpose(1, 2) @ rf[..., None])[..., 0]


def _apply(R: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.linalg.matrix_exp(skew(delta[:, :3])) @ R, t + delta[:, 3:]


def solve_pnp(points: torch.Tensor, bearings: torch.Tensor, mask: torch.Tensor | None = None, iterations: int = 10,
              min_points: int = 6) -> PnPResult:
    """Camera-from-world poses ``X_cam = R X + t`` with ``X_cam[:2] / X_cam[2] ≈ bearing``.

    Args:
        points: (B, N, 3) 3D points in the world (lidar) frame.
        bearings: (B, N, 2) normalised image coordinates ``(x / z, y / z)`` of each point, or (B, N, 3)
            rays ``K^-1 [u, v, 1]`` (divided by their third coordinate here).
        mask: (B, N) bool, the points to use (all when None).
        iterations: Levenberg-Marquardt iterations after the DLT.
        min_points: fewer used points than this makes a view invalid (the DLT needs 6).

    Returns:
        :class:`PnPResult` in the dtype of ``points``; gradients reach ``points`` and ``bearings`` through the
        valid views.
    """
    if points.ndim != 3 or points.shape[-1] != 3 or bearings.shape[:2] != points.shape[:2]:
        raise ValueError(f"solve_pnp expects points (B, N, 3) and bearings (B, N, 2|3), got "
                         f"{tuple(points.shape)} and {tuple(bearings.shape)}")
    out_dtype = points.dtype if points.is_floating_point() else torch.float32
    B, N = points.shape[:2]
    device = points.device
    with torch.autocast(device_type=device.type, enabled=False):
        X = points.double()
        b = bearings.double()
        if b.shape[-1] == 3:
            b = b[..., :2] / b[..., 2:]
        m = torch.ones(B, N, dtype=torch.bool, device=device) if mask is None else mask.bool()
        m = m & torch.isfinite(X).all(-1) & torch.isfinite(b).all(-1)
        w = m.double()
        X0 = torch.where(m[..., None], X, 0.0).detach()
        b0 = torch.where(m[..., None], b, 0.0).detach()
        with torch.no_grad():
            R, t, spread = _dlt(X0, b0, w)
            mu = torch.full((B,), 1e-3, dtype=torch.float64, device=device)
            r, J, _ = _residuals(R, t, X0, b0, w, jacobian=True)
            cost = r.square().sum((1, 2))
            for _ in range(iterations):
                H, g = _normal_equations(r, J)
                diag = torch.diag_embed(H.diagonal(dim1=1, dim2=2))
                eye = torch.eye(6, dtype=H.dtype, device=device)
                delta = -torch.linalg.solve(H + mu[:, None, None] * diag + 1e-15 * eye, g)
                delta = torch.nan_to_num(delta, nan=0.0, posinf=0.0, neginf=0.0)
                R1, t1 = _apply(R, t, delta)
                r1, J1, _ = _residuals(R1, t1, X0, b0, w, jacobian=True)
                cost1 = r1.square().sum((1, 2))
                better = torch.isfinite(cost1) & (cost1 <= cost)
                R = torch.where(better[:, None, None], R1, R)
                t = torch.where(better[:, None], t1, t)
                r = torch.where(better[:, None, None], r1, r)
                J = torch.where(better[:, None, None, None], J1, J)
                cost = torch.where(better, cost1, cost)
                mu = torch.where(better, mu * 0.3, mu * 10.0).clamp(1e-12, 1e12)
            H, _ = _normal_equations(r, J)
            ev = torch.linalg.eigvalsh(H)
            conditioned = ev[:, 0] > 1e-12 * ev[:, -1].clamp_min(1e-300)
            _, _, z = _residuals(R, t, X0, b0, w, jacobian=False)
            in_front = (w * (z > 0)).sum(1) > 0.5 * w.sum(1)
            valid = (w.sum(1) >= min_points) & spread & conditioned & in_front
            valid &= torch.isfinite(R).all((1, 2)) & torch.isfinite(t).all(1) & torch.isfinite(cost)
        R_out = torch.eye(3, dtype=torch.float64, device=device).repeat(B, 1, 1)
        t_out = torch.zeros(B, 3, dtype=torch.float64, device=device)
        residual = torch.full((B,), float("inf"), dtype=torch.float64, device=device)
        idx = torch.nonzero(valid).squeeze(1)
        if len(idx):
            # one Gauss-Newton step with gradient, from the detached optimum (see the module docstring)
            Xv = torch.where(m[idx, :, None], X[idx], 0.0)
            bv = torch.where(m[idx, :, None], b[idx], 0.0)
            rv, Jv, _ = _residuals(R[idx], t[idx], Xv, bv, w[idx], jacobian=True)
            H, g = _normal_equations(rv, Jv)
            delta = -torch.linalg.solve(H, g)
            Rv, tv = _apply(R[idx], t[idx], delta)
            ok = torch.isfinite(Rv).all((1, 2)) & torch.isfinite(tv).all(1)
            Rv = torch.where(ok[:, None, None], Rv, R[idx])
            tv = torch.where(ok[:, None], tv, t[idx])
            R_out = R_out.index_put((idx,), Rv)
            t_out = t_out.index_put((idx,), tv)
            with torch.no_grad():
                rr, _, _ = _residuals(Rv, tv, Xv, bv, w[idx], jacobian=False)
                residual[idx] = (rr.square().sum((1, 2)) / w[idx].sum(1).clamp_min(1)).sqrt()
    return PnPResult(R=R_out.to(out_dtype), t=t_out.to(out_dtype), valid=valid, residual=residual.to(out_dtype))
