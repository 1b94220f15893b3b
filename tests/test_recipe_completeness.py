"""Every mIoU the seed projects' READMEs publish is claimed by exactly one shipped recipe, or is listed below as out
of scope with the reason (the READMEs are read from ../shared/design/seeds beside the repository)."""

import re
from pathlib import Path

import pytest

from lidarssl.recipes import catalogue

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "design" / "seeds"

SCALR, SLIDR, NCLR, STSLIDR = ("ScaLR", "Image-to-Lidar Self-Supervised Distillation for Autonomous Driving Data",
                               "Self-supervised Learning of LiDAR 3D PointClouds via 2D-3D Neural Calibration",
                               "ST-SLidR")
SLIDR_FEW = "Results on the validation set using Minkowski SR-Unet:"
SLIDR_FRACTIONS = "Results on the validation set using Minkowski SR-Unet with a fraction of the training labels:"
NCLR_NUS = "Results on nuScenes' validation set using a Minkowski SR-Unet 34:"

# (README title, section heading, row, column) -> the recipe whose expected_miou is that number
CLAIMS: dict[tuple[str, str, str, str], str] = {
    (SCALR, "Finetuning", "Finally, we also provide the WaffleIron WI-48-768 trained on nuscenes without pretraining "
     "here. It reaches a mIoU of 78.7%.", "mIoU"): "scratch-wi48x768-nuscenes-train",
}
for _ds, _name in (("nuScenes", "nuscenes"), ("SemanticKITTI", "semantickitti"), ("Pandar 64", "pandar64"),
                   ("Pandar GT", "pandargt")):
    CLAIMS[(SCALR, "Linear probing", f"WI-48-768 / DINOv2 ViT-L/14 / {_ds}", "mIoU")] = f"scalr-wi48x768-{_name}-probe"
    CLAIMS[(SCALR, "Finetuning", f"WI-48-768 / DINOv2 ViT-L/14 / {_ds}", "mIoU")] = f"scalr-wi48x768-{_name}-finetune"
_FEW = {"nuScenes lin. probing": "nuscenes-probe", "nuScenes Finetuning with 1% data": "nuscenes-finetune-1p",
        "KITTI Finetuning with 1% data": "semantickitti-finetune-1p"}
for _row, _method in (("PPKT", "ppkt"), ("SLidR", "slidr"), ("PointContrast", "pointcontrast"),
                      ("DepthContrast", "depthcontrast")):
    for _col, _cell in _FEW.items():
        CLAIMS[(SLIDR, SLIDR_FEW, _row, _col)] = f"{_method}-res16unet34c-{_cell}"
CLAIMS[(SLIDR, SLIDR_FEW, "Random init.", "nuScenes lin. probing")] = "scratch-res16unet34c-nuscenes-probe"
CLAIMS[(SLIDR, SLIDR_FEW, "Random init.", "nuScenes Finetuning with 1% data")] = \
    "scratch-res16unet34c-nuscenes-train-1p"  # the fractions table's 1 % cell: one experiment printed twice
CLAIMS[(SLIDR, SLIDR_FEW, "Random init.", "KITTI Finetuning with 1% data")] = \
    "scratch-res16unet34c-semantickitti-train-1p"
for _p in (1, 5, 10, 25, 100):
    CLAIMS[(SLIDR, SLIDR_FRACTIONS, "Random init.", f"{_p}%")] = f"scratch-res16unet34c-nuscenes-train-{_p}p"
    CLAIMS[(SLIDR, SLIDR_FRACTIONS, "SLidR", f"{_p}%")] = f"slidr-res16unet34c-nuscenes-finetune-{_p}p-fractions"
for _p, _tag in (("0.1%", "01p"), ("1%", "1p"), ("10%", "10p"), ("50%", "50p"), ("100%", "100p")):
    CLAIMS[(NCLR, NCLR_NUS, "Random init.", _p)] = f"scratch-minkunet34-nuscenes-train-{_tag}"
    CLAIMS[(NCLR, NCLR_NUS, "ALSO", _p)] = f"also-minkunet34-nuscenes-finetune-{_tag}"
    CLAIMS[(NCLR, NCLR_NUS, "NCLR", _p)] = f"nclr-minkunet34-nuscenes-finetune-{_tag}"
    CLAIMS[(NCLR, NCLR_NUS, "PointContrast", _p)] = f"pointcontrast-minkunet34-nuscenes-finetune-{_tag}"
    CLAIMS[(NCLR, NCLR_NUS, "DepthContrast", _p)] = f"depthcontrast-minkunet34-nuscenes-finetune-{_tag}"
