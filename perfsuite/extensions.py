"""Adapters from other packages: your adapter in the grid, beside the built-in ones.

A package contributes adapters through the entry-point group ``perfsuite.adapters`` (found in every process:
``perfsuite cells``, the pytest plugin, a re-measurement); code that is not packaged is named with
``--adapters MODULE:OBJECT`` (pytest: ``--perfsuite-adapters``). Either way the object is an
:class:`AdapterPlugin` or a list of them:

- ``attach`` (the reference implementation): ``attach(model, rank, generator, init, **options)`` changes a
  :class:`perfsuite.models.model.GPT2` in place, exactly as the built-in adapters of :mod:`perfsuite.models.adapters` do;
- ``peft_config`` (the hf implementation): ``peft_config(rank, d, seed)`` returns the peft config that
  ``peft.get_peft_model`` applies to transformers' GPT-2 (``d``: the model width).

A contributed adapter joins every latency grid of its implementation(s) (profiles smoke and paper for ``attach``,
hf-smoke and hf-paper for ``peft_config``), so its cells are listed, measured, drawn beside LoRA, kept in
baselines and history like a built-in one. ``PERFSUITE_DISABLE_ADAPTER_ENTRY_POINTS=1`` ignores the entry points
(as ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does pytest's): the built-in grid whatever is installed, as perfsuite's own
tests need. No torch here: the module holding the plugin is imported to read its
names, so keep its own top-level imports light (import torch inside ``attach``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from perfsuite.errors import PerfsuiteError

ENTRY_POINT_GROUP = "perfsuite.adapters"
DISABLE_ENV = "PERFSUITE_DISABLE_ADAPTER_ENTRY_POINTS"  # set (non-empty, not "0"): installed adapters stay out
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")  # a cell id part: no brackets, spaces or underscores


class ExtensionError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class AdapterPlugin:
    """One contributed adapter: its name in cell ids, what it is, and how each implementation attaches it."""

    name: str
    doc: str
    attach: Callable[..., None] | None = None  # ref: (model, rank, generator, init, **options) -> None, in place
    peft_config: Callable[[int, int, int], Any] | None = None  # hf: (rank, d, seed) -> a peft config
    trains_block_layernorms: bool = False  # fine-tunes ln_1 and ln_2 of adapted blocks (its |Θ| counts them)

    def implements(self, impl: str) -> bool:
        return (self.attach if impl == "ref" else self.peft_config) is not None


_contributed: dict[str, tuple[AdapterPlugin, str]] = {}  # name -> (plugin, where it came from)
_entry_points_read = False


def contributed() -> list[AdapterPlugin]:
    """Every contributed adapter: the installed packages' (entry points, read once), then ``--adapters``'."""
    _read_entry_points()
    return [plugin for plugin, _ in _contributed.values()]


def contributed_names(impl: str, reserved: Iterable[str] = ()) -> tuple[str, ...]:
    """The names of the contributed adapters that ``impl`` ("ref" or "hf") can attach, in registration order;
    one that takes a ``reserved`` name (the grid's built-in adapters) is refused."""
    reserved = set(reserved)
    names = tuple(p.name for p in contributed() if p.implements(impl))
    for name in names:
        if name in reserved:
            raise ExtensionError(f"adapter {name!r} from {_contributed[name][1]}: a built-in adapter has that name")
    return names


def get_plugin(name: str) -> AdapterPlugin | None:
    _read_entry_points()
    found = _contributed.get(name)
    return found[0] if found else None


def add_adapters(specs: str | None) -> list[AdapterPlugin]:
    """Register the adapters of ``MODULE:OBJECT[,MODULE:OBJECT...]`` (the ``--adapters`` option); the current
    folder is importable, as for ``python -m``. Naming the same object again is a no-op."""
    added = []
    for spec in filter(None, (s.strip() for s in (specs or "").split(","))):
        added += [register(p, spec) for p in plugins_of(load_object(spec), spec)]
    return added


def load_object(spec: str) -> object:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ExtensionError(f"adapters {spec!r}: expected MODULE:OBJECT, e.g. my_adapters:FUSED_LORA")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as e:
        raise ExtensionError(f"adapters {spec!r}: cannot import {module_name}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExtensionError(f"adapters {spec!r}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    return obj


def plugins_of(obj: object, source: str) -> list[AdapterPlugin]:
    """``obj`` as a list of plugins: one AdapterPlugin, or a list or tuple of them."""
    plugins = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    bad = [p for p in plugins if not isinstance(p, AdapterPlugin)]
    if bad or not plugins:
        raise ExtensionError(f"adapters {source!r}: expected an AdapterPlugin or a list of them, "
                             f"got {type(bad[0] if bad else obj).__name__}")
    return plugins


def register(plugin: AdapterPlugin, source: str) -> AdapterPlugin:
    """Add one plugin; a name that is not a cell-id part or is taken is refused (one that a built-in adapter has,
    when the grid reads the names: :func:`contributed_names`)."""
    if not _NAME.fullmatch(plugin.name):
        raise ExtensionError(f"adapter {plugin.name!r} from {source}: a name is lower-case letters, digits and '-'")
    if plugin.attach is None and plugin.peft_config is None:
        raise ExtensionError(f"adapter {plugin.name!r} from {source}: give attach (ref), peft_config (hf) or both")
    known = _contributed.get(plugin.name)
    if known is not None and known[0] is not plugin:
        raise ExtensionError(f"adapter {plugin.name!r} from {source}: {known[1]} registered that name already")
    _contributed[plugin.name] = (plugin, source)
    return plugin


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _read_entry_points() -> None:
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
        return
    for ep in _entry_points():
        source = f"entry point {ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as e:  # a broken package must say which one, not break the grid with a traceback
            raise ExtensionError(f"{source} ({ENTRY_POINT_GROUP}): cannot load it: {e}") from None
        for plugin in plugins_of(obj, source):
            register(plugin, source)
