"""Registries: the one list of the names of each kind of extension (methods, backbones, teachers, readers).

A registry knows its names before it imports their code, so ``lidarssl --help`` and config validation list and
check them without loading torch:

* the package declares each built-in name with the module that registers it, one line each:
  ``METHODS.declare("lidarssl.methods.ppkt", "ppkt")``;
* an installed package adds its own as entry points (groups ``lidarssl.methods``, ``lidarssl.backbones``,
  ``lidarssl.teachers``, ``lidarssl.readers``), one line each in its
  ``pyproject.toml``: ``[project.entry-points."lidarssl.methods"] toy = "mypkg.toy"``;
* the module itself registers the object with the registry's decorator (``@register_method``), the only
  thing a script or notebook needs for names it uses from Python.

:meth:`Registry.get` imports the declaring module on first use and checks that it registered the name.
This module imports nothing heavier than the standard library.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from importlib import import_module, metadata
from typing import Generic, TypeVar, overload

from lidarssl.errors import ConfigError, DataError, LidarSSLError

__all__ = ["Registry", "METHODS", "BACKBONES", "TEACHERS", "READERS"]

T = TypeVar("T")


@functools.cache
def _entry_points() -> metadata.EntryPoints:
    return metadata.entry_points()  # read once: it scans every installed distribution


class Registry(Generic[T]):
    """Names of one kind of extension, the modules that define them, and (once imported) the objects.

    Args:
        kind: what a name is called in messages (``"method"``).
        group: the entry-point group of plugins (``lidarssl.methods``).
        key: the name of an object registered without one (``cls.name``, ``fn.__name__``).
        error: the error raised for an unknown name.
    """

    def __init__(self, kind: str, group: str, key: Callable[[T], str] = lambda obj: obj.__name__,
                 error: type[LidarSSLError] = ConfigError) -> None:
        self.kind = kind
        self.group = group
        self._key = key
        self._error = error
        self._modules: dict[str, str] = {}  # declared name -> module registering it
        self._objects: dict[str, T] = {}

    # -- declaring and registering --------------------------------------------------------------------------

    def declare(self, module: str, *names: str) -> None:
        """Names that ``module`` registers when imported (built-ins; plugins use entry points)."""
        for name in names:
            if name in self._modules and self._modules[name] != module:
                raise ValueError(f"{self.kind} '{name}' is declared by {self._modules[name]} and {module}")
            self._modules[name] = module

    @overload
    def register(self, obj: T) -> T: ...

    @overload
    def register(self, obj: str) -> Callable[[T], T]: ...

    def register(self, obj):
        """Decorator: register ``obj`` under its own name (``key``), or ``@register("name")`` under that one."""
        if isinstance(obj, str):
            return lambda target: self._add(obj, target)
        return self._add(self._key(obj), obj)

    def _add(self, name: str, obj: T) -> T:
        if name in self._objects and self._objects[name] is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._objects[name] = obj
        return obj

    # -- reading ----------------------------------------------------------------------------------------------

    def _plugins(self) -> dict[str, str]:
        """Entry points of installed packages in this registry's group: name -> module."""
        return {ep.name: ep.module for ep in _entry_points().select(group=self.group) if ep.name not in self._modules}

    def names(self) -> list[str]:
        """Every name, without importing any of them: built-ins in declaration order, then plugins, then names
        registered at run time only."""
        listed = [*self._modules, *self._plugins()]
        return listed + [n for n in self._objects if n not in listed]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._modules or name in self._objects or name in self._plugins())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown(self, name: str) -> LidarSSLError:
        """The error for a name that is not registered, listing the known ones."""
        return self._error(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(sorted(self.names()))}")

    def check(self, name: str) -> str:
        """``name`` if it is registered, without importing it (a schema validator: raises ValueError)."""
        if name not in self:
            raise ValueError(str(self.unknown(name)))
        return name

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing the module that defines it on first use.

        Raises:
            the registry's error: ``name`` is unknown, or its module does not register it.
        """
        if name not in self._objects:
            module = self._modules.get(name)
            if module is not None:
                import_module(module)
            elif (module := self._plugins().get(name)) is not None:
                try:
                    import_module(module)
                except ImportError as e:  # an installed package's entry point: name it, not a traceback
                    raise self._error(f"{self.kind} '{name}' of the entry points {self.group}: cannot import "
                                      f"{module} ({e})") from e
            else:
                raise self.unknown(name)
            if name not in self._objects:
                raise self._error(f"{self.kind} '{name}': module {module} is declared to register it but does not "
                                  "(decorate it with its register_* decorator)")
        return self._objects[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        """Every (name, object), importing them all (tests, listings that need the objects)."""
        return [(name, self.get(name)) for name in self.names()]


# -- the built-in extensions: the one list of their names (a new one is one line here) ------------------------

#: Pretext methods (``PretrainMethod`` subclasses, ``@register_method``), by ``cls.name``.
METHODS: Registry = Registry("method", "lidarssl.methods", key=lambda cls: cls.name)
METHODS.declare("lidarssl.methods.also", "also")
METHODS.declare("lidarssl.methods.depthcontrast", "depthcontrast")
METHODS.declare("lidarssl.methods.nclr", "nclr")
METHODS.declare("lidarssl.methods.pointcontrast", "pointcontrast")
METHODS.declare("lidarssl.methods.ppkt", "ppkt")
METHODS.declare("lidarssl.methods.scalr", "scalr")
METHODS.declare("lidarssl.methods.slidr", "slidr", "stslidr")

#: Backbone presets (functions returning a ``BackboneSpec``, ``@register_backbone``), by function name.
BACKBONES: Registry = Registry("backbone", "lidarssl.backbones")
BACKBONES.declare("lidarssl.models.backbones.minkunet", "minkunet18", "minkunet18_sc", "minkunet34", "minkunet34_half",
                  "minkunet_tiny", "res16unet34c")
BACKBONES.declare("lidarssl.models.backbones.spvcnn", "spvcnn", "spvcnn_half", "spvcnn_tiny")
BACKBONES.declare("lidarssl.models.backbones.voxelnet", "voxelnet", "voxelnet_kitti", "voxelnet_tiny")
BACKBONES.declare("lidarssl.models.backbones.waffleiron", "waffleiron", "waffleiron_12_64", "waffleiron_48_256",
                  "waffleiron_48_384", "waffleiron_48_768", "waffleiron_4_32")

#: Frozen image teachers (functions returning a ``Teacher``, ``@register_teacher``), by function name.
TEACHERS: Registry = Registry("teacher", "lidarssl.teachers")
TEACHERS.declare("lidarssl.models.teachers.oracle", "oracle")
TEACHERS.declare("lidarssl.models.teachers.resnet", "resnet50", "resnet50_dilated")
TEACHERS.declare("lidarssl.models.teachers.semantic", "resnet18_semantic")
TEACHERS.declare("lidarssl.models.teachers.vit", "dino_vitb16", "dino_vitb8", "dino_vits16", "dino_vits8",
                 "dinov2_vitb14", "dinov2_vitg14", "dinov2_vitl14", "dinov2_vits14")

#: Dataset readers (``@register_reader``), by ``cls.reader_name`` (the format name), in the order layouts are
#: recognised.
READERS: Registry = Registry("dataset format", "lidarssl.readers", key=lambda cls: cls.reader_name, error=DataError)
READERS.declare("lidarssl.data.formats.synthetic", "synthetic")
READERS.declare("lidarssl.data.formats.nuscenes", "nuscenes")
READERS.declare("lidarssl.data.formats.semanticposs", "semanticposs")  # before its parent: POSS is a KITTI layout
READERS.declare("lidarssl.data.formats.semantickitti", "semantickitti")
READERS.declare("lidarssl.data.formats.kitti", "kitti")
READERS.declare("lidarssl.data.formats.pandaset", "pandaset")
READERS.declare("lidarssl.data.formats.kitti360", "kitti360")
READERS.declare("lidarssl.data.formats.once", "once")
