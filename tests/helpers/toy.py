"""Small chip stores with learnable structure, for engine tests that must not depend on synth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyperkd.core.sensors import Sensor, get_sensor
from hyperkd.data.store import ChipStore, ChipStoreWriter, LabelSpec


def toy_store(
    root: Path,
    sensor: Sensor | str = "enmap",
    chips: int = 24,
    size: int = 16,
    seed: int = 0,
    selection: str = "default",
) -> ChipStore:
    """Chips that mix three smooth spectra with smooth spatial abundances, plus noise.

    Reconstructing a masked patch is learnable (spectra are shared, abundances are smooth),
    so a training loss that does not fall means the engine is broken.
    """
    s = get_sensor(sensor, selection=selection) if isinstance(sensor, str) else sensor
    rng = np.random.default_rng(seed)
    wl = np.asarray(s.centers_nm)
    endmembers = np.stack(
        [
            0.05 + 0.45 / (1 + np.exp(-(wl - 720) / 15)),  # vegetation-like red edge
            0.15 + 0.2 * (wl - 400) / 2100,  # soil-like slope
            0.08 * np.exp(-(wl - 400) / 300),  # water-like
        ]
    )
    yy, xx = np.mgrid[0:size, 0:size] / size
    w = ChipStoreWriter(
        root, s, size, labels={"lc": LabelSpec("class", classes=("veg", "soil", "water"))}, shard_size=8
    )
    for i in range(chips):
        f = rng.uniform(0.2, 0.8, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=(3, 2))
        ab = np.stack(
            [
                np.exp(
                    np.sin(2 * np.pi * f[k, 0] * xx + ph[k, 0]) + np.cos(2 * np.pi * f[k, 1] * yy + ph[k, 1])
                )
                for k in range(3)
            ]
        )
        ab = ab / ab.sum(0, keepdims=True)
        img = np.einsum("kc,khw->chw", endmembers, ab) + rng.normal(0, 0.003, size=(s.num_bands, size, size))
        w.add(img.astype(np.float32), labels={"lc": ab.argmax(0)}, source=f"toy{i}")
    return w.close()


TINY_STUDENT = [
    "student.patch_size=4",
    "student.embed_dim=64",
    "student.depth=2",
    "student.num_heads=2",
    "student.decoder_embed_dim=32",
    "student.decoder_depth=1",
    "student.decoder_num_heads=2",
    "student.spectral_dim=16",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
]
"""Recipe overrides for a toy-sized student that logs every step (engine and distillation tests)."""


def logged(run: Path, key: str) -> list[float]:
    """Every logged value of ``key`` in a run's CSV log (resumed parts included)."""
    from hyperkd.viz.figures import read_metrics

    return [float(r[key]) for r in read_metrics(run / "logs" / "metrics.csv") if r.get(key)]
