"""Writing synthetic chip stores: :func:`synthesize` renders the same scenes for one or more sensors."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.ground import pixels_on
from hyperkd.core.progress import progress_enabled, rich_progress
from hyperkd.core.sensors import Sensor, get_sensor
from hyperkd.data.store import ChipStore, ChipStoreWriter, nbytes_per_chip
from hyperkd.synth.config import SceneConfig
from hyperkd.synth.instrument import Instrument
from hyperkd.synth.render import band_response, extended_bands, labels_at, render
from hyperkd.synth.scene import SYNTH_VERSION, generate_scene
from hyperkd.synth.spectral_library import earthlib_library

log = logging.getLogger(__name__)


def _band_list(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])} ... {', '.join(names[-2:])}"


@dataclass(frozen=True)
class SynthTarget:
    """One store to write: the sensor (with its band selection), the folder, the instrument."""

    sensor: Sensor
    out: Path
    instrument: Instrument = field(default_factory=Instrument)


def resolve_sensor(spec: str | Sensor, selection: str | Sequence[str] | None = "default") -> Sensor:
    """A sensor from a registered name (``"enmap"``, ``"enmap:all"``) or a :class:`Sensor`.

    A ``NAME:SELECTION`` string overrides ``selection``.
    """
    if isinstance(spec, Sensor):
        return spec.select(selection)
    name, _, sel = str(spec).partition(":")
    return get_sensor(name, selection=sel or selection)


def _targets(
    sensor: str | Sensor,
    out: str | Path,
    selection: str | Sequence[str] | None,
    also: Mapping[str, str | Path] | Sequence[tuple[str | Sensor, str | Path]] | None,
    instrument: Instrument | Mapping[str, Instrument] | None,
) -> list[SynthTarget]:
    pairs: list[tuple[Sensor, Path]] = [(resolve_sensor(sensor, selection), Path(out))]
    items = list(also.items()) if isinstance(also, Mapping) else list(also or [])
    for spec, path in items:
        pairs.append((resolve_sensor(spec, "default"), Path(path)))
    paths = [p.resolve() for _, p in pairs]
    if len(set(paths)) != len(paths):
        raise DataError("synth: every store needs its own output folder; two of them share one")
    targets = []
    for sen, path in pairs:
        if isinstance(instrument, Mapping):
            ins = instrument.get(sen.name, Instrument())
        else:
            ins = instrument or Instrument()
        targets.append(SynthTarget(sen, path, ins))
    return targets


@dataclass(frozen=True)
class _ChipMaker:
    """Makes chip ``i`` for every target: picklable, so worker processes can run it."""

    config: SceneConfig
    size: int
    seed: int
    targets: tuple[SynthTarget, ...]
    gsd_m: float | None = None

    def __call__(self, i: int) -> tuple[list[dict[str, np.ndarray]], dict[str, Any], list[np.ndarray]]:
        scene = generate_scene(self.config, self.size, self.seed, i, gsd_m=self.gsd_m)
        kinds = {k: spec.kind for k, spec in self.config.label_specs().items()}
        images = [render(scene, t.sensor, t.instrument) for t in self.targets]
        labels = [labels_at(scene, t.sensor, kinds) for t in self.targets]
        return labels, scene.meta, images


def scene_grid(targets: Sequence[SynthTarget], size: int) -> tuple[int, float | None, list[int]]:
    """``(scene size, scene GSD, chip size per target)``: each sensor at its own GSD, same ground.

    All sensors at one GSD: the scene is ``size`` px and its GSD is left unset (as before GSDs were
    honoured). Otherwise the scene is drawn on the finest sensor's grid, covering the ground of
    ``size`` px of the *first* sensor, and each store's chips cover that ground at its sensor's GSD
    (60 m EMIT at 32 px pairs with 30 m HLS at 64 px). A ground extent that is not a whole number
    of some sensor's pixels is refused in one line.
    """
    gsds = [t.sensor.gsd_m for t in targets]
    if all(np.isclose(g, gsds[0], rtol=1e-9) for g in gsds):
        return size, None, [size] * len(targets)
    fine = min(gsds)
    try:
        scene = pixels_on(size, gsds[0], fine, f"synth --size {size} for {targets[0].sensor.name}")
        sizes = [
            pixels_on(scene, fine, g, f"synth: the {t.sensor.name} store")
            for t, g in zip(targets, gsds, strict=True)
        ]
    except HyperKDError as exc:
        raise DataError(str(exc)) from None
    if min(sizes) < 8:
        raise DataError(
            f"synth: the coarsest store would get {min(sizes)} px chips; raise --size to >= 8 px of every sensor"
        )
    return scene, fine, sizes


def _preflight(target: SynthTarget, recipe: Mapping[str, Any], resume: bool) -> None:
    """Refuse, before anything is written to any store, an output that cannot be (re)used."""
    manifest = target.out / "manifest.json"
    if not manifest.exists():
        if target.out.exists() and not target.out.is_dir():
            raise DataError(f"{target.out} is a file; --out (and --also) need a folder")
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{manifest}: cannot read the existing store ({exc}); delete it or pick another folder"
        ) from None
    if old.get("complete"):
        raise DataError(
            f"{target.out} already holds a complete chip store; choose another folder or delete it first"
        )
    if not resume:
        raise DataError(
            f"{target.out} holds an unfinished chip store; pass --resume to continue it or delete the folder"
        )
    synth = (old.get("attrs") or {}).get("synth")
    if synth != dict(recipe):
        what = (
            (
                f"seed {synth.get('seed')}, chips {synth.get('chips')}, size {synth.get('size')}, "
                f"config {synth.get('config_digest')}"
            )
            if isinstance(synth, Mapping)
            else "not by data synth"
        )
        raise DataError(
            f"cannot resume {target.out}: it was started with other synth settings ({what}); use the same "
            "--chips/--size/--seed/--config or delete it"
        )


@contextlib.contextmanager
def _progress_bar(
    progress: bool | Callable[[int, int], None], total: int, sensors: Sequence[Sensor]
) -> Iterator[Callable[[int], None]]:
    """Yield ``tick(n)``: advances a rich bar on stderr, a user callback, or nothing."""
    done = 0
    if callable(progress):

        def tick_cb(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        yield tick_cb
        return
    if not progress_enabled(bool(progress)):
        yield lambda n: None
        return
    what = " + ".join(f"{s.name} ({s.num_bands} bands)" for s in sensors)
    with rich_progress("[bold]synth[/] " + what.replace("[", "\\["), "chips") as bar:
        task = bar.add_task("synth", total=total)
        yield lambda n: bar.advance(task, n)


def synthesize(
    sensor: str | Sensor = "enmap",
    out: str | Path = "synthetic-enmap",
    *,
    chips: int = 32,
    size: int = 64,
    seed: int = 0,
    selection: str | Sequence[str] | None = "default",
    also: Mapping[str, str | Path] | Sequence[tuple[str | Sensor, str | Path]] | None = None,
    config: SceneConfig | None = None,
    instrument: Instrument | Mapping[str, Instrument] | None = None,
    workers: int = 1,
    resume: bool = False,
    shard_size: int | None = None,
    progress: bool | Callable[[int, int], None] = True,
    attrs: Mapping[str, Any] | None = None,
) -> ChipStore:
    """Write ``chips`` synthetic scenes of ``size`` px for ``sensor`` to a chip store at ``out``.

    ``also`` renders the *same* scenes for more sensors into more stores, e.g.
    ``also={"hls": "teacher-store"}`` (keys may be ``NAME:SELECTION``; or give
    ``(Sensor, path)`` pairs). Each sensor is rendered at its own GSD over the same ground:
    ``size`` is the first sensor's chip size, and a sensor with other pixels gets chips of the
    same ground extent (:func:`scene_grid`; 60 m EMIT at ``size=32`` pairs with 30 m HLS chips of
    64 px). ``instrument`` is one :class:`Instrument` for all sensors or
    a mapping by sensor name. Chips stream to disk shard by shard, so memory stays bounded
    (about one shard, <= 64 MiB by default, per store); ``workers`` > 1 renders chips in
    that many processes (output identical to ``workers=1``); ``progress`` shows a rich
    progress bar on stderr (``True``; off with ``HYPERKD_DISABLE_PROGRESS=1``) or is called
    as ``progress(done, total)`` after each chip; an interrupted run continues with
    ``resume=True``. Returns the
    store at ``out``. Every store is marked synthetic and records its seed, scene config,
    instrument and spectral library in the manifest's ``attrs``.
    """
    if chips < 1:
        raise DataError(f"--chips must be >= 1, got {chips}")
    if size < 8:
        raise DataError(f"--size must be >= 8 px, got {size}")
    if seed < 0:
        raise DataError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    cfg = config or SceneConfig()
    lib = earthlib_library()
    cfg.validate(lib)
    targets = _targets(sensor, out, selection, also, instrument)
    extended: dict[str, list[str]] = {}
    for t in targets:
        band_response(t.sensor, lib.wavelengths_nm, t.instrument.srf)  # fail early on bands out of range
        names = extended_bands(t.sensor, lib.wavelengths_nm)
        if names:
            extended[str(t.out)] = names
            log.warning(
                "synth: %d band(s) of %s (%s) lie outside the spectral library (%g-%g nm); they are "
                "rendered with the library's edge reflectance held constant (docs/synthetic-data.md)",
                len(names),
                t.sensor.name,
                _band_list(names),
                lib.wavelengths_nm[0],
                lib.wavelengths_nm[-1],
            )
    scene_size, scene_gsd, sizes = scene_grid(targets, size)
    if shard_size is None:
        biggest = max(nbytes_per_chip(t.sensor.num_bands, n) for t, n in zip(targets, sizes, strict=True))
        shard_size = int(max(1, min(256, (64 << 20) // biggest)))
    recipe: dict[str, Any] = {
        "generator": "hyperkd.synth",
        "version": SYNTH_VERSION,
        "seed": seed,
        "chips": chips,
        "size": size,
        "config_digest": cfg.digest(),
    }
    if scene_gsd is not None:  # sensors of different GSD: recorded so a resume draws the same scenes
        recipe.update(scene_size=scene_size, scene_gsd_m=scene_gsd)
    for t in targets:
        _preflight(t, recipe, resume)
    writers: list[ChipStoreWriter] = []
    for t, n in zip(targets, sizes, strict=True):
        a = {
            "synthetic": "SYNTHETIC DATA made by hyperkd.synth from earthlib spectra; not real imagery",
            "synth": recipe,
            "scene_config": cfg.to_dict(),
            "instrument": t.instrument.to_dict(),
            "spectral_library": lib.source,
            **({"extended_bands": extended[str(t.out)]} if str(t.out) in extended else {}),
            "paired_stores": {
                str(o.out): f"{o.sensor.name}:{o.sensor.selection}" for o in targets if o is not t
            },
            **dict(attrs or {}),
        }
        writers.append(
            ChipStoreWriter(
                t.out,
                t.sensor,
                n,
                labels=cfg.label_specs(),
                shard_size=shard_size,
                synthetic=True,
                attrs=a,
                resume=resume,
            )
        )
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        with _progress_bar(progress, chips, [t.sensor for t in targets]) as tick:
            for bi in range((chips + shard_size - 1) // shard_size):
                source = f"synth-batch-{bi:05d}"
                indices = range(bi * shard_size, min(chips, (bi + 1) * shard_size))
                todo = [j for j, w in enumerate(writers) if source not in w.sources_done]
                if not todo:
                    tick(len(indices))
                    continue
                maker = _ChipMaker(cfg, scene_size, seed, tuple(targets[j] for j in todo), scene_gsd)
                results = (
                    pool.map(maker, indices, chunksize=max(1, len(indices) // (4 * workers)))
                    if pool is not None
                    else map(maker, indices)
                )
                valid = {j: np.ones((sizes[j], sizes[j]), dtype=bool) for j in todo}
                for labels, meta, images in results:
                    for j, img, lab in zip(todo, images, labels, strict=True):
                        writers[j].add(img, valid[j], lab, source=source, **meta)
                    tick(1)
                for j in todo:
                    writers[j].mark_source_done(source)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    stores = [w.close() for w in writers]
    return stores[0]