for _enc, _teacher in (("MoCoV2", "moco"), ("SwAV", "swav"), ("DINO", "dino"), ("oBoW", "obow")):
    for _row, _method in (("SLidR", "slidr"), ("ST-SLidR", "stslidr")):
        CLAIMS[(STSLIDR, "Results", f"{_row} / {_enc}", "Linear Probing (100%)")] = \
            f"stslidr-{_method}-{_teacher}-res16unet34c-nuscenes-probe"
        CLAIMS[(STSLIDR, "Results", f"{_row} / {_enc}", "Finetuning (1%)")] = \
            f"stslidr-{_method}-{_teacher}-res16unet34c-nuscenes-finetune-1p"

# Published numbers no recipe claims: (title, heading prefix, row or None for every row) -> reason
OUT_OF_SCOPE: dict[tuple[str, str, str | None], str] = {
    (SLIDR, "Results on the validation set using Minkowski SR-Unet with a fraction of the training labels (we "
     "modify the PointRCNN", None): "KITTI object detection (PointRCNN mAP), not segmentation: lidarssl exports "
                                     "backbones for detection (`lidarssl export`) but trains no detector",
    (SLIDR, "Results on the validation set using [PV-RCNN]", None): "KITTI object detection (PV-RCNN AP) in "
                                                                   "OpenPCDet, not segmentation",
    (SLIDR, "Results on the validation set using [SECOND]", None): "KITTI object detection (SECOND AP) in OpenPCDet, "
                                                                  "not segmentation",
}


def _clean(cell: str) -> str:
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return re.sub(r"<br\s*/?>", " ", cell).replace("*", "").strip()


def published(path: Path) -> list[tuple[tuple[str, str, str, str], float]]:
    """Every number of the README's result tables and every 'mIoU of X%' sentence, keyed by (title, heading, row,
    column); HTML comments (unpublished tables) are left out. A row is named by its text cells but the Link
    column."""
    lines = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S).splitlines()
    title = next(line[2:].strip() for line in lines if line.startswith("# "))
    heading, out = "", []
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        for match in re.finditer(r"mIoU of (\d+\.\d+)%", line):
            out.append(((title, heading, _clean(line), "mIoU"), float(match[1])))
        if "|" not in line or i + 1 == len(lines) or not re.fullmatch(r"[\s|:]*-[\s|:\-]*", lines[i + 1]):
            continue
        header = [_clean(c) for c in line.strip().strip("|").split("|")]
        for row in lines[i + 2:]:
            if "|" not in row:
                break
            cells = [_clean(c) for c in row.strip().strip("|").split("|")]
            numbers = [re.fullmatch(r"(\d+\.\d+)%?", c) for c in cells]
            name = " / ".join(c for c, n, h in zip(cells, numbers, header) if c and not n and h != "Link")
            for column, number in zip(header[1:], numbers[1:]):
                if number:
                    out.append(((title, heading, name, column), float(number[1])))
    return out


def _out_of_scope(key: tuple[str, str, str, str]) -> str | None:
    title, heading, row, _ = key
    for (t, h, r), reason in OUT_OF_SCOPE.items():
        if t == title and heading.startswith(h) and r in (None, row):
            return reason
    return None


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"the seed READMEs are not at {SEEDS}")
def test_every_published_miou_is_claimed_by_one_recipe_or_out_of_scope():
    cells = [cell for path in sorted(SEEDS.iterdir()) for cell in published(path)]
    assert len(cells) > 100  # the parser found the tables
    expected = {e.name: e.info.expected_miou for e in catalogue()}
    problems = []
    for key, value in cells:
        recipe, reason = CLAIMS.get(key), _out_of_scope(key)
        if recipe is None and reason is None:
            problems.append(f"{key} = {value}: no recipe claims it and it is not listed as out of scope")
        elif recipe is not None and reason is not None:
            problems.append(f"{key}: claimed by {recipe} and listed as out of scope ({reason})")
        elif recipe is not None and expected.get(recipe) != value:
            problems.append(f"{key} = {value}: claimed by {recipe}, whose expected_miou is {expected.get(recipe)}")
    stale = set(CLAIMS) - {key for key, _ in cells}
    problems += [f"{key}: claimed by {CLAIMS[key]}, but no README publishes it" for key in sorted(stale)]
    assert not problems, "\n".join(problems)
    # one number per recipe: a recipe claims several cells only when they are one experiment printed twice
    by_recipe: dict[str, set[float]] = {}
    for key, value in cells:
        if key in CLAIMS:
            by_recipe.setdefault(CLAIMS[key], set()).add(value)
    assert all(len(values) == 1 for values in by_recipe.values()), by_recipe


def test_the_parser_reads_rows_columns_and_prose(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# Method\n## Results\nMethod | Encoder | 1% | Link\n---|:-:|:-:|---\n"
                      "[A](http://a) | B | **12.5** | [x](http://x)\n\nIt reaches a mIoU of 70.1%.\n"
                      "<!--\nA | 1.0\n---|---\nB | 2.0\n-->\n")
    assert published(readme) == [(("Method", "Results", "A / B", "1%"), 12.5),
                                 (("Method", "Results", "It reaches a mIoU of 70.1%.", "mIoU"), 70.1)]
