"""Sensors are data: a band table plus the few facts needed to turn stored numbers
into surface reflectance.

A :class:`Sensor` knows, per band, its name, centre wavelength and FWHM (nm), an optional
explicit spectral range, gain and offset (``reflectance = DN * gain + offset``) and, when
known, mean/std **in reflectance units**. It also knows its nodata value, ground sampling
distance, bad bands, and named band selections. Nothing in hyperkd assumes a band count:
aligners, students and data readers are all built from these tables.

Sensors are registered like every other component::

    @register("sensor", "my-sensor")
    def my_sensor() -> Sensor:
        \"\"\"My imaging spectrometer (120 bands, 400-1000 nm).\"\"\"
        return Sensor(name="my-sensor", bands=..., gsd_m=10.0)

and built with :func:`get_sensor` (``get_sensor("enmap", selection="all")``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hyperkd.core.errors import SensorError

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
"""Multiply a Gaussian's FWHM by this to get its standard deviation."""

GOOD_BANDS = "good-bands"
"""The built-in selection of every band but a sensor's ``bad_bands`` (the default without a named one)."""


@dataclass(frozen=True)
class Band:
    """One spectral band.

    ``range_nm`` is the band's nominal spectral range where the sensor defines one
    (multispectral bands such as HLS's); otherwise it is ``center ± fwhm/2``.
    ``mean``/``std`` are in reflectance units (after gain/offset), ``None`` if unknown.
    """

    name: str
    center_nm: float
    fwhm_nm: float
    range_nm: tuple[float, float] | None = None
    gain: float = 1.0
    offset: float = 0.0
    mean: float | None = None
    std: float | None = None
    detector: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center_nm) and self.center_nm > 0):
            raise SensorError(f"band {self.name!r}: centre wavelength must be > 0 nm, got {self.center_nm}")
        if not (math.isfinite(self.fwhm_nm) and self.fwhm_nm > 0):
            raise SensorError(f"band {self.name!r}: FWHM must be > 0 nm, got {self.fwhm_nm}")
        if self.range_nm is not None:
            lo, hi = self.range_nm
            if not lo < hi:
                raise SensorError(f"band {self.name!r}: range {self.range_nm} must have low < high")
        if self.std is not None and not self.std > 0:
            raise SensorError(f"band {self.name!r}: std must be > 0, got {self.std}")

    @property
    def range(self) -> tuple[float, float]:
        """Spectral range (nm): explicit if given, else centre ± FWHM/2."""
        if self.range_nm is not None:
            return (float(self.range_nm[0]), float(self.range_nm[1]))
        half = self.fwhm_nm / 2.0
        return (self.center_nm - half, self.center_nm + half)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "center_nm": self.center_nm,
            "fwhm_nm": self.fwhm_nm,
            "range_nm": list(self.range_nm) if self.range_nm is not None else None,
            "gain": self.gain,
            "offset": self.offset,
            "mean": self.mean,
            "std": self.std,
        }
        if self.detector is not None:
            d["detector"] = self.detector
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Band:
        rng = d.get("range_nm")
        return cls(
            name=str(d["name"]),
            center_nm=float(d["center_nm"]),
            fwhm_nm=float(d["fwhm_nm"]),
            range_nm=(float(rng[0]), float(rng[1])) if rng else None,
            gain=float(d.get("gain", 1.0)),
            offset=float(d.get("offset", 0.0)),
            mean=None if d.get("mean") is None else float(d["mean"]),
            std=None if d.get("std") is None else float(d["std"]),
            detector=d.get("detector"),
        )


