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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError
from hyperkd.core.interfaces import Aligner
from hyperkd.core.registry import register
from hyperkd.core.sensors import FWHM_TO_SIGMA, Sensor, get_sensor


def _sensor(s: Sensor | str) -> Sensor:
    return get_sensor(s) if isinstance(s, str) else s


def spectral_range_weights(source: Sensor, target: Sensor) -> np.ndarray:
    """``(Ct, Cs)`` weights: each target band averages the source bands centred in its range."""
    centers = np.asarray(source.centers_nm, dtype=np.float64)
    w = np.zeros((target.num_bands, source.num_bands), dtype=np.float64)
    for t, (band, (lo, hi)) in enumerate(zip(target.band_names, target.ranges_nm, strict=True)):
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


def srf_weights(source: Sensor, target: Sensor, cutoff: float = 3.0) -> np.ndarray:
    """``(Ct, Cs)`` Gaussian-SRF weights (see module docs), rows summing to 1."""
    cs = np.asarray(source.centers_nm, dtype=np.float64)[None, :]
    ss = np.asarray(source.fwhms_nm, dtype=np.float64)[None, :] * FWHM_TO_SIGMA
    ct = np.asarray(target.centers_nm, dtype=np.float64)[:, None]
    st = np.asarray(target.fwhms_nm, dtype=np.float64)[:, None] * FWHM_TO_SIGMA
    var = st**2 + ss**2
    d2 = (cs - ct) ** 2
    w = np.exp(-d2 / (2 * var))
    w[d2 > (cutoff**2) * var] = 0.0
    sums = w.sum(1)
    for t in np.flatnonzero(sums <= 0):
        raise HyperKDError(
            f"aligner srf: {target.name} band {target.band_names[t]} (centre {ct[t, 0]:g} nm) has no "
            f"{source.name} band within {cutoff:g} sigma; raise cutoff or check the band selection"
        )
    return w / sums[:, None]


class MatrixAligner(Aligner):
    """A fixed ``(Ct, Cs)`` band-weight matrix applied per pixel.

    The matrix is a non-persistent buffer: it is recomputed from the band tables, so
    checkpoints do not depend on it.
    """

    def __init__(self, source: Sensor | str, target: Sensor | str, weights: np.ndarray, method: str) -> None:
        super().__init__()
        self.source, self.target = _sensor(source), _sensor(target)
        self.method = method
        self.register_buffer("weight", torch.as_tensor(weights, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise HyperKDError(
                f"aligner {self.method}: expects (B, {self.weight.shape[1]}, H, W) {self.source.name} "
                f"reflectance, got {tuple(x.shape)}"
            )
        return torch.einsum("ts,bshw->bthw", self.weight.to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"{self.method}: {self.source.name} ({self.source.num_bands}) -> {self.target.name} ({self.target.num_bands})"


@register("aligner", "spectral-range")
def spectral_range(source: Sensor | str, target: Sensor | str) -> MatrixAligner:
    """Teacher band = mean of the student bands centred in its range (HyperKD's alignment)."""
    s, t = _sensor(source), _sensor(target)
    return MatrixAligner(s, t, spectral_range_weights(s, t), "spectral-range")


@register("aligner", "srf")
def srf(source: Sensor | str, target: Sensor | str, cutoff: float = 3.0) -> MatrixAligner:
    """Gaussian spectral-response weights from centre + FWHM, normalised per teacher band."""
    s, t = _sensor(source), _sensor(target)
    return MatrixAligner(s, t, srf_weights(s, t, cutoff), "srf")


@register("aligner", "learned")
class LearnedAligner(Aligner):
    """Trainable 1x1 convolution, initialised to the ``spectral-range`` weights (bias 0).

    Trained through the frozen teacher by the distillation terms, so the teacher cannot
    be run under inference mode (nor its features cached) when this aligner is used.
    """

    def __init__(self, source: Sensor | str, target: Sensor | str) -> None:
        super().__init__()
        self.source, self.target = _sensor(source), _sensor(target)
        w = spectral_range_weights(self.source, self.target)
        self.proj = nn.Conv2d(self.source.num_bands, self.target.num_bands, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[:, :, None, None])
            self.proj.bias.zero_()

    @property
    def weight(self) -> Tensor:
        """The current ``(Ct, Cs)`` band-weight matrix."""
        return self.proj.weight[:, :, 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)
