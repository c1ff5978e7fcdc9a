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

Entries can also be *declared* before their code is imported: a :class:`ComponentSpec` names
the kind, the name and where the object lives (``"package.module:attr"``). The module is
imported on the first build, so a lookup imports only what it builds (``hyperkd --help`` and
``create("masker", "random")`` stay cheap). When the declared module is imported and its
``@register`` decorator fires for the declared name, the decorator fills the declared entry
instead of being refused as a duplicate.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib
import inspect
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hyperkd.core.errors import DuplicateComponentError, PluginError, UnknownComponentError

KINDS: tuple[str, ...] = (
    "sensor",
    "teacher",
    "student",
    "aligner",
    "masker",
    "loss",
    "task",
    "dataset",
    "reader",
)
"""The kinds of component hyperkd knows. Each has one registry."""

T = TypeVar("T")

_current_provider: contextvars.ContextVar[str] = contextvars.ContextVar("hyperkd_provider", default="user")


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
    module = _defining_module(obj) or ""
    if module == "hyperkd" or module.startswith("hyperkd."):
        return "hyperkd"
    for mod, name in _plugin_modules():
        if module == mod or module.startswith(mod + "."):
            return name
    return prov


def _defining_module(obj: Any) -> str | None:
    """The module that defines a function or class (an instance's class module says nothing
    about who registers the instance, so instances give ``None``)."""
    if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj):
        return getattr(obj, "__module__", None)
    return None


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?$")


@dataclass(frozen=True)
class ComponentSpec:
    """A component declared without importing it; its module is imported on first build.

    ``target`` is ``"package.module:attr"`` (the registered class or factory), or just
    ``"package.module"`` when importing the module registers the name itself (a decorator in
    a loop, say). ``description`` is what listings show without importing anything; leave it
    ``None`` to have listings import the module and read the object's docstring.
    """

    kind: str
    name: str
    target: str
    description: str | None = None
    aliases: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "metadata", dict(self.metadata))
        if not isinstance(self.target, str) or not _TARGET.match(self.target):
            raise PluginError(
                f"{self.kind} {self.name!r}: target {self.target!r} is not 'package.module' or "
                "'package.module:attr'; point it at the module (and object) that defines the component"
            )

    @property
    def module(self) -> str:
        """The module to import."""
        return self.target.partition(":")[0]

    @property
    def attr(self) -> str:
        """The object's (dotted) name in :attr:`module`; empty when the module registers it."""
        return self.target.partition(":")[2]

    @classmethod
    def coerce(cls, record: Any) -> ComponentSpec:
        """``record`` as a spec: a spec is returned as is, a mapping gives the fields."""
        if isinstance(record, cls):
            return record
        if isinstance(record, Mapping):
            try:
                return cls(**record)
            except TypeError as exc:
                raise PluginError(
                    f"component record {dict(record)!r}: {exc}; give kind, name, target and optionally "
                    "description, aliases, metadata"
                ) from None
        raise PluginError(
            f"component record {record!r} is a {type(record).__name__}, not a hyperkd ComponentSpec "
            "or a mapping with kind, name and target"
        )


_UNSET: Any = object()


