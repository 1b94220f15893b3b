"""The ``lidarssl`` command line.

Every command takes an optional YAML recipe and ``key=value`` overrides checked against the command's
schema (``lidarssl generate frames=20 seed=3``). Errors of lidarssl print as one line naming the file or
key at fault; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import lidarssl
from lidarssl.errors import ConfigError, DataError, LidarSSLError
from lidarssl.registry import BACKBONES, METHODS, READERS, TEACHERS, Registry
from lidarssl.zoo.formats import COMMANDS as ZOO_COMMANDS  # their help texts; the zoo's code loads on use

if TYPE_CHECKING:
    from lidarssl.data.prepare import PrepareJob

__all__ = ["main"]

# The names of methods, backbones, teachers and dataset formats come from lidarssl.registry, which knows them
# without importing their code: `lidarssl --help` loads neither torch nor Lightning.


def _names(registry: Registry) -> str:
    return ", ".join(sorted(registry.names()))


def _recipes(prefixes: tuple[str, ...] = ()) -> list[str]:
    """Shipped recipe names (the YAML files of lidarssl/configs), read without importing the config code."""
    from importlib import resources

    names = sorted(p.name.removesuffix(".yaml") for p in resources.files("lidarssl.configs").iterdir()
                   if p.name.endswith(".yaml"))
    return [n for n in names if not prefixes or n.startswith(prefixes)]


def _keys(schema: str) -> str:
    from lidarssl import config

    if schema == "pretrain":
        from lidarssl.methods.config import PretrainConfig

        return ", ".join(PretrainConfig.model_fields)
    return ", ".join(getattr(config, schema).model_fields)


def cmd_generate(args: argparse.Namespace) -> None:
    from lidarssl.config import GenerateConfig, load_config, to_yaml

    config = load_config(GenerateConfig, args.recipe, args.overrides)
    if args.print_config:
        print(to_yaml(config), end="")
        return
    from lidarssl.synthetic.generate import generate

    out = generate(config)
    print(f"wrote {config.frames} frames to {out}; inspect them with: lidarssl info {out}")


def _segmentation(mode: str):
    def run(args: argparse.Namespace) -> None:
        from lidarssl.config import SegmentationConfig, load_config, to_yaml
        from lidarssl.downstream.train import run_segmentation
        from lidarssl.runs import is_global_zero

        config = load_config(SegmentationConfig, args.recipe, args.overrides)
        if args.print_config:
            print(to_yaml(config), end="")
            return
        result = run_segmentation(config, mode=mode, resume=args.resume, allow_config_change=args.allow_config_change)
        if not is_global_zero():  # one table per job, not one per DDP process
            return
        print(result.table)
        print(f"run directory: {result.out}")

    return run


def cmd_pretrain(args: argparse.Namespace) -> None:
    from lidarssl.config import load_config, to_yaml
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import run_pretraining
    from lidarssl.runs import is_global_zero

    config = load_config(PretrainConfig, args.recipe, args.overrides)
    if args.print_config:
        print(to_yaml(config), end="")
        return
    result = run_pretraining(config, resume=args.resume, allow_config_change=args.allow_config_change)
    if not is_global_zero():
        return
    print(f"pretrained {config.backbone.name} with {config.method.name}: last epoch loss {result.loss:.4f}")
    print(f"backbone weights: {result.backbone}  (lidarssl probe RECIPE pretrained={result.backbone})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lidarssl.config import SegmentationConfig
    from lidarssl.downstream.train import evaluate_run
    from lidarssl.runs import load_run_config

    if (args.run / "import.json").is_file():  # a release folder written by `lidarssl import`
        from lidarssl.zoo.cli import evaluate_release_command

        evaluate_release_command(args.run, args.overrides)
        return
    # the folder given is the run, wherever it was moved since; its data.root is stored as an absolute path
    config = load_run_config(args.run, SegmentationConfig, "segmentation run", "lidarssl train, probe or finetune",
                             [f"out={args.run}", *args.overrides],
                             instead=f"it has no segmentation head to evaluate; probe its backbone instead: lidarssl "
                                     f"probe probe-wi-synthetic pretrained={args.run / 'backbone.safetensors'}")
    result = evaluate_run(config, args.checkpoint)
    print(result.table)


def cmd_recipes(args: argparse.Namespace) -> None:
    from lidarssl.recipes import catalogue, catalogue_json, format_catalogue

    wanted = {k: getattr(args, k) for k in ("method", "backbone", "dataset") if getattr(args, k) is not None}
    entries = [e for e in catalogue(args.kind) if all(getattr(e.info, k) == v for k, v in wanted.items())]
    print(catalogue_json(entries) if args.json else format_catalogue(entries))


def _recipes_of(kind: str) -> str:
    """The epilog of ``lidarssl <kind> --help``: that kind's shipped recipes and their published numbers."""
    from lidarssl.recipes import catalogue

    lines = [f"{kind} recipes (lidarssl recipes --kind {kind} for the whole table):"]
    for e in catalogue(kind):
        miou = f"{e.info.expected_miou:g} mIoU" if e.info.expected_miou is not None else ""
        lines.append(f"  {e.name}  {e.info.dataset} {e.info.labels or ''} {miou}".rstrip())
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> None:
    from lidarssl.data.datasets import dataset_summary, open_dataset, split_summary
    from lidarssl.viz.overlay import save_overlay

    dataset = open_dataset(args.dataset, split=args.split, format=args.format)
    print(dataset_summary(dataset, max_frames=args.max_frames))
    print(split_summary(args.dataset, format=args.format))
    if args.overlay is not None:
        if not -len(dataset) <= args.frame < len(dataset):
            raise DataError(f"--frame {args.frame}: {args.dataset} has {len(dataset)} frames in this split "
                            f"(indexes 0 to {len(dataset) - 1})")
        scan = dataset[args.frame]
        path = save_overlay(scan, args.overlay, camera=args.camera, class_names=dataset.class_map.classes)
        print(f"overlay of frame {scan.frame_id} saved to {path}")


