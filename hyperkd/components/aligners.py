"""Channel aligners: show the teacher the student's scene through the teacher's own bands.

An aligner maps a student-sensor cube ``(B, Cs, H, W)`` of surface reflectance to the
teacher sensor's bands ``(B, Ct, H, W)``, still in reflectance (teachers convert to their
own input unit themselves, see :class:`~hyperkd.core.interfaces.Teacher`). Every aligner is a
``(Ct, Cs)`` band-weight matrix computed from the two sensors' band tables alone, so any
sensor pair works with no per-pair code:

``spectral-range`` (the HyperKD paper's channel alignment)
    teacher band *t* = mean of the student bands whose centre wavelength lies inside *t*'s
    spectral range (inclusive). A teacher band with no student band inside is an error that
    names it: silently borrowing a neighbour would feed the teacher a band it never saw.
``srf``
    Gaussian spectral response functions. Teacher band *t* (centre ``c_t``, FWHM ``f_t``)
    weights student band *s* by ``exp(-(c_s - c_t)^2 / (2 (sigma_t^2 + sigma_s^2)))`` with
    ``sigma = FWHM / 2.3548``: the teacher's response convolved with the student band's own
    (Gaussian) response, so broad student bands spread further. Weights beyond ``cutoff``
    effective sigmas are zeroed (default 3) and each row is normalised to sum to 1.
``learned``
    a trainable 1x1 convolution initialised from ``spectral-range`` (bias 0), for studies
    where the alignment itself is learned during distillation.

A teacher band that no student band covers is never invented from other wavelengths. Every
aligner takes ``missing`` (recipe key ``aligner.missing``), the policy for such bands:

``refuse`` (default)
    stop with an error naming the band and the two policies below.
``drop``
    the teacher loses that input channel, the way TerraTorch adapts Prithvi's patch embedding
    to a band subset (``select_patch_embed_weights`` keeps the weights of the bands present
    and discards the rest): the aligner hands the teacher a constant that its own
    normalisation maps to 0, so that channel's patch-embedding weights add nothing.
``fill``
    the teacher sees its own mean reflectance in that band (0 after its normalisation).

For a teacher whose first layer is linear in each channel (Prithvi's patch embedding) the
two give the same numbers; they are recorded apart because they say different things about
the run. Both need the teacher sensor's per-band means (hyperkd teachers carry them).
"Covered": ``spectral-range`` -- a student band centre inside the teacher band's range (its
own rule); ``srf`` and ``learned`` -- a student band whose range (centre +- FWHM/2) overlaps
it, whatever ``cutoff`` (a wide cutoff must not turn 1000 nm reflectance into SWIR).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError
from hyperkd.core.interfaces import Aligner
from hyperkd.core.registry import register
from hyperkd.core.sensors import FWHM_TO_SIGMA, Sensor, get_sensor

MISSING_POLICIES = ("refuse", "drop", "fill")
"""What an aligner does with a teacher band no student band covers (see the module docs)."""

log = logging.getLogger(__name__)


def _sensor(s: Sensor | str) -> Sensor:
    return get_sensor(s) if isinstance(s, str) else s


def _check_policy(missing: str, method: str) -> None:
    if missing not in MISSING_POLICIES:
        raise HyperKDError(
            f"aligner {method}: missing={missing!r} is not a policy; use one of {', '.join(MISSING_POLICIES)}"
        )


def centre_covered(source: Sensor, target: Sensor) -> np.ndarray:
    """``(Ct,)`` bool: some source band centre lies inside the target band's range (``spectral-range``)."""
    centers = np.asarray(source.centers_nm, dtype=np.float64)
    return np.array([((centers >= lo) & (centers <= hi)).any() for lo, hi in target.ranges_nm], dtype=bool)


def range_covered(source: Sensor, target: Sensor) -> np.ndarray:
    """``(Ct,)`` bool: some source band's range overlaps the target band's range (``srf``, ``learned``)."""
    src = np.asarray(source.ranges_nm, dtype=np.float64)
    return np.array(
        [((src[:, 0] <= hi) & (src[:, 1] >= lo)).any() for lo, hi in target.ranges_nm], dtype=bool
    )


