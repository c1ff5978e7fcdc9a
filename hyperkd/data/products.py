"""Product readers: the contract a sensor plugin fulfils so ``hyperkd data prepare`` can read it.

A *product* is one delivered scene of a sensor (an EnMAP L2A folder or zip, a PRISMA HE5
file, ...). The core never parses a product itself; it asks the ``dataset`` registry for a
:class:`ProductFormat` that reads products of the requested sensor and talks to the opened
:class:`Product` only through this module's small protocol:

* ``format.find(path)`` lists the products at or under a path (a product itself, or a folder
  of them), so ``prepare`` accepts folders of products;
* ``format.open(path)`` opens one product and validates it (file names, metadata, band
  counts) *before* anything is written, raising :class:`~hyperkd.core.errors.DataError` naming the
  file and the problem;
* ``product.check()`` does the cheap pixel-level checks that opening cannot (a truncated
  image), still before anything is written;
* ``product.read(window, bands)`` returns a :class:`ProductWindow`: surface reflectance with
  the product's own gain/offset applied, and the masks ``prepare`` needs to drop chips.

Readers are components of their own kind, ``reader`` (``hyperkd list reader`` shows them):
a plugin registers a :class:`ProductFormat` under the format's name, lazily from its
``hyperkd_components`` hook (the module is imported only when a product is read)::

    FORMAT = ProductFormat(name="prisma-l2d", sensors=("prisma",), open=open_prisma,
                           find=find_prisma_products, description="PRISMA L2D HE5 files")

    @hookimpl
    def hyperkd_components():
        return [ComponentSpec("reader", "prisma-l2d", "hyperkd_prisma.l2d:FORMAT",
                              description="PRISMA L2D HE5 files")]

(or eagerly, ``register("reader", "prisma-l2d")(FORMAT)`` in a ``hyperkd_register`` hook), and
:func:`product_format_for` finds it by sensor name. A torchgeo-style ``dataset`` over the
same products is a separate, optional entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from hyperkd.core.errors import DataError, PluginError
from hyperkd.core.sensors import Sensor


@dataclass(frozen=True)
class ProductWindow:
    """Pixels of one window of a product, in reflectance, with the masks chip selection needs.

    ``image``: ``(C, h, w)`` float32 surface reflectance (``DN * gain + offset`` per band);
    0.0 where a band holds the product's no-data value.
    ``valid``: ``(h, w)`` bool; True where every band holds data, no quality layer marks the
    pixel defective, and no cloud layer flags it. Statistics and losses use only these.
    ``nodata``: ``(h, w)`` bool; True where some band holds no data or the pixel is defective.
    ``cloud``: ``(h, w)`` bool, True where a cloud layer flags the pixel; ``None`` when the
    product carries no cloud layer (then nothing is known, not "cloud-free").
    ``window``: where in the product the pixels come from; ``transform``/``crs`` georeference
    them (``transform`` is the window's own, so pixel (0, 0) is the window's corner).
    ``bands``: band names, in ``image`` order.
    """

    image: np.ndarray
    valid: np.ndarray
    nodata: np.ndarray
    cloud: np.ndarray | None
    window: Window
    transform: Affine
    crs: CRS | None
    bands: tuple[str, ...]

    @property
    def nodata_fraction(self) -> float:
        """Share of the window's pixels without data (or defective)."""
        return float(self.nodata.mean()) if self.nodata.size else 1.0

    @property
    def cloud_fraction(self) -> float:
        """Share of the window's *data* pixels flagged cloudy; 0.0 without a cloud layer."""
        if self.cloud is None:
            return 0.0
        data = ~self.nodata
        n = int(data.sum())
        return float((self.cloud & data).sum() / n) if n else 0.0


