"""Synthetic scenes for any registered sensor: the embedded default data set.

hyperkd must run its main job with nothing downloaded, so it can *make* data: scenes of
fields, towns, roads and water built from real material spectra (see
:mod:`hyperkd.synth.spectral_library`), rendered for whatever sensor is asked for, with the
labels the downstream tasks need. The data are **synthetic**: every store written here is
marked so in its manifest and in ``hyperkd data info``; nothing learned from them says how a
model does on real imagery.

How a scene is made (details in ``docs/synthetic-data.md``):

1. **Layout** (:func:`generate_scene`). A scene is a set of *units* — field parcels in
   rotated strips, urban lots and streets, rural roads, a lake or river — drawn on a grid
   ``supersample`` times finer than the output pixels. Each output pixel takes the (up to
   three) units covering it with their *areal fractions*: parcel edges, shorelines and
   roads narrower than a pixel give linearly mixed pixels, as in real imagery.
2. **Materials.** Each unit mixes up to four library spectra (canopy A, canopy B,
   ground/soil, residue/litter; or roof and pavement; or clear and turbid water) with
   weights that vary smoothly inside the unit (cover, canopy mix, soil brightness,
   illumination) and with fine texture (tree crowns). Every pixel is therefore a linear
   mixture ``sum_q w_q(x) * spectrum_{k_q}`` over at most 12 (unit, component) slots.
3. **Rendering** (:func:`render`). The mixture is one high-spectral-resolution cube on the
   library's 10 nm grid (:meth:`Scene.spectra`). A sensor sees it through its spectral
   response functions: Gaussians from centre and FWHM, or flat-top over a band's explicit
   range (HLS), evaluated on a 0.5 nm grid. Because convolution is linear, rendering the
   endmembers and mixing afterwards is *exactly* the same as convolving the cube, only
   cheaper, so the EnMAP and HLS renderings of a scene are consistent by construction.
   A Gaussian point-spread function and per-band noise (read noise + signal-dependent shot
   noise, higher in atmospheric absorption bands; pushbroom column striping) follow.
4. **Labels.** ``landcover`` (the majority unit's class), ``croptype`` (the majority unit's
   crop, ``non-crop`` elsewhere) and ``soc`` (soil organic carbon, g/kg, derived from the
   soil spectrum's albedo: darker soils carry more carbon; NaN over water and built-up
   land). See :class:`SocModel`.

Everything is deterministic by ``(seed, chip index)``: chip ``i`` is the same whatever the
number of chips, and a band's noise depends only on the seed, chip, sensor and band name,
so a band selection does not change the values of the bands it keeps.

The knobs live in :class:`SceneConfig` (classes, crops, regions, water, urban, soil carbon)
and :class:`Instrument` (spectral response shape, PSF, noise); both serialise to plain
dicts / YAML so stores record exactly how they were made.

For distillation experiments, :meth:`SceneConfig.preset` names configs (``kd-teacher``,
``kd-student``, ``kd-eval``) with a crop pair that only spatial context separates
(:data:`KD_TWIN_CROPS`, via ``VegetationSpec.patchiness``) and crops / regions that only
the teacher's and the evaluation sets contain; :func:`kd_stores` writes the three stores.
They are built so that a teacher's knowledge *can* matter, which is no evidence that it
does (docs/synthetic-data.md).

The package, by stage (each module's docstring says more):

- :mod:`~hyperkd.synth.config`: :class:`SceneConfig` and its specs (vegetation, regions,
  urban, water, soil carbon), their defaults, explicit value checks and the named presets;
- :mod:`~hyperkd.synth.serial`: configs to and from plain dicts / YAML, by the fields' types;
- :mod:`~hyperkd.synth.instrument`: :class:`Instrument` (response shape, PSF, noise);
- :mod:`~hyperkd.synth.draws`: keyed random streams and smooth random fields;
- :mod:`~hyperkd.synth.layout`: scene geometry (parcels, towns, roads, water) and areal fractions;
- :mod:`~hyperkd.synth.units`: each unit's endmembers and mixing recipe, soil carbon;
- :mod:`~hyperkd.synth.scene`: :func:`generate_scene` and :class:`Scene` (mixing weights, labels);
- :mod:`~hyperkd.synth.render`: :func:`spectral_response` and :func:`render`;
- :mod:`~hyperkd.synth.write`: :func:`synthesize` (chip stores, resumable, several sensors);
- :mod:`~hyperkd.synth.presets`: :func:`kd_stores` (the distillation experiment's stores);
- :mod:`~hyperkd.synth.datamodule`: a Lightning data module that synthesises its store in
  ``prepare_data`` (imported on its own: it needs Lightning);
- :mod:`~hyperkd.synth.spectral_library`, :mod:`~hyperkd.synth.separability`: the spectra
  scenes are made of, and how separable the presets' crops are.

Everything listed in ``__all__`` is importable from ``hyperkd.synth`` itself.
"""

from hyperkd.synth.config import (
    DEFAULT_BARREN,
    DEFAULT_CROPS,
    DEFAULT_FOREST,
    DEFAULT_GRASSLAND,
    DEFAULT_REGIONS,
    KD_STUDENT_ABSENT,
    KD_TWIN_CROPS,
    LANDCOVER_CLASSES,
    NON_CROP,
    PARCEL_COVERS,
    PRESETS,
    Range,
    RegionSpec,
    SceneConfig,
    SocModel,
    UrbanSpec,
    VegetationSpec,
    WaterSpec,
)
from hyperkd.synth.instrument import DEFAULT_SNR, Instrument, atmospheric_transmittance
from hyperkd.synth.presets import KD_ROLES, KD_STUDENT_SNR_SCALE, kd_stores
from hyperkd.synth.render import render, spectral_response
from hyperkd.synth.scene import SYNTH_VERSION, Scene, generate_scene
from hyperkd.synth.write import SynthTarget, resolve_sensor, synthesize

__all__ = [
    "DEFAULT_BARREN",
    "DEFAULT_CROPS",
    "DEFAULT_FOREST",
    "DEFAULT_GRASSLAND",
    "DEFAULT_REGIONS",
    "DEFAULT_SNR",
    "KD_ROLES",
    "KD_STUDENT_ABSENT",
    "KD_STUDENT_SNR_SCALE",
    "KD_TWIN_CROPS",
    "LANDCOVER_CLASSES",
    "NON_CROP",
    "PARCEL_COVERS",
    "PRESETS",
    "SYNTH_VERSION",
    "Instrument",
    "Range",
    "RegionSpec",
    "Scene",
    "SceneConfig",
    "SocModel",
    "SynthTarget",
    "UrbanSpec",
    "VegetationSpec",
    "WaterSpec",
    "atmospheric_transmittance",
    "generate_scene",
    "kd_stores",
    "render",
    "resolve_sensor",
    "spectral_response",
    "synthesize",
]
