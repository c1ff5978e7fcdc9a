"""Figures are drawn without pyplot: importing hyperkd's figure code picks no matplotlib backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from hyperkd.core.sensors import Band, Sensor
from hyperkd.viz.figures import loss_curves, reconstruction_figure
from hyperkd.viz.task_figures import confusion_figure, maps_figure, scatter_figure

SENSOR = Sensor(name="toy", bands=tuple(Band(f"b{i}", 450.0 + 50 * i, 10.0) for i in range(5)), gsd_m=30)


def test_importing_the_figure_modules_has_no_side_effects():
    code = (
        "import sys, matplotlib\n"
        "backend = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "import hyperkd.viz.figures, hyperkd.viz.task_figures, hyperkd.evaluation.quickstart\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == backend, 'backend changed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_figure_is_written_without_pyplot(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 0.5, (5, 8, 8))
    masked = rng.uniform(size=(8, 8)) > 0.5
    (tmp_path / "metrics.csv").write_text("step,train/loss,val/loss\n1,1.0,\n2,0.5,0.6\n")
    paths = [
        reconstruction_figure(SENSOR, img, masked, img * 0.9, tmp_path / "recon.png", title="t"),
        loss_curves(tmp_path / "metrics.csv", tmp_path / "loss.png"),
        confusion_figure(np.array([[3, 1], [0, 2]]), ["a", "b"], tmp_path / "cm.png"),
        scatter_figure(rng.normal(size=(50, 2)), tmp_path / "sc.png", unit="g/kg", metrics={"rmse": 0.1}),
        maps_figure(
            SENSOR,
            [img],
            [rng.integers(0, 2, (8, 8))],
            [rng.integers(0, 2, (8, 8))],
            tmp_path / "maps.png",
            classes=["a", "b"],
        ),
        maps_figure(
            SENSOR, [img], [rng.normal(size=(8, 8))], [rng.normal(size=(8, 8))], tmp_path / "mapsr.png"
        ),
    ]
    for p in paths:
        assert p is not None and p.read_bytes().startswith(b"\x89PNG"), p