def _progress(log: Callable[[str], None], what: str) -> Callable[[int, int], None]:
    """A progress callback logging about every tenth of the frames."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log(f"{what}: frame {done}/{total}")

    return report


def _prepare_dataset(job: PrepareJob) -> int:
    """Index every split of a dataset and check the files it refers to."""
    from lidarssl.data.prepare import prepare_dataset

    if not job.root.is_dir():
        raise DataError(f"{job.root}: no such dataset folder")
    return prepare_dataset(job)


def _prepare_superpixels(job: PrepareJob) -> int:
    """SLIC superpixels of every camera image (options: preset=slic150_fast, cache=cache/superpixels)."""
    from lidarssl.data.superpixels import prepare_superpixels, superpixel_preset

    options = dict(job.options)
    params = superpixel_preset(str(options.pop("preset", "slic150_fast")))
    cache = Path(options.pop("cache", "cache/superpixels"))
    if options:
        raise DataError(f"prepare superpixels: unknown option(s) {sorted(options)}; options: preset, cache")
    counts = prepare_superpixels(job.root, job.split, cache, params, job.workers, _progress(job.log, "superpixels"))
    job.log(f"superpixels {params.key()} in {cache}: {counts['computed']} computed, {counts['skipped']} already cached")
    return 0


def _prepare_teacher_features(job: PrepareJob) -> int:
    """Frozen-teacher features of every camera image, for the pretraining recipe given as recipe=PATH (the
    recipe's data.teacher_cache, teacher and pairing.resize); further key=value options override the recipe."""
    from lidarssl.config import load_config
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import prepare_teacher_features

    options = dict(job.options)
    recipe = options.pop("recipe", None)
    if recipe is None:
        raise DataError("prepare teacher-features needs the pretraining recipe: recipe=PATH (e.g. recipe=scalr-wi-synthetic)")
    data = {"root": str(job.root), **({"split": job.split} if job.split else {})}
    config = load_config(PretrainConfig, recipe, {**options, "data": {**options.get("data", {}), **data}})
    counts = prepare_teacher_features(config, progress=_progress(job.log, "teacher features"))
    job.log(f"teacher features in {config.data.teacher_cache}: {counts['computed']} computed, "
            f"{counts['skipped']} already cached")
    return 0


def _prepare_teacher(job: PrepareJob) -> int:
    """Train the semantic image teacher resnet18_semantic on a synthetic world's train split (options: out=FILE,
    epochs=4, lr=0.002, batch_size=8, image_size=[112,224], seed=0)."""
    from lidarssl.methods.semantic_teacher import TeacherTraining, train_semantic_teacher

    options = dict(job.options)
    out = Path(options.pop("out", "cache/teacher/resnet18_semantic.safetensors"))
    known = TeacherTraining.__dataclass_fields__
    if set(options) - set(known):
        raise DataError(f"prepare teacher: unknown option(s) {sorted(set(options) - set(known))}; options: out, "
                        f"{', '.join(known)}")
    if "image_size" in options:
        options["image_size"] = tuple(options["image_size"])
    stats = train_semantic_teacher(job.root, out, TeacherTraining(**options), split=job.split or "train", log=job.log)
    job.log(f"teacher weights: {out} (pixel accuracy {stats['pixel_accuracy']:.3f} on the train split); use them "
            f"with teacher.name=resnet18_semantic teacher.weights={out}")
    return 0


#: ``lidarssl prepare <target>`` besides the dataset formats (and ``auto``): the caches; each returns the number
#: of problems found.
PREPARE_TARGETS: dict[str, Callable[[PrepareJob], int]] = {
    "superpixels": _prepare_superpixels,
    "teacher-features": _prepare_teacher_features,
    "teacher": _prepare_teacher,
}


def prepare_targets() -> list[str]:
    """Every ``prepare`` target: ``auto``, each dataset format of the reader registry, then the caches."""
    return ["auto", *READERS.names(), *PREPARE_TARGETS]


def run_prepare(job: PrepareJob) -> int:
    """Run ``job.target``; a DataError names the known targets when it is not one."""
    if job.target in PREPARE_TARGETS:
        return PREPARE_TARGETS[job.target](job)
    if job.target == "auto" or job.target in READERS:
        return _prepare_dataset(job)
    raise DataError(f"unknown prepare target '{job.target}'; choose one of {sorted(prepare_targets())}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from lidarssl.config import parse_overrides
    from lidarssl.data.prepare import PrepareJob

    job = PrepareJob(target=args.target, root=args.root, split=args.split, workers=args.workers,
                     refresh=args.refresh, options=parse_overrides(args.options))
    problems = run_prepare(job)
    if problems:
        rerun = " ".join(["lidarssl prepare", args.target, f"--root {args.root}"] +
                         ([f"--split {args.split}"] if args.split else []))
        raise DataError(f"{problems} problem files in {args.root} (listed above); restore them, then rerun `{rerun}`")


def cmd_demo(args: argparse.Namespace) -> None:
    from lidarssl.demo import run_demo

    table = run_demo(args.out, args.teacher, args.overrides)
    print(f"\n{table}\nrun folders: {args.out}")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``lidarssl`` parser; only ``command``'s description (schema keys, recipe names) is filled in, since
    listing schema keys imports the config code."""

    def detail(name: str, text: Callable[[], str]) -> str | None:
        return text() if name == command else None

    parser = argparse.ArgumentParser(
        prog="lidarssl",
        description="Self-supervised pretraining of 3D lidar backbones, with linear probing and finetuning. "
        f"{len(_recipes())} shipped recipes (`lidarssl recipes` lists them with the published number each reproduces). "
        f"Backbones: {_names(BACKBONES)}. Methods: {_names(METHODS)}. "
        f"Teachers: {_names(TEACHERS)}. Dataset formats: {', '.join(READERS.names())}. "
        "`lidarssl COMMAND --help` lists each command's keys.",
    )
    parser.add_argument("--version", action="version", version=f"lidarssl {lidarssl.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("recipe", nargs="?", type=Path, help="YAML recipe (optional; defaults otherwise)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe keys, e.g. frames=20")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    def resume_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--resume", action="store_true", help="continue the run in `out` from its last readable "
                       "checkpoint (same config required)")
        p.add_argument("--allow-config-change", action="store_true", help="with --resume: continue even though the "
                       "config differs from the run's config.yaml (the differing keys are listed)")

    gen = sub.add_parser("generate", help="write a synthetic driving world to disk", description=detail(
        "generate", lambda: "Write a synthetic driving world (lidar, cameras, labels) in the native layout. "
        f"Keys: {_keys('GenerateConfig')}. Recipes: {', '.join(_recipes(('world-',)))}."))
    recipe_args(gen)
    gen.set_defaults(func=cmd_generate)

    for name, mode, helptext, prefix in (
        ("train", "scratch", "train a segmentation backbone and head from scratch", "seg-"),
        ("probe", "probe", "linear probing: train a head on a frozen pretrained backbone", "probe-"),
        ("finetune", "finetune", "finetune a pretrained backbone with a new head", "finetune-"),
    ):
        p = sub.add_parser(name, help=helptext, epilog=detail(name, lambda k=name: _recipes_of(k)),
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=detail(name, lambda h=helptext: (
                               f"{h}. Keys: {_keys('SegmentationConfig')} (nested: data.*, backbone.*, optim.*, "
                               f"trainer.*; see --print-config). Backbones: {_names(BACKBONES)}.")))
        recipe_args(p)
        resume_args(p)
        p.set_defaults(func=_segmentation(mode))

    pre = sub.add_parser("pretrain", help=f"self-supervised pretraining of a backbone ({_names(METHODS)})",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=detail("pretrain", lambda: _recipes_of("pretrain")), description=detail("pretrain", lambda: (
                             "Pretrain a backbone without labels; writes backbone.safetensors for probe and finetune. "
                             f"Keys: {_keys('pretrain')} (see --print-config). Methods (method.name): "
                             f"{_names(METHODS)}. Teachers (teacher.name): {_names(TEACHERS)}. Backbones: "
                             f"{_names(BACKBONES)}.")))
    recipe_args(pre)
    resume_args(pre)
    pre.set_defaults(func=cmd_pretrain)

    rec = sub.add_parser("recipes", help="the shipped recipes: which published cell each reproduces",
                         description="Every shipped recipe with the paper, table and mIoU it reproduces. A downstream "
                         "recipe's header names its pretraining recipe: run `lidarssl pretrain PRETRAIN`, then "
                         "`lidarssl KIND NAME pretrained=RUN/backbone.safetensors`.")
    rec.add_argument("--json", action="store_true", help="a JSON list of objects with keys name, kind, method, "
                     "backbone, dataset, labels, paper, expected_miou")
    rec.add_argument("--kind", choices=["pretrain", "probe", "finetune", "train"], default=None,
                     help="only recipes of this kind")
    rec.add_argument("--method", choices=["scratch", *sorted(METHODS.names())], default=None,
                     help="only recipes of this pretraining method (scratch: training from scratch)")
    rec.add_argument("--backbone", choices=sorted(BACKBONES.names()), default=None,
                     help="only recipes of this backbone preset")
    rec.add_argument("--dataset", choices=[*READERS.names(), "mixture"], default=None,
                     help="only recipes of this dataset format")
    rec.set_defaults(func=cmd_recipes)

    ev = sub.add_parser("evaluate", help="score a run's checkpoint or an imported release on the val split, every "
                        "original point")
    ev.add_argument("run", type=Path, help="run directory (holds config.yaml and checkpoints/), or a release folder "
                    "written by `lidarssl import` (keys: data.root, data.val_split, origin, trainer.*, out)")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="override keys of the run's config")
    ev.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (default: the run's last.ckpt)")
    ev.set_defaults(func=cmd_evaluate)

    if command in ZOO_COMMANDS:
        from lidarssl.zoo.cli import add_zoo_commands

        add_zoo_commands(sub)
    else:
        for name, helptext in ZOO_COMMANDS.items():
            sub.add_parser(name, help=helptext)

    info = sub.add_parser("info", help="summarise a dataset: frames, points, classes, cameras")
    info.add_argument("dataset", type=Path, help=f"dataset root in a layout of {', '.join(READERS.names())} "
                      "(recognised by its files)")
    info.add_argument("--split", default=None, help="split name, e.g. train, val, train@1%%, train@10%%-scenes, "
                      "parametrizing (default: the reader's default split)")
    info.add_argument("--format", default=None, help="dataset format instead of recognising it by its layout "
                      f"({', '.join(READERS.names())})")
    info.add_argument("--max-frames", type=int, default=None, help="summarise at most this many frames")
    info.add_argument("--overlay", type=Path, default=None, metavar="PNG",
                      help="save a camera image with the lidar points projected onto it, coloured by class")
    info.add_argument("--frame", type=int, default=0, help="frame index for --overlay")
    info.add_argument("--camera", default=None, help="camera for --overlay (default: the first)")
    info.set_defaults(func=cmd_info)

    targets = ", ".join(prepare_targets())
    prep = sub.add_parser("prepare", help="index and check a dataset, or cache superpixels or teacher features",
                          description="Dataset targets build the frame index of every split and check that every "
                          "file it refers to exists with a plausible size and reads (points, images, label ids), listing problems by kind (exit code 2 when there are any). "
                          "`superpixels` caches SLIC maps of every camera image (preset=, cache=); `teacher-features` "
                          "caches a frozen teacher's features for a pretraining recipe (recipe=). All are resumable: "
                          f"rerun after an interruption. Targets: {targets}.")
    prep.add_argument("target", metavar="TARGET", help=f"one of: {targets} "
                      "(auto: recognise the dataset layout)")
    prep.add_argument("--root", type=Path, required=True, help="dataset folder")
    prep.add_argument("--split", default=None, help="one split (named splits included); default: all of them")
    prep.add_argument("--workers", type=int, default=4, help="threads checking files (default 4)")
    prep.add_argument("--refresh", action="store_true", help="rebuild the indexes and check every file again")
    prep.add_argument("options", nargs="*", metavar="key=value",
                      help="target options, e.g. reader options (sensor=pandargt), superpixels (preset=slic150, "
                      "cache=PATH), teacher-features (recipe=NAME and recipe overrides)")
    prep.set_defaults(func=cmd_prepare)

    demo = sub.add_parser("demo", help="the main job: pretrain on the synthetic world, then probe it against a "
                          "random backbone", description="Generate a synthetic world, train a small semantic image "
                          "teacher on its train split (--teacher random: a random DINOv2 instead), pretrain a small "
                          "WaffleIron by ScaLR-style distillation of it (recipe scalr-wi-synthetic), then linear-probe "
                          "it and a randomly initialised one (recipe probe-wi-synthetic) and print both IoU tables.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the demo writes")
    demo.add_argument("--teacher", choices=("trained", "random"), default="trained",
                      help="trained: train the small semantic 2D teacher resnet18_semantic on the world first "
                      "(default); random: a randomly initialised DINOv2 ViT-S/14, as before")
    demo.add_argument("overrides", nargs="*", metavar="stage.key=value",
                      help="override a stage's recipe: world.frames=24, pretrain.optim.epochs=4, probe.optim.lr=0.02")
    demo.set_defaults(func=cmd_demo)

    from lidarssl.viz.cli import add_commands

    add_commands(sub)  # features, viz, view
    return parser


def command_names(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and subcommand of ``lidarssl`` (``["viz", "similarity"]`` included)."""
    found = []
    for action in (parser or _parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [[*prefix, name], *command_names(sub, (*prefix, name))]
    return found


def _split_recipe(args: argparse.Namespace) -> None:
    # argparse cannot tell an optional recipe path from the first key=value: move it over.
    recipe = getattr(args, "recipe", None)
    if recipe is not None and "=" in str(recipe):
        args.overrides = [str(recipe), *args.overrides]
        args.recipe = None


def one_line(exc: BaseException) -> str:
    """The message of a lidarssl error on one line. torch re-raises an error of a DataLoader worker with a
    message of "Caught X in DataLoader worker process N." plus the worker's traceback: show the worker's own
    message first, then where it came from."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        where = text.splitlines()[0].removeprefix("Caught ").rstrip(".")
        last = text.rstrip().splitlines()[-1]
        own = last.split(": ", 1)[1] if ": " in last else last
        return f"{own} ({where.split(' in ', 1)[-1]})"
    return " ".join(text.split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lidarssl``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(next((a for a in argv if not a.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    # key=value items after an option (`prepare x --root R a=b`): argparse stops collecting positionals at the
    # first option, so gather the rest here
    listed = "overrides" if hasattr(args, "overrides") else "options" if hasattr(args, "options") else None
    if extra and (listed is None or any("=" not in x or x.startswith("-") for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, listed, [*getattr(args, listed), *extra])
    _split_recipe(args)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except LidarSSLError as exc:
        if args.debug:
            raise
        print(f"lidarssl {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = {"train": "rerun with --resume to continue from the last finished epoch",
                "probe": "rerun with --resume to continue from the last finished epoch",
                "finetune": "rerun with --resume to continue from the last finished epoch",
                "pretrain": "rerun with --resume to continue from the last finished epoch",
                "prepare": "rerun the same command to continue where it stopped",
                "generate": "rerun the same command to continue where it stopped"}.get(args.command, "")
        print(f"lidarssl {args.command}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and cut short: not an error
        sys.stderr.close()
    except OSError as exc:  # a full disk, a read-only or missing folder: what and where, not a traceback
        if args.debug or exc.strerror is None:
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        hint = {errno.ENOSPC: "; free disk space, then rerun", errno.EDQUOT: "; free disk space, then rerun",
                errno.EROFS: "; choose a writable folder", errno.EACCES: "; choose a writable folder",
                errno.EPERM: "; choose a writable folder", errno.ENOTDIR: "; choose a writable folder",
                errno.EEXIST: "; a file stands where a folder is needed: choose another path"}
        print(f"lidarssl {args.command}: error: {where}{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
              f"{hint.get(exc.errno, '')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
