"""One registry per kind of component, in the spirit of timm's ``register_model``.

Every swappable part of hyperkd is a *kind* (sensor, teacher, student, aligner, masker,
loss, task, dataset). Each kind has exactly one :class:`Registry`; components enter it
with a decorator and are built from it by name::

    from hyperkd.core.registry import register, create

    @register("masker", "checkerboard")
    def checkerboard_masker(ratio: float = 0.5) -> Masker:
        \"\"\"Masks every other patch.\"\"\"
        ...

    masker = create("masker", "checkerboard", ratio=0.5)

A registered object is either a class or a factory function; :func:`create` calls it
with the keyword arguments given. Each entry remembers which plugin provided it, so
``hyperkd plugins list`` and error messages can say where a name comes from.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hyperkd.core.errors import DuplicateComponentError, UnknownComponentError

KINDS: tuple[str, ...] = (
    "sensor",
    "teacher",
    "student",
    "aligner",
    "masker",
    "loss",
    "task",
    "dataset",
)
"""The kinds of component hyperkd knows. Each has one registry."""

T = TypeVar("T")

_current_provider: contextvars.ContextVar[str] = contextvars.ContextVar(
    "hyperkd_provider", default="user"
)


@contextlib.contextmanager
def provider(name: str) -> Iterator[None]:
    """Attribute every registration made inside the block to plugin ``name``."""
    token = _current_provider.set(name)
    try:
        yield
    finally:
        _current_provider.reset(token)


def current_provider() -> str:
    """The plugin name registrations are attributed to right now."""
    return _current_provider.get()


@functools.lru_cache(maxsize=1)
def _plugin_modules() -> tuple[tuple[str, str], ...]:
    """(module, plugin name) of every entry point in the ``hyperkd`` group."""
    import importlib.metadata as md

    return tuple((ep.value.split(":")[0], ep.name) for ep in md.entry_points(group="hyperkd"))


def _infer_provider(obj: Any) -> str:
    """Who registers ``obj``: the plugin being loaded; else the plugin whose package defines
    ``obj`` (a plugin module imported before discovery); else ``hyperkd`` for the core's own
    components; else ``user``."""
    prov = current_provider()
    if prov != "user":
        return prov
    module = getattr(obj, "__module__", "") or ""
    if module == "hyperkd" or module.startswith("hyperkd."):
        return "hyperkd"
    for mod, name in _plugin_modules():
        if module == mod or module.startswith(mod + "."):
            return name
    return prov


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, what builds it, and who provided it."""

    kind: str
    name: str
    obj: Any
    description: str
    provider: str
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def build(self, **kwargs: Any) -> Any:
        """Call the registered class or factory with ``kwargs``.

        A registered non-callable (a :class:`~hyperkd.core.sensors.Sensor` instance, say) is
        returned as it is; asking for keyword arguments then is an error.
        """
        if callable(self.obj) and not _is_plain_data(self.obj):
            return self.obj(**kwargs)
        if kwargs:
            raise TypeError(f"{self.kind} {self.name!r} takes no parameters, got {sorted(kwargs)}")
        return self.obj

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (for ``--json`` listings)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "provider": self.provider,
            "aliases": list(self.aliases),
        }


def _is_plain_data(obj: Any) -> bool:
    # Instances of dataclasses that happen to define __call__ are not factories; we
    # only treat functions and classes as builders.
    return not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj))


class Registry:
    """Names → components for one kind.

    Lookups first make sure plugins are loaded (see :mod:`hyperkd.core.plugins`), so
    ``create("teacher", "prithvi")`` works in a fresh interpreter.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    # -- registration ---------------------------------------------------------------
    def add(
        self,
        name: str,
        obj: Any,
        *,
        description: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        provider: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Register ``obj`` under ``name`` (and ``aliases``). Refuses duplicates."""
        prov = provider or _infer_provider(obj)
        for key in (name, *aliases):
            existing = self._lookup(key)
            if existing is not None:
                raise DuplicateComponentError(
                    f"{self.kind} {key!r} is already registered by plugin {existing.provider!r}; "
                    f"plugin {prov!r} tried to register it again. Rename one of them, or "
                    "uninstall one plugin (HYPERKD_DISABLE_PLUGIN_AUTOLOAD=1 skips third-party ones)."
                )
        entry = Entry(
            kind=self.kind,
            name=name,
            obj=obj,
            description=description if description is not None else _first_line(obj),
            provider=prov,
            aliases=tuple(aliases),
            metadata=dict(metadata or {}),
        )
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def register(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        **metadata: Any,
    ) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``__name__``."""

        def deco(obj: T) -> T:
            self.add(
                name or obj.__name__,  # type: ignore[attr-defined]
                obj,
                description=description,
                aliases=aliases,
                metadata=metadata,
            )
            return obj

        return deco

    def remove(self, name: str) -> None:
        """Drop ``name`` and its aliases (used by tests and by plugin reloads)."""
        entry = self._entries.pop(name)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    # -- lookup ---------------------------------------------------------------------
    def _lookup(self, name: str) -> Entry | None:
        if name in self._entries:
            return self._entries[name]
        if name in self._aliases:
            return self._entries[self._aliases[name]]
        return None

    def get(self, name: str) -> Entry:
        """The entry for ``name`` or an alias; unknown names list the close matches."""
        from hyperkd.core.plugins import load_plugins

        load_plugins()
        entry = self._lookup(name)
        if entry is None:
            known = sorted([*self._entries, *self._aliases])
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            listing = ", ".join(known) if known else "(none registered)"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {listing}. "
                f"`hyperkd list {self.kind}` shows them with the plugin that provides each."
            )
        return entry

    def __contains__(self, name: object) -> bool:
        from hyperkd.core.plugins import load_plugins

        load_plugins()
        return isinstance(name, str) and self._lookup(name) is not None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Build the component registered as ``name`` with ``kwargs``."""
        return self.get(name).build(**kwargs)

    def entries(self) -> list[Entry]:
        """All entries, sorted by name."""
        from hyperkd.core.plugins import load_plugins

        load_plugins()
        return sorted(self._entries.values(), key=lambda e: e.name)

    def names(self) -> list[str]:
        """All registered names (aliases not included), sorted."""
        return [e.name for e in self.entries()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    """The registry of ``kind``; an unknown kind lists the known ones."""
    try:
        return REGISTRIES[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownComponentError(
            f"unknown component kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}."
        ) from None


def register(
    kind: str,
    name: str | None = None,
    *,
    description: str | None = None,
    aliases: tuple[str, ...] | list[str] = (),
    **metadata: Any,
) -> Callable[[T], T]:
    """Decorator: register a class or factory as component ``name`` of ``kind``."""
    return registry(kind).register(name, description=description, aliases=aliases, **metadata)


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build component ``name`` of ``kind`` with ``kwargs`` — the one way to build things."""
    return registry(kind).build(name, **kwargs)


def list_components(kind: str | None = None) -> list[Entry]:
    """Entries of one kind, or of every kind."""
    kinds = [kind] if kind else list(KINDS)
    return [e for k in kinds for e in registry(k).entries()]
