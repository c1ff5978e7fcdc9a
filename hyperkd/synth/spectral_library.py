"""Real material spectra for synthetic scenes, and a small water-reflectance model.

Synthetic scenes (:mod:`hyperkd.synth`) are mixtures of *measured or physically
modelled* spectra, never of invented curves. They come from **earthlib** (C. Anderson,
MIT licence, https://github.com/earth-chris/earthlib), whose ``full_library`` ships 7,261
reflectance spectra at 10 nm from 400 to 2450 nm:

* 4,185 soils (4,168 from the ICRAF-ISRIC world soil spectral library, with the sampling
  site's latitude/longitude), plus sand, gravel and dirt;
* ~890 built surfaces (roofing: composition shingle, tiles, metal, wood shingle; roads,
  asphalt, parking lots, sidewalks, driveways);
* non-photosynthetic vegetation (litter, bark, wood);
* 2,000 PROSAIL canopy spectra whose names record their leaf-area index (LAI), leaf mass
  per area (LMA, g/cm2), chlorophyll (CHL, ug/cm2) and leaf structure (N); crops and other
  vegetation are drawn from boxes in that parameter space.

earthlib omits the two atmospheric water-vapour windows (1360-1450 nm and 1800-1950 nm),
where surface reflectance cannot be measured from orbit. This module puts the library on a
regular 10 nm grid and fills those windows by linear interpolation between their edges
(:attr:`SpectralLibrary.filled` marks them). Sensor bands there (EnMAP's bad bands) are
therefore smooth but not physical; hyperkd's default EnMAP selection drops them.

earthlib has no water. :func:`water_reflectance` models it with a standard semi-analytical
ocean-colour model (Gordon et al. 1988; Lee et al. 2002) from pure-water absorption,
phytoplankton, non-algal particles and CDOM; see its docstring.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hyperkd.core.errors import DataError

GRID_START_NM = 400.0
GRID_STOP_NM = 2450.0
GRID_STEP_NM = 10.0

CANOPY_PARAMS = ("lai", "lma", "chl", "n")
"""Order of the columns of :attr:`SpectralLibrary.canopy_params` (PROSAIL leaf/canopy inputs)."""

_CANOPY_NAME = re.compile(
    r"^v-LAI-(?P<lai>[0-9.eE+-]+)-LMA-(?P<lma>[0-9.eE+-]+)-CHL-(?P<chl>[0-9.eE+-]+)-N-(?P<n>[0-9.eE+-]+)$"
)


def library_grid() -> np.ndarray:
    """The regular wavelength grid (nm) every library spectrum is resampled to: 400..2450 by 10."""
    n = round((GRID_STOP_NM - GRID_START_NM) / GRID_STEP_NM) + 1
    return GRID_START_NM + GRID_STEP_NM * np.arange(n, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SpectralLibrary:
    """Reflectance spectra on a common wavelength grid, with the metadata scenes need.

    ``spectra`` is (N, L) float32 surface reflectance on ``wavelengths_nm`` (L,).
    ``material`` is earthlib's most specific class (LEVEL_3: ``soil``, ``canopy``,
    ``comp_shingle``, ``road`` ...), ``group`` its coarse class (LEVEL_2: ``bare``,
    ``vegetation``, ``built``, ``npv`` ...). ``lat``/``lon`` are sampling sites (NaN when
    unknown). ``canopy_params`` holds (LAI, LMA, CHL, N) for PROSAIL canopies, NaN elsewhere.
    """

    wavelengths_nm: np.ndarray
    spectra: np.ndarray
    names: tuple[str, ...]
    material: np.ndarray
    group: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    canopy_params: np.ndarray
    filled: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, materials: str | Sequence[str]) -> np.ndarray:
        """Indices of every spectrum whose material is one of ``materials``."""
        if isinstance(materials, str):
            materials = (materials,)
        idx = np.flatnonzero(np.isin(self.material, list(materials)))
        if idx.size == 0:
            raise DataError(
                f"spectral library ({self.source}) has no spectra of material {list(materials)}; "
                f"known materials: {', '.join(sorted(set(self.material.tolist())))}"
            )
        return idx

    def canopies(
        self,
        lai: tuple[float, float],
        chl: tuple[float, float],
        lma: tuple[float, float],
        n: tuple[float, float],
    ) -> np.ndarray:
        """Indices of PROSAIL canopy spectra whose parameters lie inside all four closed ranges."""
        p = self.canopy_params
        ok = np.isfinite(p[:, 0])
        for col, (lo, hi) in enumerate((lai, lma, chl, n)):
            ok &= (p[:, col] >= lo) & (p[:, col] <= hi)
        return np.flatnonzero(ok)

    def soils(self, boxes: Sequence[tuple[float, float, float, float]] | None = None) -> np.ndarray:
        """Indices of soil spectra; with ``boxes`` only those sampled inside one of the
        (lat_min, lat_max, lon_min, lon_max) boxes (degrees)."""
        idx = self.indices("soil")
        if not boxes:
            return idx
        lat, lon = self.lat[idx], self.lon[idx]
        keep = np.zeros(idx.size, dtype=bool)
        for la0, la1, lo0, lo1 in boxes:
            keep |= (lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
        return idx[keep]


def _parse_canopy(name: str) -> tuple[float, float, float, float]:
    m = _CANOPY_NAME.match(name)
    if m is None:
        return (math.nan,) * 4  # type: ignore[return-value]
    return (float(m["lai"]), float(m["lma"]), float(m["chl"]), float(m["n"]))


def resample_to_grid(
    wavelengths_nm: np.ndarray, spectra: np.ndarray, grid_nm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate spectra (N, L_in) onto ``grid_nm``.

    Grid points more than 1.5 input steps from the nearest input sample (the library's
    water-vapour gaps) are reported in the returned ``filled`` mask.
    """
    order = np.argsort(wavelengths_nm)
    wl = np.asarray(wavelengths_nm, dtype=np.float64)[order]
    sp = np.asarray(spectra, dtype=np.float64)[:, order]
    pos = np.searchsorted(wl, grid_nm).clip(1, len(wl) - 1)
    lo, hi = wl[pos - 1], wl[pos]
    t = ((grid_nm - lo) / (hi - lo)).clip(0.0, 1.0)
    out = sp[:, pos - 1] * (1.0 - t) + sp[:, pos] * t
    step = float(np.median(np.diff(wl)))
    nearest = np.minimum(np.abs(grid_nm - lo), np.abs(grid_nm - hi))
    filled = nearest > 0.5 * step
    return out.astype(np.float32), filled