def missing_bands(
    source: Sensor, target: Sensor, covered: np.ndarray, missing: str, method: str, hint: str = ""
) -> list[int]:
    """Target bands not ``covered``: refused (default) in one line naming the first, else returned."""
    _check_policy(missing, method)
    gaps = [int(t) for t in np.flatnonzero(~covered)]
    if not gaps:
        return gaps
    if missing == "refuse":
        t = gaps[0]
        lo, hi = target.ranges_nm[t]
        centers = np.asarray(source.centers_nm, dtype=np.float64)
        nearest = float(centers[np.argmin(np.minimum(abs(centers - lo), abs(centers - hi)))])
        names = ", ".join(target.band_names[g] for g in gaps)
        raise HyperKDError(
            f"aligner {method}: {target.name} band {target.band_names[t]} ({lo:g}-{hi:g} nm) contains no "
            f"{source.name} band (nearest centre: {nearest:g} nm); a teacher band is never made up from "
            f"other wavelengths: {hint}set aligner.missing=drop (the teacher loses input channel(s) {names}) "
            "or aligner.missing=fill (the teacher's mean there), or use a student whose bands cover it"
        )
    if target.means is None:
        raise HyperKDError(
            f"aligner {method}: missing={missing} needs the teacher sensor's per-band means, and "
            f"{target.name!r} has none; use a teacher that carries them, or missing=refuse"
        )
    log.warning(
        "aligner %s: %s band(s) %s are covered by no %s band; policy missing=%s: %s",
        method,
        target.name,
        ", ".join(target.band_names[g] for g in gaps),
        source.name,
        missing,
        "the teacher loses those input channels"
        if missing == "drop"
        else "the teacher sees its own mean reflectance there",
    )
    return gaps


def spectral_range_weights(source: Sensor, target: Sensor, skip: Sequence[int] = ()) -> np.ndarray:
    """``(Ct, Cs)`` weights: each target band averages the source bands centred in its range.

    Rows in ``skip`` (bands handled by a missing-band policy) stay zero; any other target band
    without a source centre inside is an error naming it.
    """
    centers = np.asarray(source.centers_nm, dtype=np.float64)
    w = np.zeros((target.num_bands, source.num_bands), dtype=np.float64)
    for t, (band, (lo, hi)) in enumerate(zip(target.band_names, target.ranges_nm, strict=True)):
        if t in skip:
            continue
        inside = (centers >= lo) & (centers <= hi)
        if not inside.any():
            nearest = float(centers[np.argmin(np.minimum(abs(centers - lo), abs(centers - hi)))])
            raise HyperKDError(
                f"aligner spectral-range: {target.name} band {band} ({lo:g}-{hi:g} nm) contains no "
                f"{source.name} band centre (nearest: {nearest:g} nm); use aligner srf, or a band "
                "selection that keeps bands in that range"
            )
        w[t, inside] = 1.0 / inside.sum()
    return w


def srf_weights(source: Sensor, target: Sensor, cutoff: float = 3.0, skip: Sequence[int] = ()) -> np.ndarray:
    """``(Ct, Cs)`` Gaussian-SRF weights (see module docs), rows summing to 1 (rows in ``skip``: 0)."""
    cs = np.asarray(source.centers_nm, dtype=np.float64)[None, :]
    ss = np.asarray(source.fwhms_nm, dtype=np.float64)[None, :] * FWHM_TO_SIGMA
    ct = np.asarray(target.centers_nm, dtype=np.float64)[:, None]
    st = np.asarray(target.fwhms_nm, dtype=np.float64)[:, None] * FWHM_TO_SIGMA
    var = st**2 + ss**2
    d2 = (cs - ct) ** 2
    w = np.exp(-d2 / (2 * var))
    w[d2 > (cutoff**2) * var] = 0.0
    w[list(skip)] = 0.0
    sums = w.sum(1)
    for t in np.flatnonzero(sums <= 0):
        if t in skip:
            continue
        raise HyperKDError(
            f"aligner srf: {target.name} band {target.band_names[t]} (centre {ct[t, 0]:g} nm) has no "
            f"{source.name} band within {cutoff:g} sigma; raise cutoff or check the band selection"
        )
    return w / np.where(sums > 0, sums, 1.0)[:, None]


def _fill_values(target: Sensor, gaps: Sequence[int]) -> np.ndarray:
    """``(Ct,)``: the teacher's mean reflectance at ``gaps``, 0 elsewhere (added after the weights)."""
    fill = np.zeros(target.num_bands, dtype=np.float64)
    means = target.means or [0.0] * target.num_bands
    for t in gaps:
        fill[t] = means[t]
    return fill


