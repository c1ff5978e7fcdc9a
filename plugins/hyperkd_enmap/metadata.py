"""EnMAP L2A METADATA.XML: the band table (centre, FWHM, gain, offset), detectors, background.

Read by :mod:`hyperkd_enmap.l2a`; any schema version of the DLR product metadata is accepted
(element names are matched without namespace and case, with the aliases in ``_FIELDS``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from hyperkd.core.errors import DataError

PRODUCT_PATTERN = (
    r"ENMAP(?P<satellite>\d{2})-____(?P<level>L\d[A-Z])-DT(?P<datatake>\d{10})_"
    r"(?P<start>\d{8}T\d{6})Z_(?P<tile>\d{3})_V(?P<version>\d{6})_(?P<processed>\d{8}T\d{6})Z"
)
"""An EnMAP product name, e.g. ``ENMAP01-____L2A-DT0000326721_20170626T102020Z_001_V000204_20200406T201930Z``."""

PRODUCT_RE = re.compile(rf"^{PRODUCT_PATTERN}$")
_FIELDS: dict[str, tuple[str, ...]] = {
    "center": ("wavelengthcenterofband", "centralwavelength", "wavelength"),
    "fwhm": ("fwhmofband", "fwhm"),
    "gain": ("gainofband", "gain"),
    "offset": ("offsetofband", "offset"),
}
_FIELD_LABEL = {
    "center": "wavelengthCenterOfBand",
    "fwhm": "FWHMOfBand",
    "gain": "GainOfBand",
    "offset": "OffsetOfBand",
}


# ---------------------------------------------------------------------------------------
# METADATA.XML
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class L2AMetadata:
    """What hyperkd uses from an L2A METADATA.XML (band table, background, detectors)."""

    source: str
    product_name: str | None
    level: str | None
    schema_version: str | None
    mission_phase: str | None
    band_numbers: tuple[int, ...]
    centers_nm: tuple[float, ...]
    fwhms_nm: tuple[float, ...]
    gains: tuple[float, ...]
    offsets: tuple[float, ...]
    detectors: tuple[str | None, ...]
    background: float | None

    @property
    def num_bands(self) -> int:
        return len(self.band_numbers)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(el: ET.Element | None, *names: str) -> ET.Element | None:
    if el is None:
        return None
    wanted = {n.lower() for n in names}
    for c in el:
        if _local(c.tag).lower() in wanted:
            return c
    return None


def _path(el: ET.Element | None, path: str) -> ET.Element | None:
    for part in path.split("/"):
        el = _child(el, part)
    return el


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


def _channels(el: ET.Element | None) -> set[int]:
    text = _text(el)
    if not text:
        return set()
    return {int(t) for t in re.split(r"[,\s]+", text) if t.strip().isdigit()}


def parse_l2a_metadata(data: bytes, source: str) -> L2AMetadata:
    """Parse an L2A METADATA.XML (any schema version) into :class:`L2AMetadata`.

    ``source`` names the file in error messages.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{source}: not a readable XML file ({exc}); re-download the product") from None
    specific = _child(root, "specific")
    chars = _child(specific, "bandCharacterisation")
    if chars is None:  # tolerate a relocated block, but never pick up bandStatistics
        chars = next((e for e in root.iter() if _local(e.tag).lower() == "bandcharacterisation"), None)
    if chars is None:
        raise DataError(
            f"{source}: no specific/bandCharacterisation block; this is not an EnMAP L1/L2 METADATA.XML"
        )
    rows: list[tuple[int, dict[str, float]]] = []
    band_ids = [b for b in chars if _local(b.tag).lower() == "bandid"]
    if not band_ids:
        raise DataError(f"{source}: bandCharacterisation lists no bandID elements; re-download the product")
    for pos, band in enumerate(band_ids, start=1):
        num_text = band.get("number")
        try:
            number = int(num_text) if num_text is not None else pos
        except ValueError:
            raise DataError(f"{source}: bandID number {num_text!r} is not an integer") from None
        values: dict[str, float] = {}
        for key, names in _FIELDS.items():
            text = _text(_child(band, *names))
            if text is None:
                raise DataError(
                    f"{source}: bandCharacterisation/bandID number={number} has no <{_FIELD_LABEL[key]}>; "
                    "the METADATA.XML is incomplete, re-download the product"
                )
            try:
                values[key] = float(text)
            except ValueError:
                raise DataError(
                    f"{source}: bandID number={number} <{_FIELD_LABEL[key]}> is {text!r}, not a number"
                ) from None
            if not (math.isfinite(values[key]) and (key == "offset" or values[key] > 0)):
                need = "a finite number" if key == "offset" else "a finite number above 0"
                why = " (reflectance = DN * gain + offset)" if key in ("gain", "offset") else ""
                raise DataError(
                    f"{source}: bandID number={number} <{_FIELD_LABEL[key]}> is {text!r}, but it must be "
                    f"{need}{why}; the METADATA.XML is damaged, re-download the product"
                )
        rows.append((number, values))
    rows.sort(key=lambda r: r[0])
    numbers = [r[0] for r in rows]
    if numbers != list(range(1, len(rows) + 1)):
        raise DataError(
            f"{source}: bandID numbers are not 1..{len(rows)} (duplicates or gaps: "
            f"{sorted({n for n in numbers if numbers.count(n) > 1} | (set(range(1, len(rows) + 1)) - set(numbers)))[:5]})"
        )
    vnir = _channels(_path(specific, "vnirProductQuality/expectedChannelsList"))
    swir = _channels(_path(specific, "swirProductQuality/expectedChannelsList"))
    detectors = tuple("VNIR" if n in vnir else "SWIR" if n in swir else None for n in numbers)
    background: float | None
    bg_text = _text(_child(specific, "backgroundValue"))
    try:
        background = float(bg_text) if bg_text is not None else None
    except ValueError:
        background = None
    name = _text(_path(root, "metadata/name"))
    if name and name.upper().endswith("-METADATA.XML"):
        name = name[: -len("-METADATA.XML")]
    level = _text(_path(root, "base/level")) or _text(_path(root, "metadata/schema/processingLevel"))
    if level is not None and level.upper() != "L2A":
        raise DataError(
            f"{source}: describes a {level} product; hyperkd reads L2A surface reflectance products"
        )
    return L2AMetadata(
        source=source,
        product_name=name if name and PRODUCT_RE.match(name) else None,
        level=level,
        schema_version=_text(_path(root, "metadata/schema/versionSchema")),
        mission_phase=_text(_child(specific, "missionPhase")),
        band_numbers=tuple(numbers),
        centers_nm=tuple(r[1]["center"] for r in rows),
        fwhms_nm=tuple(r[1]["fwhm"] for r in rows),
        gains=tuple(r[1]["gain"] for r in rows),
        offsets=tuple(r[1]["offset"] for r in rows),
        detectors=detectors,
        background=background,
    )


# ---------------------------------------------------------------------------------------
# the product
# ---------------------------------------------------------------------------------------
