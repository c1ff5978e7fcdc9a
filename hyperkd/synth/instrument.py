"""How a sensor observes a scene: spectral response shape, optics blur and noise (:class:`Instrument`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.core.sensors import Sensor
from hyperkd.synth.serial import from_plain, to_plain

DEFAULT_SNR: tuple[tuple[float, float], ...] = (
    (400.0, 150.0),
    (450.0, 300.0),
    (550.0, 420.0),
    (700.0, 380.0),
    (850.0, 300.0),
    (950.0, 200.0),
    (1000.0, 170.0),
    (1250.0, 220.0),
    (1650.0, 180.0),
    (2200.0, 120.0),
    (2450.0, 70.0),
)
"""SNR at 30% reflectance for an 8 nm band outside absorption features, loosely after
EnMAP's requirements (VNIR > 400 near 500 nm, SWIR > 170 near 2200 nm; Guanter et al. 2015)."""

# Coarse atmospheric absorption features (centre nm, depth, width nm): O2-A and water vapour.
_ABSORPTION = (
    (762.0, 0.6, 4.0),
    (820.0, 0.15, 12.0),
    (940.0, 0.55, 22.0),
    (1135.0, 0.65, 28.0),
    (1380.0, 0.99, 55.0),
    (1870.0, 0.99, 75.0),
    (2500.0, 0.6, 90.0),
)


@dataclass(frozen=True)
class Instrument:
    """How a sensor observes a scene: spectral response shape, optics blur and noise.

    ``srf``: ``"auto"`` uses a flat-top response over a band's explicit range where the
    sensor defines one (HLS's multispectral bands are close to flat-topped), a Gaussian from
    centre and FWHM otherwise; ``"gaussian"`` / ``"range"`` force one shape.
    ``psf_sigma_px``: Gaussian point-spread function (pixels; 0.4 ~ FWHM of one pixel).
    Noise per band, in reflectance: ``sigma = rho_ref / (SNR_b * T_b) * sqrt(read_fraction +
    (1 - read_fraction) * rho * T_b / rho_ref)`` — read noise plus shot noise that grows
    with signal. ``SNR_b`` interpolates ``snr`` at the band centre, scaled by
    ``(fwhm / reference_fwhm_nm) ** bandwidth_exponent`` (wider bands collect more
    photons), capped at ``max_snr``, times ``snr_scale``. ``T_b`` is a coarse atmospheric
    transmittance (O2 and water-vapour features) averaged over the band, so absorption
    bands are noisy as in real L2A products. ``stripe`` is the relative std of per-column
    gain (pushbroom striping). ``noise=False`` renders noise-free.
    """

    srf: str = "auto"
    psf_sigma_px: float = 0.4
    noise: bool = True
    snr: tuple[tuple[float, float], ...] = DEFAULT_SNR
    snr_scale: float = 1.0
    reference_reflectance: float = 0.3
    reference_fwhm_nm: float = 8.0
    bandwidth_exponent: float = 0.5
    max_snr: float = 350.0
    read_fraction: float = 0.25
    atmosphere: bool = True
    stripe: float = 0.002

    def __post_init__(self) -> None:
        if self.srf not in ("auto", "gaussian", "range"):
            raise DataError(f"instrument: srf must be auto, gaussian or range, got {self.srf!r}")
        if self.psf_sigma_px < 0:
            raise DataError(f"instrument: psf_sigma_px must be >= 0, got {self.psf_sigma_px}")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise DataError(f"instrument: read_fraction must be within [0, 1], got {self.read_fraction}")
        if self.snr_scale <= 0 or self.max_snr <= 0:
            raise DataError("instrument: snr_scale and max_snr must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-friendly dict; :meth:`from_dict` rebuilds an equal instrument."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Instrument:
        """Build an instrument from a (possibly partial) dict over the defaults."""
        return from_plain(cls, d, "instrument")

    def band_snr(self, sensor: Sensor) -> np.ndarray:
        """SNR of each band at the reference reflectance outside absorption (see class doc)."""
        knots = np.asarray(self.snr, dtype=np.float64)
        c = np.asarray(sensor.centers_nm, dtype=np.float64)
        w = np.asarray(sensor.fwhms_nm, dtype=np.float64)
        base = np.interp(c, knots[:, 0], knots[:, 1])
        snr = base * (w / self.reference_fwhm_nm) ** self.bandwidth_exponent
        return np.minimum(snr, self.max_snr) * self.snr_scale


def atmospheric_transmittance(wavelengths_nm: np.ndarray) -> np.ndarray:
    """A coarse two-way transmittance: 1 minus Gaussian O2 / H2O features, floored at 0.02.

    Only used to make absorption bands noisier; not an atmosphere model.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    t = np.ones_like(wl)
    for c, depth, width in _ABSORPTION:
        t *= 1.0 - depth * np.exp(-(((wl - c) / width) ** 2))
    return np.maximum(t, 0.02)
