"""The encoder a fine-tune starts from: :func:`resolve_student` turns a name, folder, Hub repo or
model into a checked ``HyperspectralMAE`` (or ``None`` for raw spectra) for one chip store."""

from __future__ import annotations

from pathlib import Path

from hyperkd.core.errors import HyperKDError
from hyperkd.data.store import ChipStore
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.models.pixel import encoder_config

RAW = "raw"
INITS = ("pretrained", "random")


# ----------------------------------------------------------------------------------------------
# Students
# ----------------------------------------------------------------------------------------------


def resolve_student(
    student: str | Path | HyperspectralMAE, store: ChipStore, init: str = "pretrained"
) -> HyperspectralMAE | None:
    """The encoder to fine-tune (``None`` for ``"raw"``), checked against the store's bands and chip size.

    ``init="random"`` rebuilds the same architecture with fresh weights (call after seeding).
    """
    if init not in INITS:
        raise HyperKDError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if isinstance(student, str) and student == RAW:
        return None
    if isinstance(student, HyperspectralMAE):
        model = student
    else:
        from hyperkd.models.factory import create_model, resolve_spec

        spec = resolve_spec(student, sensor=store.sensor)  # folders, run folders, Hub repos, architectures
        if spec.trained:
            loaded = create_model(spec)  # the class comes from the saved config's model_type
            if not isinstance(loaded, HyperspectralMAE):
                raise HyperKDError(
                    f"student {spec.spec!r} is a {type(loaded).__name__}, not a hyperspectral MAE student"
                )
            model = loaded
        else:
            if init != "random":
                raise HyperKDError(
                    f"student {spec.spec!r} is an architecture, not trained weights; pass init='random' "
                    "(--init random) for an untrained-encoder control, or a trained run folder"
                )
            if spec.sensor is not None and spec.sensor != store.sensor.name:
                raise HyperKDError(
                    f"student {spec.spec!r} is for sensor {spec.sensor!r} but {store.root} holds "
                    f"{store.sensor.name!r} chips"
                )
            # the store's band table carries its statistics: the encoder standardises with them
            return create_model(spec, sensor=store.sensor, img_size=store.chip_size)
    if getattr(model, "sensor_agnostic", False):  # any-mae: reads the store's band table as it is
        model = model.adapt_to(store.sensor, img_size=store.chip_size)  # type: ignore[operator]
    if model.in_chans != store.sensor.num_bands or model.img_size != store.chip_size:
        raise HyperKDError(
            f"the student expects {model.in_chans} bands of {model.img_size} px but {store.root} holds "
            f"{store.sensor.num_bands} bands of {store.chip_size} px; use a store made with the student's "
            "band selection and chip size"
        )
    from hyperkd.core.sensors import match_bands

    if match_bands(model.sensor, store.sensor, f"student vs {store.root}") != list(range(model.in_chans)):
        raise HyperKDError(
            f"{store.root} holds the student's bands in another order; "
            "use a store made with the student's band order"
        )
    if init == "random":
        return type(model)(**encoder_config(model))  # same architecture and standardisation, new weights
    return model


__all__ = ["INITS", "RAW", "resolve_student"]
