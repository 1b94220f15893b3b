"""Why NCLR's pose term does or does not learn: how good its point-to-pixel soft matches are, and what pose PnP
gets from them, from the true pixels and from the true pixels plus noise.

Loads an NCLR pretraining run (its ``config.yaml`` and ``checkpoints/last.ckpt``), builds training batches as the
run did (same augmentation and crops) and, for every view, takes the points the batch pairs with it (ground-truth
overlap, so the keypoint selection is not what is measured) and their fused features. Reports, over ``--batches``
batches:

* the soft match's error in pixels and in cells of the pixel grid (the softmax over cells at the recipe's
  ``match_temperature``, as the pose term uses it), the argmax cell's accuracy (exact, within one cell) and the
  error of a match that ignores the features (every point at the image centre);
* the rotation (degrees) and translation (m) errors of PnP from the soft matches, from the argmax cells, from the
  true pixels, and from the true pixels plus Gaussian noise (of the soft matches' RMS error, and of 1 to 8 px):
  how good the matches must become for the pose to be learnable.

    PYTHONPATH=src python benchmarks/nclr_pose.py runs/six/201/pretrain-nclr --batches 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


NOISE_PX = (1, 2, 4, 8)


def measure(run: Path, batches: int, seed: int = 0) -> dict[str, float]:
    from lidarssl.config import load_config
    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.loader import ScanCollate, ScanSamples
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.nclr import cell_centres, pixel_bearings, point_overlap_labels
    from lidarssl.methods.pnp import rotation_error_deg, solve_pnp
    from lidarssl.methods.pretrain import build_method
    from lidarssl.run_folder import read_checkpoint
    from lidarssl.runs import last_checkpoint

    config = load_config(PretrainConfig, run / "config.yaml")
    if config.method.name != "nclr":
        raise SystemExit(f"{run}: a {config.method.name} run, not nclr")
    module, spec, builders = build_method(config)
    module.load_state_dict(read_checkpoint(last_checkpoint(run))["state_dict"])
    module.eval()
    module.options = o = module.options.model_copy(update={"pose_start_epoch": 0})  # the pose path runs now
    captured: dict[str, torch.Tensor] = {}

    def capture(batch, rows, p_fused, g_fused, point_logits, overlap, image_hw, grid):
        captured.update(rows=rows, p_fused=p_fused, g_fused=g_fused, image_hw=torch.tensor(image_hw),
                        grid=torch.tensor(grid))
        zero = p_fused.sum() * 0
        return zero, zero, {}

    module.pose_losses = capture
    samples = ScanSamples(open_dataset(config.data.root, split=config.data.split), spec.prep, builders, seed=seed,
                          augment=config.augment.point_augment(), crop=config.crop)
    collate = ScanCollate(spec.prep, builders)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    size = config.trainer.batch_size
    out: dict[str, list[float]] = {k: [] for k in ("soft_px", "soft_cells", "centre_px", "argmax_exact",
                                                    "argmax_near", "rot_soft", "rot_argmax", "rot_true", "rot_noisy",
                                                    "trans_soft", "trans_argmax", "trans_true", "trans_noisy")}
    for sigma in NOISE_PX:
        out[f"rot_{sigma}px"], out[f"trans_{sigma}px"] = [], []
    for b in range(batches):
        batch = collate([samples[int(i)] for i in order[b * size:(b + 1) * size]])
        torch.manual_seed(seed + b)
        with torch.no_grad():
            module.losses(batch)
        rows, p, g = captured["rows"], captured["p_fused"], captured["g_fused"]
        H, W = captured["image_hw"].tolist()
        h, w = captured["grid"].tolist()
        cell = torch.tensor([W / w, H / h])
        centres = cell_centres((H, W), (h, w))
        V, M = len(rows), int(batch["offsets"][-1])
        overlap, pair_index = point_overlap_labels(batch["pair_row"], batch["pair_view"], M,
                                                   torch.arange(V)[:, None], rows)
        for v in range(V):
            n = torch.nonzero(overlap[v]).squeeze(1)
            if len(n) < 12:
                continue
            true_uv = batch["pair_uv"][pair_index[v, n]].float()
            sim = F.normalize(p[v, n].float(), dim=-1) @ F.normalize(g[v].float(), dim=-1).T
            soft_uv = torch.softmax(sim / o.match_temperature, dim=-1) @ centres
            hard = sim.argmax(1)
            true_cell = ((true_uv[:, 1] / cell[1]).floor() * w + (true_uv[:, 0] / cell[0]).floor()).long()
            drow = (hard // w - true_cell // w).abs()
            dcol = (hard % w - true_cell % w).abs()
            err = (soft_uv - true_uv).norm(dim=1)
            out["soft_px"].append(float(err.mean()))
            out["soft_cells"].append(float((((soft_uv - true_uv) / cell).norm(dim=1)).mean()))
            out["centre_px"].append(float((true_uv - torch.tensor([W / 2, H / 2])).norm(dim=1).mean()))
            out["argmax_exact"].append(float((hard == true_cell).float().mean()))
            out["argmax_near"].append(float(((drow <= 1) & (dcol <= 1)).float().mean()))
            K = batch["K"][v : v + 1].float()
            T = batch["lidar_to_cam"][v : v + 1].float()
            xyz = batch["row_xyz"][rows[v, n]].float()[None]
            rms = float(err.pow(2).mean().sqrt()) / np.sqrt(2)  # per axis
            noise = torch.randn(true_uv.shape, generator=torch.Generator().manual_seed(v))
            tries = [("soft", soft_uv), ("argmax", centres[hard]), ("true", true_uv), ("noisy", true_uv + noise * rms)]
            tries += [(f"{sigma}px", true_uv + noise * sigma) for sigma in NOISE_PX]
            for name, uv in tries:
                res = solve_pnp(xyz.double(), pixel_bearings(uv[None], K).double(), iterations=o.pnp_iterations)
                if bool(res.valid[0]):
                    out[f"rot_{name}"].append(float(rotation_error_deg(res.R, T[:, :3, :3].double())[0]))
                    out[f"trans_{name}"].append(float((res.t[0] - T[0, :3, 3].double()).norm()))
    return {k: float(np.median(v)) if v else float("nan") for k, v in out.items()} | {
        "views": len(out["soft_px"]), "grid": f"{h}x{w} cells of {W / w:.0f}x{H / h:.0f} px in {W}x{H} crops"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an NCLR pretraining run directory")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    r = measure(args.run, args.batches)
    print(f"{args.run}: {r['views']} views, {r['grid']}; medians over views\n")
    print("| match | pixel error | rotation error (deg) | translation error (m) |\n|---|---|---|---|")
    print(f"| soft match (temperature) | {r['soft_px']:.1f} px ({r['soft_cells']:.1f} cells) | {r['rot_soft']:.1f} | "
          f"{r['trans_soft']:.2f} |")
    print(f"| argmax cell (exact {100 * r['argmax_exact']:.0f} %, within one cell {100 * r['argmax_near']:.0f} %) | "
          f"- | {r['rot_argmax']:.1f} | {r['trans_argmax']:.2f} |")
    print(f"| image centre (features ignored) | {r['centre_px']:.1f} px | - | - |")
    print(f"| true pixels | 0 | {r['rot_true']:.2f} | {r['trans_true']:.3f} |")
    print(f"| true pixels + noise of the soft matches' RMS | - | {r['rot_noisy']:.1f} | {r['trans_noisy']:.2f} |")
    for sigma in NOISE_PX:
        rot, trans = r[f"rot_{sigma}px"], r[f"trans_{sigma}px"]
        print(f"| true pixels + {sigma} px noise per axis | - | {rot:.1f} | {trans:.2f} |")


if __name__ == "__main__":
    main()
