"""The distillation experiment's three data sets: :func:`kd_stores` writes them from the ``kd-*`` presets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hyperkd.core.errors import DataError
from hyperkd.data.store import ChipStore
from hyperkd.synth.config import SceneConfig
from hyperkd.synth.instrument import Instrument
from hyperkd.synth.write import synthesize

KD_STUDENT_SNR_SCALE = 0.25
"""SNR factor of the student's (EnMAP) instrument in :func:`kd_stores`: a quarter of the
EnMAP-like default, so single-pixel spectra are noisy in a way neighbourhoods can average out."""


KD_ROLES: dict[str, tuple[str, str, int]] = {
    "teacher": ("hls", "kd-teacher", 0),
    "student": ("enmap", "kd-student", 1),
    "eval": ("enmap", "kd-eval", 2),
}
"""role -> (sensor, preset, seed offset) of :func:`kd_stores`; ``eval`` also gets an HLS view."""


def kd_stores(
    out: str | Path,
    *,
    teacher_chips: int = 256,
    student_chips: int = 48,
    eval_chips: int = 64,
    size: int = 64,
    seed: int = 0,
    student_snr_scale: float = KD_STUDENT_SNR_SCALE,
    workers: int = 1,
    progress: bool | Callable[[int, int], None] = False,
) -> dict[str, ChipStore]:
    """Write the stores of a distillation experiment under ``out`` and return them by role.

    - ``teacher``: ``out/teacher-hls``, ``teacher_chips`` HLS chips of the ``kd-teacher``
      preset (every crop and region) — the large multispectral set a teacher learns from;
    - ``student``: ``out/student-enmap``, ``student_chips`` EnMAP chips of ``kd-student``
      (no cotton, no patchy-stand, no asia/oceania soils) — the small hyperspectral set;
    - ``eval``: ``out/eval-enmap``, ``eval_chips`` labelled EnMAP chips of ``kd-eval``
      (everything, crops equally frequent), and ``eval_hls``: ``out/eval-hls``, the *same*
      scenes seen by HLS (rendered once, through ``synthesize(..., also=...)``), so a
      teacher or a raw-HLS baseline can be scored on exactly the student's evaluation scenes.

    The three sets use different seeds (``3 * seed + 0/1/2``), so no evaluation scene is in
    a training set, and share class ids. Both EnMAP sets use an instrument whose SNR is
    ``student_snr_scale`` times the default (noise that single pixels cannot average out);
    HLS uses the default instrument. Every store records ``attrs.preset`` and
    ``attrs.kd_role``. ``out`` must not hold these stores already. At the defaults this
    takes a few tens of seconds on 2 CPU cores (see docs/synthetic-data.md).
    """
    if student_snr_scale <= 0:
        raise DataError(f"student_snr_scale must be > 0, got {student_snr_scale}")
    out = Path(out)
    student_instrument = Instrument(snr_scale=student_snr_scale)
    chips = {"teacher": teacher_chips, "student": student_chips, "eval": eval_chips}
    paths = {
        "teacher": out / "teacher-hls",
        "student": out / "student-enmap",
        "eval": out / "eval-enmap",
        "eval_hls": out / "eval-hls",
    }
    for p in paths.values():  # refuse before writing anything
        if (p / "manifest.json").exists():
            raise DataError(f"{p} already holds a chip store; choose another --out or delete it first")
    stores: dict[str, ChipStore] = {}
    for role, (sensor, preset, offset) in KD_ROLES.items():
        also = {"hls": paths["eval_hls"]} if role == "eval" else None
        stores[role] = synthesize(
            sensor,
            paths[role],
            chips=chips[role],
            size=size,
            seed=3 * seed + offset,
            also=also,
            config=SceneConfig.preset(preset),
            instrument={"enmap": student_instrument, "hls": Instrument()},
            workers=workers,
            progress=progress,
            attrs={"preset": preset, "kd_role": role},
        )
    stores["eval_hls"] = ChipStore(paths["eval_hls"])
    return stores