class Entry:
    """One registered component: its name, what builds it, and who provided it.

    A declared (lazy) entry knows its :attr:`target` but not yet its object; reading
    :attr:`obj` or :attr:`metadata`, or building it, imports the target module first.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        obj: Any = _UNSET,
        description: str | None = None,
        provider: str = "user",
        aliases: tuple[str, ...] = (),
        metadata: Mapping[str, Any] | None = None,
        target: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.provider = provider
        self.aliases = tuple(aliases)
        self.target = target
        self._obj = obj
        self._description = description
        self._metadata = dict(metadata or {})
        if obj is not _UNSET and description is None:
            self._description = _first_line(obj)

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else f"lazy {self.target}"
        return f"Entry({self.kind!r}, {self.name!r}, provider={self.provider!r}, {state})"

    @property
    def loaded(self) -> bool:
        """Whether the object is known (a declared entry before its first use is not)."""
        return self._obj is not _UNSET

    @property
    def obj(self) -> Any:
        """The registered class, factory or value (imports a declared entry's module)."""
        return self.resolve()

    @property
    def description(self) -> str:
        """The declared description, else the first docstring line (importing if need be)."""
        if self._description is None:
            self.resolve()
        return self._description or ""

    @property
    def metadata(self) -> dict[str, Any]:
        """Declared metadata merged with the decorator's (importing a declared entry)."""
        self.resolve()
        return self._metadata

    def fill(
        self, obj: Any, *, description: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Give a declared entry its object (its module's decorator fired, or the attribute was read)."""
        self._obj = obj
        if self._description is None:
            self._description = description if description is not None else _first_line(obj)
        for k, v in (metadata or {}).items():
            self._metadata.setdefault(k, v)

    def absorb(self, spec: ComponentSpec) -> None:
        """Take a late declaration's description, metadata and target (its module was imported
        and registered this entry before the plugin declared it); aliases are the registry's job."""
        if spec.description is not None:
            self._description = spec.description
        self._metadata = {**spec.metadata, **self._metadata}
        self.target = self.target or spec.target

    def resolve(self) -> Any:
        """The object, importing the declared module on first use.

        An import failure, or a declaration the module does not fulfil, raises
        :class:`~hyperkd.core.errors.PluginError` naming the plugin, the entry and the target.
        """
        if self._obj is not _UNSET:
            return self._obj
        spec = ComponentSpec(self.kind, self.name, self.target or "")
        what = f"{self.kind} {self.name!r} (plugin {self.provider!r}, {spec.target})"
        token = _resolving.set((*_resolving.get(), self))
        try:
            module = importlib.import_module(spec.module)
        except Exception as exc:
            raise PluginError(
                f"{what} cannot be loaded: importing {spec.module} failed with {type(exc).__name__}: {exc}. "
                "Install what the plugin needs, or see `hyperkd plugins list`."
            ) from exc
        finally:
            _resolving.reset(token)
        if self._obj is _UNSET and spec.attr:
            try:
                self.fill(operator.attrgetter(spec.attr)(module))
            except AttributeError:
                raise PluginError(
                    f"{what}: module {spec.module} has no attribute {spec.attr!r}; fix the plugin's declaration"
                ) from None
        if self._obj is _UNSET:
            raise PluginError(
                f"{what}: importing {spec.module} registered no {self.kind} named {self.name!r}; "
                "fix the plugin's declaration (give module:attr) or its @register call"
            )
        return self._obj

    def build(self, **kwargs: Any) -> Any:
        """Call the registered class or factory with ``kwargs``.

        A registered non-callable (a :class:`~hyperkd.core.sensors.Sensor` instance, say) is
        returned as it is; asking for keyword arguments then is an error.
        """
        obj = self.resolve()
        if callable(obj) and not _is_plain_data(obj):
            return obj(**kwargs)
        if kwargs:
            raise TypeError(f"{self.kind} {self.name!r} takes no parameters, got {sorted(kwargs)}")
        return obj

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (for ``--json`` listings)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "provider": self.provider,
            "aliases": list(self.aliases),
        }


_resolving: contextvars.ContextVar[tuple[Entry, ...]] = contextvars.ContextVar(
    "hyperkd_resolving", default=()
)
"""Declared entries whose module is being imported right now (their decorators fill them)."""


def _is_plain_data(obj: Any) -> bool:
    # Instances of dataclasses that happen to define __call__ are not factories; we
    # only treat functions and classes as builders.
    return not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj))


