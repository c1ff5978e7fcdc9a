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

Aligners are spectral; where the teacher's sensor has another ground sampling distance than the
student's, :class:`GroundMatch` does the spatial part of showing the teacher the student's scene:
the aligned chip is resampled to the teacher's GSD over the same ground (footprint weights,
:mod:`hyperkd.core.ground`), and the teacher's token grid is pooled onto the student's by ground
position (``docs/any-sensor.md``, "Teacher and student at different resolutions").

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
from hyperkd.core.ground import footprint_weights, pixels_on
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


GROUND_MATCH = ("auto", "off")
"""``distill.ground_match``: ``auto`` matches by ground when the two GSDs differ; ``off`` hands the
teacher the student's pixels as if they were its own (what hyperkd did before it knew GSDs)."""


class GroundMatch(nn.Module):
    """Teacher input and token grid matched to a student chip by ground position.

    The student's ``size`` px chip at ``student_gsd`` m covers ``size * student_gsd`` metres; the
    teacher sees that same ground at its own GSD, ``teacher_size`` px (:meth:`pixels`: footprint
    resampling, so from a coarser student each teacher pixel takes the student pixel it lies in,
    and from a finer one the area-weighted mean of those in its footprint). Its tokens
    (``teacher_patch * teacher_gsd`` m) are then pooled onto the student's tokens
    (``student_patch * student_gsd`` m) by footprint weights (:meth:`tokens`): a student token gets
    the area-weighted mean of the teacher tokens overlapping its ground, non-integer ratios
    included. Both grids start at the chip's top-left corner. Weights are non-persistent buffers,
    recomputed from the sizes, so checkpoints do not depend on them.
    """

    pixel_weight: Tensor
    token_weight: Tensor

    def __init__(
        self, size: int, student_gsd: float, student_patch: int, teacher_gsd: float, teacher_patch: int
    ) -> None:
        super().__init__()
        what = "distill ground matching"
        hint = "; or set distill.ground_match=off (the teacher then sees the student's pixels as its own)"
        try:
            tsize = pixels_on(size, student_gsd, teacher_gsd, what)
        except HyperKDError as exc:
            raise HyperKDError(f"{exc}{hint}") from None
        if tsize % teacher_patch:
            raise HyperKDError(
                f"{what}: the student's {size} px chip at {student_gsd:g} m is {tsize} px at the teacher's "
                f"{teacher_gsd:g} m, not a multiple of the teacher's {teacher_patch} px patch; use a chip "
                f"size whose ground ({size * student_gsd:g} m now) is a multiple of {teacher_patch * teacher_gsd:g} m{hint}"
            )
        self.size, self.teacher_size = int(size), int(tsize)
        self.student_gsd, self.teacher_gsd = float(student_gsd), float(teacher_gsd)
        self.student_token_m = student_patch * self.student_gsd
        self.teacher_token_m = teacher_patch * self.teacher_gsd
        self.student_grid = size // student_patch
        self.teacher_grid = tsize // teacher_patch
        pix = footprint_weights(size, student_gsd, tsize, teacher_gsd, what)
        tok = footprint_weights(
            self.teacher_grid, self.teacher_token_m, self.student_grid, self.student_token_m, what
        )
        self.register_buffer("pixel_weight", torch.as_tensor(pix, dtype=torch.float32), persistent=False)
        self.register_buffer("token_weight", torch.as_tensor(tok, dtype=torch.float32), persistent=False)

    def pixels(self, x: Tensor) -> Tensor:
        """``(B, C, size, size)`` at the student's GSD -> ``(B, C, teacher_size, teacher_size)``, same ground."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise HyperKDError(
                f"ground matching expects (B, C, {self.size}, {self.size}) student chips, got {tuple(x.shape)}"
            )
        w = self.pixel_weight.to(x.dtype)
        return torch.matmul(torch.matmul(w, x), w.T)

    def tokens(self, tokens: Tensor, ids_keep: Tensor) -> Tensor:
        """Teacher tokens ``(B, Ht*Wt, D)`` pooled onto the student's token grid and gathered at the
        student's visible patches ``ids_keep`` ``(B, N_keep)``: ``(B, N_keep, D)``."""
        b, n, d = tokens.shape
        g = self.teacher_grid
        if n != g * g:
            raise HyperKDError(f"teacher gave {n} tokens, expected a {g}x{g} grid ({g * g})")
        w = self.token_weight.to(tokens.dtype)
        fmap = tokens.transpose(1, 2).reshape(b, d, g, g)
        pooled = torch.matmul(torch.matmul(w, fmap), w.T).flatten(2).transpose(1, 2)
        return torch.gather(pooled, 1, ids_keep[..., None].expand(-1, -1, d))

    def describe(self) -> dict[str, Any]:
        """What was matched (``RUN/distill.json``'s ``ground``)."""
        return {
            "matched": True,
            "ground_m": self.size * self.student_gsd,
            "student": {"gsd_m": self.student_gsd, "chip_px": self.size, "token_m": self.student_token_m},
            "teacher": {
                "gsd_m": self.teacher_gsd,
                "input_px": self.teacher_size,
                "token_m": self.teacher_token_m,
            },
            "pixels": "footprint (area-weighted) resampling of the aligned chip to the teacher's GSD",
            "tokens": "teacher tokens pooled onto each student token's ground footprint (area weights)",
        }

    def extra_repr(self) -> str:
        return (
            f"{self.size} px @ {self.student_gsd:g} m -> {self.teacher_size} px @ {self.teacher_gsd:g} m; "
            f"tokens {self.teacher_token_m:g} m -> {self.student_token_m:g} m"
        )


def ground_match_for(
    student_sensor: Sensor,
    size: int,
    student_patch: int,
    teacher_sensor: Sensor,
    teacher_patch: int,
    mode: str = "auto",
) -> GroundMatch | None:
    """The :class:`GroundMatch` a distillation needs, or ``None`` (same GSD, or ``mode="off"``)."""
    if mode not in GROUND_MATCH:
        raise HyperKDError(f"distill.ground_match must be one of {', '.join(GROUND_MATCH)}, got {mode!r}")
    gs, gt = float(student_sensor.gsd_m), float(teacher_sensor.gsd_m)
    if mode == "off" or np.isclose(gs, gt, rtol=1e-9):
        return None
    match = GroundMatch(size, gs, student_patch, gt, teacher_patch)
    log.info("distill: teacher and student matched by ground position: %s", match.extra_repr())
    return match
