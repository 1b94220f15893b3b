"""Write the synthetic world a ``GenerateConfig`` describes, in its layout, with progress on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lidarssl.errors import ConfigError

if TYPE_CHECKING:
    from lidarssl.config import GenerateConfig


def generate(config: GenerateConfig, quiet: bool = False) -> Path:
    from lidarssl.synthetic import write_dataset

    tty = sys.stdout.isatty()

    def progress(done: int, total: int) -> None:
        if quiet:
            return
        if tty:
            print(f"\rwriting frame {done}/{total}", end="" if done < total else "\n", flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"writing frame {done}/{total}", flush=True)

    # the sensors of each real layout (its writer refuses others); lidar= and cameras= still override them
    lidar, cameras = {"semantickitti": ("kitti", "kitti"), "pandaset": ("pandar64", "nuscenes"),
                      "kitti360": ("kitti", "kitti360"), "once": ("once", "once")}.get(config.layout, (None, None))
    given = config.model_fields_set
    world = {"seed": config.seed, "lidar": config.lidar if "lidar" in given or lidar is None else lidar,
             "cameras": config.cameras if "cameras" in given or cameras is None else cameras,
             "image_size": config.image_size}
    shared = {"frames_per_sequence": config.frames_per_sequence, "val_fraction": config.val_fraction,
              "progress": progress}
    if config.layout == "native":
        write_dataset(world, config.out, config.frames, overwrite=config.overwrite, **shared)
    else:
        from lidarssl.synthetic import writers

        if config.overwrite:
            raise ConfigError(f"overwrite=true works for layout=native only; remove {config.out} to write the "
                              f"{config.layout} layout again")
        getattr(writers, f"write_{config.layout}")(world, config.out, config.frames, **shared)
    return config.out