def _fills(entry: Entry, obj: Any, prov: str) -> bool:
    """Whether registering ``obj`` (by ``prov``) fills the declared, not yet loaded ``entry``.

    It does when the same plugin registers it, when ``obj`` is defined in the declared
    module, or while the entry's own module is being imported for it.
    """
    if entry.loaded or entry.target is None:
        return False
    module = entry.target.partition(":")[0]
    return (
        prov == entry.provider or _defining_module(obj) == module or any(e is entry for e in _resolving.get())
    )


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
        """Register ``obj`` under ``name`` (and ``aliases``). Refuses duplicates.

        A declared entry of the same name is filled instead (see :func:`_fills`); aliases the
        decorator adds to it are registered too.
        """
        prov = provider or _infer_provider(obj)
        declared = self._entries.get(name)
        if declared is not None and _fills(declared, obj, prov):
            self._extend_aliases(declared, aliases, prov)
            declared.fill(obj, description=description, metadata=metadata)
            return declared
        self._check_free(name, [name, *aliases], prov)
        entry = Entry(
            self.kind,
            name,
            obj,
            description=description,
            provider=prov,
            aliases=tuple(aliases),
            metadata=metadata,
        )
        return self.restore(entry)

    def declare(self, spec: ComponentSpec, *, provider: str | None = None) -> Entry:
        """Declare ``spec`` without importing it; built (and imported) on first use.

        If the module was imported already and its decorator registered the name for the same
        plugin, that entry takes the declared description, aliases and metadata instead.
        """
        prov = provider or current_provider()
        existing = self._entries.get(spec.name)
        if existing is not None and existing.loaded and existing.provider == prov:
            self._extend_aliases(existing, spec.aliases, prov)
            existing.absorb(spec)
            return existing
        self._check_free(spec.name, [spec.name, *spec.aliases], prov)
        entry = Entry(
            self.kind,
            spec.name,
            description=spec.description,
            provider=prov,
            aliases=spec.aliases,
            metadata=spec.metadata,
            target=spec.target,
        )
        return self.restore(entry)

    def restore(self, entry: Entry) -> Entry:
        """Put an existing entry (loaded or declared) back, e.g. after a plugin reload."""
        self._check_free(entry.name, [entry.name, *entry.aliases], entry.provider)
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name
        return entry

    def _check_free(self, name: str, keys: list[str], prov: str, *, skip: Entry | None = None) -> None:
        for key in keys:
            existing = self._lookup(key)
            if existing is not None and existing is not skip:
                raise DuplicateComponentError(
                    f"{self.kind} {key!r} is already registered by plugin {existing.provider!r}; "
                    f"plugin {prov!r} tried to register it again. Rename one of them, or "
                    "uninstall one plugin (HYPERKD_DISABLE_PLUGIN_AUTOLOAD=1 skips third-party ones)."
                )

    def _extend_aliases(self, entry: Entry, aliases: tuple[str, ...] | list[str], prov: str) -> None:
        """Add the ``aliases`` ``entry`` does not have yet (a declaration and a decorator may
        both name some), refusing ones another entry holds."""
        new = [a for a in aliases if a not in entry.aliases]
        self._check_free(entry.name, new, prov, skip=entry)
        entry.aliases = (*entry.aliases, *new)
        for alias in new:
            self._aliases[alias] = entry.name

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

    def remove(self, name: str) -> Entry:
        """Drop ``name`` and its aliases (used by tests and by plugin reloads); returns the entry."""
        entry = self._entries.pop(name)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)
        return entry

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
        """All entries, sorted by name (declared ones are not imported)."""
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


def declare(spec: ComponentSpec | Mapping[str, Any], *, provider: str | None = None) -> Entry:
    """Declare a component lazily (see :class:`ComponentSpec`); plugins usually return specs
    from their ``hyperkd_components`` hook instead of calling this."""
    spec = ComponentSpec.coerce(spec)
    return registry(spec.kind).declare(spec, provider=provider)


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build component ``name`` of ``kind`` with ``kwargs`` — the one way to build things."""
    return registry(kind).build(name, **kwargs)


def list_components(kind: str | None = None) -> list[Entry]:
    """Entries of one kind, or of every kind."""
    kinds = [kind] if kind else list(KINDS)
    return [e for k in kinds for e in registry(k).entries()]