class ProductBase:
    """What every opened product shares: it is a context manager that calls ``close()``, and
    its ``repr`` names it, its band count and its size. Readers subclass it and define
    ``close``, ``name``, ``sensor``, ``width`` and ``height``."""

    name: str
    sensor: Sensor
    width: int
    height: int

    def close(self) -> None:
        """Close the product's files."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.sensor.num_bands} bands, {self.width}x{self.height} px)"


@runtime_checkable
class Product(Protocol):
    """An opened product. Implementations are context managers and close their files.

    ``name`` is the product's stable identifier (what a chip store records as the source and
    what resume compares), ``path`` what the user gave. ``sensor`` is the product's own band
    table (every band, selection ``"all"``) with its gain, offset and nodata value.
    """

    name: str
    path: Path
    sensor: Sensor
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    nodata: float | None

    def check(self) -> None:
        """Cheap pixel-level validation (e.g. a truncated image); raises DataError."""

    def read(self, window: Window | None = None, bands: Sequence[str] | None = None) -> ProductWindow:
        """Read ``bands`` (names; default: every band) of ``window`` (default: the whole product)."""

    def info(self) -> dict[str, Any]:
        """JSON-friendly provenance (format version, nodata source, masks present, ...)."""

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> Product: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@dataclass(frozen=True)
class ProductFormat:
    """How to find and open the products of one or more sensors.

    ``open(path, **kwargs)`` returns a :class:`Product`; ``find(path)`` returns the product
    locations at or under ``path`` (``[]`` when there are none; it raises DataError for a
    path that cannot be a product, such as an unexpected file name).
    """

    name: str
    sensors: tuple[str, ...]
    open: Callable[..., Product]
    find: Callable[[Path], list[Path]]
    description: str = ""


def _format_of(entry: Any) -> ProductFormat:
    """The :class:`ProductFormat` a ``reader`` entry holds (importing a declared one)."""
    fmt = entry.obj
    if not isinstance(fmt, ProductFormat):
        raise PluginError(
            f"reader {entry.name!r} (plugin {entry.provider!r}) is a {type(fmt).__name__}, not a "
            "hyperkd.data.products.ProductFormat; register a ProductFormat instance"
        )
    if fmt.name != entry.name:
        raise PluginError(
            f"reader {entry.name!r} (plugin {entry.provider!r}) holds the ProductFormat named {fmt.name!r}; "
            "register it under its own name"
        )
    return fmt


def product_formats() -> list[ProductFormat]:
    """Every product format of the ``reader`` registry (each reader's module is imported)."""
    from hyperkd.core.registry import registry

    return [_format_of(entry) for entry in registry("reader").entries()]


def product_format_for(sensor: str, reader: str | None = None) -> ProductFormat:
    """The product format that reads ``sensor`` products (or the one named ``reader``).

    Several formats for one sensor (e.g. L1C and L2A readers) need ``reader`` to choose.
    Naming ``reader`` imports only that reader's module.
    """
    from hyperkd.core.registry import registry

    if reader is not None:
        readers = registry("reader")
        if reader not in readers:
            known = ", ".join(readers.names()) or "(none)"
            raise DataError(
                f"no product reader named {reader!r}; installed readers: {known} (`hyperkd list reader`)"
            )
        fmt = _format_of(readers.get(reader))
        # "*" in fmt.sensors: reads any sensor's files; sensor "*": none was asked for
        if sensor != "*" and sensor not in fmt.sensors and "*" not in fmt.sensors:
            raise DataError(
                f"product reader {reader!r} reads {', '.join(fmt.sensors)} products, not {sensor!r}"
            )
        return fmt
    formats = product_formats()
    matching = [f for f in formats if sensor in f.sensors]
    if not matching:
        readable = sorted({s for f in formats for s in f.sensors})
        raise DataError(
            f"no installed plugin reads {sensor!r} products (readable sensors: "
            f"{', '.join(readable) or 'none'}); install a plugin with a product reader, "
            "see `hyperkd list reader`"
        )
    if len(matching) > 1:
        raise DataError(
            f"several readers read {sensor!r} products ({', '.join(f.name for f in matching)}); "
            "choose one with --reader"
        )
    return matching[0]


def find_products(fmt: ProductFormat, inputs: Sequence[str | Path]) -> list[Path]:
    """Expand ``inputs`` (products or folders of products) into product paths, in order.

    An input that holds no product, or a missing input, is an error naming it.
    """
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        hits = fmt.find(path)
        if not hits:
            raise DataError(
                f"{path}: no {fmt.name} product found here ({fmt.description or 'see docs/data.md'})"
            )
        for hit in hits:
            if hit not in found:
                found.append(hit)
    return found