class MatrixAligner(Aligner):
    """A fixed ``(Ct, Cs)`` band-weight matrix applied per pixel.

    The matrix is a non-persistent buffer: it is recomputed from the band tables, so
    checkpoints do not depend on it.
    """

    def __init__(
        self,
        source: Sensor | str,
        target: Sensor | str,
        weights: np.ndarray,
        method: str,
        missing: str = "refuse",
        gaps: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.source, self.target = _sensor(source), _sensor(target)
        self.method = method
        self.missing = missing
        self.gaps = [int(g) for g in gaps]
        self.register_buffer("weight", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
        fill = _fill_values(self.target, self.gaps)
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise HyperKDError(
                f"aligner {self.method}: expects (B, {self.weight.shape[1]}, H, W) {self.source.name} "
                f"reflectance, got {tuple(x.shape)}"
            )
        out = torch.einsum("ts,bshw->bthw", self.weight.to(x.dtype), x)
        return out + self.fill.to(x.dtype)[None, :, None, None] if self.gaps else out

    def band_report(self) -> dict[str, Any]:
        """The missing-band policy and the teacher bands it applied to (``RUN/distill.json``)."""
        return band_report(self)

    def extra_repr(self) -> str:
        return f"{self.method}: {self.source.name} ({self.source.num_bands}) -> {self.target.name} ({self.target.num_bands})"


def band_report(aligner: Any) -> dict[str, Any]:
    """``{"missing": policy, "missing_bands": [teacher band names]}`` of an aligner built here."""
    gaps = getattr(aligner, "gaps", [])
    return {
        "missing": getattr(aligner, "missing", "refuse"),
        "missing_bands": [aligner.target.band_names[g] for g in gaps],
    }


@register("aligner", "spectral-range")
def spectral_range(source: Sensor | str, target: Sensor | str, missing: str = "refuse") -> MatrixAligner:
    """Teacher band = mean of the student bands centred in its range (HyperKD's alignment)."""
    s, t = _sensor(source), _sensor(target)
    gaps = missing_bands(s, t, centre_covered(s, t), missing, "spectral-range", "use aligner srf, or ")
    return MatrixAligner(s, t, spectral_range_weights(s, t, gaps), "spectral-range", missing, gaps)


@register("aligner", "srf")
def srf(
    source: Sensor | str, target: Sensor | str, cutoff: float = 3.0, missing: str = "refuse"
) -> MatrixAligner:
    """Gaussian spectral-response weights from centre + FWHM, normalised per teacher band."""
    s, t = _sensor(source), _sensor(target)
    gaps = missing_bands(s, t, range_covered(s, t), missing, "srf")
    return MatrixAligner(s, t, srf_weights(s, t, cutoff, gaps), "srf", missing, gaps)


@register("aligner", "learned")
class LearnedAligner(Aligner):
    """Trainable 1x1 convolution, initialised to the ``spectral-range`` weights (bias 0).

    Trained through the frozen teacher by the distillation terms, so the teacher cannot
    be run under inference mode (nor its features cached) when this aligner is used.
    """

    def __init__(self, source: Sensor | str, target: Sensor | str, missing: str = "refuse") -> None:
        super().__init__()
        self.source, self.target = _sensor(source), _sensor(target)
        self.missing = missing
        self.gaps = missing_bands(
            self.source, self.target, range_covered(self.source, self.target), missing, "learned"
        )
        w = spectral_range_weights(self.source, self.target, self.gaps)
        self.proj = nn.Conv2d(self.source.num_bands, self.target.num_bands, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[:, :, None, None])
            self.proj.bias.zero_()
        keep = torch.ones(self.target.num_bands)
        keep[self.gaps] = 0.0  # uncovered bands stay the fixed fill, never learned from other bands
        self.register_buffer("keep", keep, persistent=False)
        fill = _fill_values(self.target, self.gaps)
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32), persistent=False)

    def band_report(self) -> dict[str, Any]:
        """The missing-band policy and the teacher bands it applied to (``RUN/distill.json``)."""
        return band_report(self)

    @property
    def weight(self) -> Tensor:
        """The current ``(Ct, Cs)`` band-weight matrix."""
        return self.proj.weight[:, :, 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        if not self.gaps:
            return self.proj(x)
        keep = self.keep.to(x.dtype)[None, :, None, None]
        return self.proj(x) * keep + self.fill.to(x.dtype)[None, :, None, None]