@dataclass(frozen=True)
class Sensor:
    """A spectral instrument: its bands and how to read its numbers.

    ``selections`` maps a selection name to band names; ``default_selection`` names the
    one used when none is asked for (``None`` = all bands but the bad ones). ``bad_bands`` are
    bands that are present in products but should not be used (water vapour, detector edges).
    ``selection`` records which selection this instance is (``"all"`` when unselected).
    """

    name: str
    bands: tuple[Band, ...]
    gsd_m: float
    nodata: float | None = None
    dtype: str = "float32"
    description: str = ""
    bad_bands: tuple[str, ...] = ()
    selections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_selection: str | None = None
    selection: str = "all"
    source: str = ""

    def __post_init__(self) -> None:
        if not self.bands:
            raise SensorError(f"sensor {self.name!r} has no bands")
        names = [b.name for b in self.bands]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SensorError(f"sensor {self.name!r}: duplicate band names {dup}")
        known = set(names)
        for sel, members in self.selections.items():
            missing = [m for m in members if m not in known]
            if missing and self.selection == "all":
                raise SensorError(
                    f"sensor {self.name!r}: selection {sel!r} names unknown bands {missing[:5]}"
                )
        if self.default_selection is not None and self.default_selection not in self.selections:
            raise SensorError(
                f"sensor {self.name!r}: default selection {self.default_selection!r} is not one of "
                f"{sorted(self.selections)}"
            )
        if not self.gsd_m > 0:
            raise SensorError(f"sensor {self.name!r}: gsd_m must be > 0, got {self.gsd_m}")

    # -- views ------------------------------------------------------------------------
    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def centers_nm(self) -> list[float]:
        return [b.center_nm for b in self.bands]

    @property
    def fwhms_nm(self) -> list[float]:
        return [b.fwhm_nm for b in self.bands]

    @property
    def ranges_nm(self) -> list[tuple[float, float]]:
        return [b.range for b in self.bands]

    @property
    def means(self) -> list[float] | None:
        """Per-band mean in reflectance units, or ``None`` if any band lacks one."""
        vals = [b.mean for b in self.bands]
        return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]

    @property
    def stds(self) -> list[float] | None:
        vals = [b.std for b in self.bands]
        return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]

    def band_index(self, name: str) -> int:
        """Position of band ``name``; a clear error if the sensor lacks it."""
        try:
            return self.band_names.index(name)
        except ValueError:
            raise SensorError(
                f"sensor {self.name!r} ({self.selection}) has no band {name!r}; "
                f"its bands are {self.band_names[0]}..{self.band_names[-1]}"
            ) from None

    # -- transformations ------------------------------------------------------------------
    def select(self, selection: str | Sequence[str] | None = "default") -> Sensor:
        """A sensor restricted to a band selection.

        ``"default"`` is the sensor's default selection (without one: every band but the
        :attr:`bad_bands`), ``"all"`` or ``None`` keeps every band, ``"good-bands"`` every band
        but the bad ones, another string names a selection, and a sequence lists band names.
        """
        if selection is None or selection == "all":
            names: Sequence[str] = self.band_names
            label = self.selection
        elif selection == "default":
            if self.default_selection is not None:
                return self.select(self.default_selection)
            if not set(self.bad_bands) & set(self.band_names):
                return self
            return self.select(GOOD_BANDS)
        elif selection == GOOD_BANDS and selection not in self.selections:
            bad = set(self.bad_bands)
            names = [n for n in self.band_names if n not in bad]
            label = GOOD_BANDS
        elif isinstance(selection, str):
            if selection not in self.selections:
                raise SensorError(
                    f"sensor {self.name!r} has no band selection {selection!r}; "
                    f"choose one of: all, {GOOD_BANDS}, {', '.join(sorted(self.selections))}"
                )
            names = self.selections[selection]
            label = selection
        else:
            names = list(selection)
            label = "custom"
        index = {b.name: b for b in self.bands}
        missing = [n for n in names if n not in index]
        if missing:
            raise SensorError(
                f"sensor {self.name!r}: selection {label!r} needs bands {missing[:5]} "
                f"that this band table lacks ({self.num_bands} bands)"
            )
        kept = tuple(index[n] for n in names)
        return replace(self, bands=kept, selection=label)

    def with_band_table(
        self,
        centers_nm: Sequence[float],
        fwhms_nm: Sequence[float],
        gains: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        detectors: Sequence[str | None] | None = None,
        source: str = "",
    ) -> Sensor:
        """The same sensor with a product's own band table (e.g. from METADATA.XML).

        Band names default to ``B1..Bn``. Selections that name bands the new table lacks
        are dropped, as is the default selection if it becomes unavailable.
        """
        n = len(centers_nm)
        if len(fwhms_nm) != n:
            raise SensorError(f"{len(centers_nm)} centre wavelengths but {len(fwhms_nm)} FWHM values")
        names = list(names) if names is not None else [f"B{i + 1}" for i in range(n)]
        old = {b.name: b for b in self.bands}
        bands = []
        for i, name in enumerate(names):
            prev = old.get(name)
            bands.append(
                Band(
                    name=name,
                    center_nm=float(centers_nm[i]),
                    fwhm_nm=float(fwhms_nm[i]),
                    gain=float(gains[i]) if gains is not None else (prev.gain if prev else 1.0),
                    offset=float(offsets[i]) if offsets is not None else (prev.offset if prev else 0.0),
                    mean=prev.mean if prev else None,
                    std=prev.std if prev else None,
                    detector=detectors[i] if detectors is not None else None,
                )
            )
        have = set(names)
        sels = {k: v for k, v in self.selections.items() if set(v) <= have}
        default = self.default_selection if self.default_selection in sels else None
        return replace(
            self,
            bands=tuple(bands),
            bad_bands=tuple(b for b in self.bad_bands if b in have),
            selections=sels,
            default_selection=default,
            selection="all",
            source=source or self.source,
        )

    def with_stats(self, means: Sequence[float], stds: Sequence[float]) -> Sensor:
        """The same sensor with per-band mean/std (reflectance units), e.g. from a chip store."""
        if len(means) != self.num_bands or len(stds) != self.num_bands:
            raise SensorError(
                f"sensor {self.name!r} has {self.num_bands} bands but got {len(means)} means "
                f"and {len(stds)} stds"
            )
        bands = tuple(
            replace(b, mean=float(m), std=max(float(s), 1e-12))
            for b, m, s in zip(self.bands, means, stds, strict=True)
        )
        return replace(self, bands=bands)

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict holding everything needed to rebuild this sensor."""
        return {
            "name": self.name,
            "description": self.description,
            "gsd_m": self.gsd_m,
            "nodata": self.nodata,
            "dtype": self.dtype,
            "selection": self.selection,
            "default_selection": self.default_selection,
            "num_bands": self.num_bands,
            "bad_bands": list(self.bad_bands),
            "selections": {k: list(v) for k, v in self.selections.items()},
            "source": self.source,
            "bands": [b.to_dict() for b in self.bands],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sensor:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                name=str(d["name"]),
                bands=tuple(Band.from_dict(b) for b in d["bands"]),
                gsd_m=float(d["gsd_m"]),
                nodata=d.get("nodata"),
                dtype=str(d.get("dtype", "float32")),
                description=str(d.get("description", "")),
                bad_bands=tuple(d.get("bad_bands", ())),
                selections={k: tuple(v) for k, v in d.get("selections", {}).items()},
                default_selection=d.get("default_selection"),
                selection=str(d.get("selection", "all")),
                source=str(d.get("source", "")),
            )
        except KeyError as exc:
            raise SensorError(f"sensor description lacks field {exc.args[0]!r}") from None


def read_band_csv(path: str | Path) -> list[dict[str, float]]:
    """Read a band table CSV with columns ``band, wavelength_center_nm, fwhm_nm``."""
    path = Path(path)
    rows: list[dict[str, float]] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"band", "wavelength_center_nm", "fwhm_nm"}
        if not need <= set(reader.fieldnames or ()):
            raise SensorError(f"{path}: band table needs columns {sorted(need)}, has {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            try:
                rows.append(
                    {
                        "band": int(row["band"]),
                        "center_nm": float(row["wavelength_center_nm"]),
                        "fwhm_nm": float(row["fwhm_nm"]),
                    }
                )
            except ValueError as exc:
                raise SensorError(f"{path}, line {i}: {exc}") from None
    return rows


def band_ranges(spec: Iterable[tuple[int, int]], prefix: str = "B") -> tuple[str, ...]:
    """Band names for inclusive 1-based index ranges, e.g. ``[(1, 3)] -> (B1, B2, B3)``."""
    return tuple(f"{prefix}{i}" for lo, hi in spec for i in range(lo, hi + 1))


BAND_TOLERANCE = 0.2
"""Two bands are the same band when their centres differ by at most this share of the narrower FWHM."""


def match_bands(
    expected: Sensor, actual: Sensor, where: str, *, tolerance: float = BAND_TOLERANCE
) -> list[int]:
    """Which of ``actual``'s bands feed each of ``expected``'s bands, matched by wavelength, not name.

    Use it wherever a model meets data (student <-> store, training <-> evaluation store,
    model <-> scene): band *names* are only positions in some table (``B92`` is 902 nm in a
    detector-ordered file and 952 nm in a wavelength-sorted one), so a model could otherwise
    run silently on permuted bands.

    Returns ``index`` with ``len(index) == expected.num_bands``: ``data[index]`` (``data`` being
    ``(actual.num_bands, ...)``) puts the data in ``expected``'s band order. It is
    ``list(range(n))`` when the order already agrees; any other value means the caller must
    reorder (and say so). ``actual`` may hold more bands than ``expected`` (a scene with every
    band for a model trained on a selection); the extra bands are simply not indexed.

    A band of ``expected`` matches a band of ``actual`` when their centres differ by at most
    ``tolerance`` x the narrower FWHM; each ``actual`` band is used once, closest pairs first
    (EnMAP's VNIR and SWIR bands near 950 nm are 0.6 nm apart). Raises
    :class:`~hyperkd.core.errors.SensorError` naming ``where``, the first ``expected`` band
    without a match, its wavelength and the wavelength ``actual`` has at that position.
    """
    exp, act = expected.bands, actual.bands
    pairs = []
    for i, e in enumerate(exp):
        for j, a in enumerate(act):
            d = abs(e.center_nm - a.center_nm)
            if d <= tolerance * min(e.fwhm_nm, a.fwhm_nm):
                pairs.append((d, abs(e.fwhm_nm - a.fwhm_nm), i, j))
    pairs.sort()
    index: list[int | None] = [None] * len(exp)
    used: set[int] = set()
    for _d, _f, i, j in pairs:
        if index[i] is None and j not in used:
            index[i] = j
            used.add(j)
    for i, hit in enumerate(index):
        if hit is None:
            e = exp[i]
            there = f"{act[i].center_nm:g} nm ({act[i].name})" if i < len(act) else f"only {len(act)} bands"
            nearest = min(act, key=lambda a: abs(a.center_nm - e.center_nm))
            raise SensorError(
                f"{where}: band {i + 1} of {expected.name!r} ({e.name}, {e.center_nm:g} nm, FWHM "
                f"{e.fwhm_nm:g}) has no match in {actual.name!r} ({actual.num_bands} bands): it has "
                f"{there} at that position and its nearest band is {nearest.name} at "
                f"{nearest.center_nm:g} nm; use data with the model's bands"
            )
    return [int(j) for j in index if j is not None]


def check_band_table(sensor: Any, name: str) -> list[str]:
    """Check what registered sensor ``name`` built; returns warnings, raises what makes it unusable.

    Errors (:class:`~hyperkd.core.errors.SensorError`): not a :class:`Sensor`, bad bands the
    table lacks, a default selection that keeps bad bands.
    Warnings: centre wavelengths out of order (band *positions* then are not wavelength order,
    which figures and the ``range`` aligners' neighbours assume) and bands sharing a centre
    (two bands then match the same wavelength). Band values themselves (FWHM > 0, ...) are
    checked when the :class:`Band` is made.
    """
    if not isinstance(sensor, Sensor):
        raise SensorError(f"sensor {name!r}: its factory returned {type(sensor).__name__}, not a Sensor")
    known = set(sensor.band_names)
    unknown = [b for b in sensor.bad_bands if b not in known]
    if unknown:
        raise SensorError(f"sensor {name!r}: bad_bands names bands the table lacks: {unknown[:5]}")
    if sensor.default_selection is not None:
        kept = sorted(set(sensor.bad_bands) & set(sensor.selections[sensor.default_selection]))
        if kept:
            raise SensorError(
                f"sensor {name!r}: default selection {sensor.default_selection!r} keeps bad bands "
                f"{kept[:5]}; leave them out of it or off bad_bands"
            )
    warnings = []
    c = sensor.centers_nm
    down = [i for i in range(1, len(c)) if c[i] < c[i - 1]]
    if down:
        i = down[0]
        warnings.append(
            f"sensor {name!r}: centre wavelengths are not in increasing order ({len(down)} place(s), first "
            f"{sensor.bands[i - 1].name} {c[i - 1]:g} nm then {sensor.bands[i].name} {c[i]:g} nm)"
        )
    seen: dict[float, str] = {}
    dup = []
    for b in sensor.bands:
        if b.center_nm in seen:
            dup.append(f"{seen[b.center_nm]}/{b.name} at {b.center_nm:g} nm")
        seen.setdefault(b.center_nm, b.name)
    if dup:
        warnings.append(
            f"sensor {name!r}: {len(dup)} band(s) share a centre wavelength ({', '.join(dup[:3])})"
        )
    return warnings


def get_sensor(name: str, selection: str | Sequence[str] | None = "default") -> Sensor:
    """Build registered sensor ``name`` and apply a band selection (default: its default).

    The band table is checked (:func:`check_band_table`) when first built; a plugin whose
    sensor fails is then reported as failed, and asking for a sensor of a plugin that failed
    names that plugin and its error (:func:`hyperkd.core.plugins.build_sensor`).
    """
    from hyperkd.core.plugins import build_sensor

    return build_sensor(name).select(selection)