def _usable(spectra: np.ndarray) -> np.ndarray:
    """Spectra fit to build scenes from: finite, within [0, 1], not clipped to zero."""
    finite = np.isfinite(spectra).all(axis=1)
    in_range = (np.nan_to_num(spectra, nan=-1.0) >= 0.0).all(axis=1) & (
        np.nan_to_num(spectra, nan=2.0) <= 1.0
    ).all(axis=1)
    zeros = (spectra <= 0.0).mean(axis=1) < 0.02
    return finite & in_range & zeros


@functools.cache
def earthlib_library() -> SpectralLibrary:
    """earthlib's full library (7,261 spectra) on the 10 nm grid; loaded once per process.

    Spectra that are not finite, leave [0, 1] or are clipped to zero in more than 2% of
    their samples are dropped (a handful of litter and paint spectra).
    """
    try:
        import earthlib
    except ImportError as exc:  # pragma: no cover - earthlib is a hard dependency
        raise DataError(
            f"synthetic scenes need the earthlib spectral library ({exc}); `pip install earthlib`"
        ) from None
    lib = earthlib.full_library
    meta = lib.metadata
    if meta is None or len(meta) != len(lib.data):
        raise DataError("earthlib's full_library has no metadata matching its spectra; reinstall earthlib")
    centers = np.asarray(lib.sensor.band_centers, dtype=np.float64)
    if str(lib.sensor.wavelength_unit).lower().startswith("micro"):
        centers = centers * 1000.0
    grid = library_grid()
    spectra, filled = resample_to_grid(centers, np.asarray(lib.data), grid)
    keep = _usable(np.asarray(lib.data, dtype=np.float64))
    names = [str(n) for n in lib.names]
    params = np.array([_parse_canopy(n) for n in names], dtype=np.float64)
    version = getattr(earthlib, "__version__", "?")
    return SpectralLibrary(
        wavelengths_nm=grid,
        spectra=np.ascontiguousarray(spectra[keep]),
        names=tuple(n for n, k in zip(names, keep, strict=True) if k),
        material=meta["LEVEL_3"].astype(str).to_numpy()[keep],
        group=meta["LEVEL_2"].astype(str).to_numpy()[keep],
        lat=meta["LAT"].astype(float).to_numpy()[keep],
        lon=meta["LON"].astype(float).to_numpy()[keep],
        canopy_params=params[keep],
        filled=filled,
        source=f"earthlib {version} full_library (MIT)",
    )


# --- water ------------------------------------------------------------------------------------

# Pure-water absorption a_w (1/m). 400-700 nm: Pope & Fry (1997), rounded. Beyond 700 nm:
# rounded values after Kou et al. (1993) and Hale & Querry (1973). For a_w > ~10 1/m the
# modelled reflectance is ~0 whatever the exact value, so SWIR precision is immaterial here.
_AW_KNOTS_NM = np.array(
    [
        400,
        420,
        440,
        460,
        480,
        500,
        520,
        540,
        560,
        580,
        600,
        620,
        640,
        660,
        680,
        700,
        720,
        740,
        760,
        780,
        800,
        850,
        900,
        950,
        1000,
        1050,
        1100,
        1150,
        1200,
        1300,
        1400,
        1450,
        1500,
        1600,
        1700,
        1800,
        1900,
        1950,
        2000,
        2100,
        2200,
        2300,
        2400,
        2450,
    ],
    dtype=np.float64,
)
_AW_KNOTS = np.array(
    [
        0.0066,
        0.0045,
        0.0064,
        0.0098,
        0.0127,
        0.0204,
        0.0409,
        0.0474,
        0.0619,
        0.0896,
        0.2224,
        0.2755,
        0.3108,
        0.41,
        0.465,
        0.624,
        1.23,
        2.53,
        2.56,
        2.36,
        2.02,
        4.3,
        6.8,
        40.0,
        36.0,
        15.0,
        18.0,
        100.0,
        105.0,
        120.0,
        1500.0,
        3100.0,
        1800.0,
        670.0,
        520.0,
        900.0,
        12000.0,
        11000.0,
        7000.0,
        2700.0,
        1900.0,
        2600.0,
        5000.0,
        7000.0,
    ],
    dtype=np.float64,
)


def pure_water_absorption(wavelengths_nm: np.ndarray) -> np.ndarray:
    """Absorption coefficient of pure water (1/m), log-linearly interpolated between knots."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    return np.exp(np.interp(wl, _AW_KNOTS_NM, np.log(_AW_KNOTS)))


def water_reflectance(
    wavelengths_nm: np.ndarray,
    *,
    chl: float = 2.0,
    tsm: float = 2.0,
    cdom_440: float = 0.05,
    surface: float = 0.004,
) -> np.ndarray:
    """Surface reflectance of an optically deep water body (unitless, like the library).

    A semi-analytical ocean-colour model:
    ``u = b_b / (a + b_b)``, sub-surface ``r_rs = 0.0949 u + 0.0794 u^2`` (Gordon et al. 1988),
    above-surface ``R_rs = 0.52 r_rs / (1 - 1.7 r_rs)`` (Lee et al. 2002) and reflectance
    ``pi * R_rs + surface``. Absorption ``a`` is pure water (see :func:`pure_water_absorption`)
    + phytoplankton (``chl`` mg/m3; ``0.06 chl^0.65`` times a two-peak 440/675 nm shape, a
    simplification of Bricaud et al. 1995) + non-algal particles (``0.03 tsm`` 1/m at 440 nm,
    exponential slope 0.011/nm) + CDOM (``cdom_440`` 1/m, slope 0.015/nm). Backscatter is
    pure water (``0.00111 (500/lambda)^4.32``) + particles (``0.015 tsm (550/lambda)^0.5``,
    ``tsm`` in g/m3). ``surface`` is a spectrally flat residual of sky and sun glint after
    atmospheric correction. The result is bright-ish in blue/green for turbid water, near
    ``surface`` in the NIR and SWIR, where water absorbs almost everything.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    a_ph_shape = (
        np.exp(-(((wl - 440.0) / 35.0) ** 2))
        + 0.45 * np.exp(-(((wl - 675.0) / 12.0) ** 2))
        + 0.25 * np.exp(-(((wl - 490.0) / 45.0) ** 2))
    )
    a = (
        pure_water_absorption(wl)
        + 0.06 * max(chl, 0.0) ** 0.65 * a_ph_shape
        + 0.03 * max(tsm, 0.0) * np.exp(-0.011 * (wl - 440.0))
        + max(cdom_440, 0.0) * np.exp(-0.015 * (wl - 440.0))
    )
    bb = 0.00111 * (500.0 / wl) ** 4.32 + 0.015 * max(tsm, 0.0) * (550.0 / wl) ** 0.5
    u = bb / (a + bb)
    r_rs = 0.0949 * u + 0.0794 * u**2
    rrs = 0.52 * r_rs / (1.0 - 1.7 * r_rs)
    return (math.pi * rrs + surface).astype(np.float32)
