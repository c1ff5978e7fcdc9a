"""Teacher folders: the sharing format for teachers hyperkd trains (or converts).

A teacher folder holds the three files of a hyperkd model folder (see :mod:`hyperkd.hub`):

* ``model.safetensors`` -- the teacher's weights (with its MAE decoder);
* ``config.json`` -- ``teacher``: the *registered* teacher that builds it (e.g.
  ``prithvi-eo-tiny``), ``architecture``: the factory keywords that give it its shape, and what
  the teacher itself records (bands, normalisation), plus ``training`` (data, budget, command,
  date, validation figures) and ``note`` / ``licence``;
* ``README.md`` -- a model card rendered from that config (:func:`teacher_card`).

Unlike a student folder it has no ``model_type``: a teacher is built through the registry
(``create("teacher", config["teacher"], weights=FOLDER, **config["architecture"])``), which is
what :func:`teacher_spec` returns for a folder, so ``hyperkd distill --teacher DIR`` needs no
architecture flags. ``hyperkd convert prithvi`` folders (``variant`` instead of ``teacher``)
load the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperkd.core.errors import HyperKDError, WeightsError
from hyperkd.core.io import atomic_folder, atomic_write_json, atomic_write_text

NOT_PRITHVI = "a small Prithvi-architecture teacher trained by hyperkd; NOT NASA/IBM's Prithvi-EO weights"
CONFIG_JSON = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
TEACHER_FOLDER_FORMAT = 1
"""Newest ``hyperkd_format`` of a teacher folder's config.json this hyperkd reads."""


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to write a teacher folder over a file, or over a non-empty folder unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise HyperKDError(f"{out} is a file; give a folder for the teacher (--out)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HyperKDError(f"{out} already exists and is not empty; pass --overwrite to replace it")


def write_teacher_folder(
    model: Any, out: str | Path, config: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write ``model``'s weights, ``config`` and its card to ``out``, atomically (a temporary
    sibling folder renamed into place); an existing non-empty ``out`` needs ``overwrite``."""
    out = Path(out)
    check_out(out, overwrite)
    with atomic_folder(out) as tmp:
        model.save_weights(str(tmp / WEIGHTS_FILE))
        atomic_write_json(tmp / CONFIG_JSON, dict(config))
        atomic_write_text(tmp / CARD_FILE, teacher_card(config, name=out.name))
    return out


def _looks_like_path(name: str) -> bool:
    if "/" in name or os.sep in name or name.startswith((".", "~")):
        return True
    from hyperkd.core.registry import registry

    return Path(name).is_dir() and name not in registry("teacher")


def read_teacher_folder(folder: str | Path) -> dict[str, Any]:
    """The checked ``config.json`` of a teacher folder; every problem is one line."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise WeightsError(
            f"teacher folder {folder} does not exist; give a registered teacher (`hyperkd teachers list`) "
            "or a folder written by `hyperkd teacher pretrain`"
        )
    if not folder.is_dir():
        raise WeightsError(
            f"teacher {folder} is a file, not a teacher folder; pass a weights file with --teacher-weights "
            "and a registered --teacher"
        )
    path = folder / CONFIG_JSON
    if not path.is_file():
        raise WeightsError(
            f"{folder} has no {CONFIG_JSON}, so it is not a teacher folder; write one with "
            "`hyperkd teacher pretrain` or `hyperkd convert prithvi`"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, Mapping):
        raise WeightsError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if "model_type" in config:
        raise WeightsError(
            f"{folder} holds a student model ({config['model_type']}), not a teacher; use it as "
            "--student, or give a folder written by `hyperkd teacher pretrain`"
        )
    fmt = config.get("hyperkd_format")
    if isinstance(fmt, int) and fmt > TEACHER_FOLDER_FORMAT:
        raise WeightsError(
            f"{path} is teacher folder format {fmt}; this hyperkd reads format <= {TEACHER_FOLDER_FORMAT}: "
            "pip install -U hyperkd"
        )
    name = config.get("teacher") or config.get("variant")
    if not isinstance(name, str) or not name:
        raise WeightsError(
            f"{path} names no teacher (no 'teacher' or 'variant' key), so it is not a teacher folder"
        )
    arch = config.get("architecture", {})
    if not isinstance(arch, Mapping):
        raise WeightsError(f"{path}: 'architecture' must be a JSON object of the teacher's settings")
    return dict(config)


def teacher_spec(name: str, cfg: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(registered name, factory keywords)`` for a teacher ``name`` (registered, or a folder)
    with factory keywords ``cfg`` (a recipe's ``teacher`` section without its ``name``).

    A folder (a name with a path separator, starting with ``.`` or ``~``, or an existing
    directory that is no registered name) is read with :func:`read_teacher_folder`: the
    registered teacher its config.json names, its architecture, and ``weights`` = the folder
    (``"default"`` means the folder too; ``None`` keeps random init, the random-teacher
    control). Keywords in ``cfg`` win over the folder's architecture. Registered names pass
    through unchanged.
    """
    cfg = dict(cfg or {})
    if not _looks_like_path(name):
        return name, cfg
    config = read_teacher_folder(name)
    weights = cfg.pop("weights", "default")
    folder = str(Path(name).expanduser())
    return str(config.get("teacher") or config["variant"]), {
        **dict(config.get("architecture") or {}),
        **cfg,
        "weights": folder if weights is not None and str(weights) == "default" else weights,
    }


def teacher_card(config: Mapping[str, Any], *, name: str = "teacher") -> str:
    """The README.md model card of a teacher folder, from its config.json: what it is (and is
    not), architecture, corpus, budget, the command, date, validation figures, licence."""
    t = config.get("training") or {}
    d = t.get("data") or {}
    arch = config.get("architecture") or {}
    corpus = d.get("corpus")
    lines = [
        "---",
        "license: apache-2.0",
        "tags: [hyperkd, teacher, prithvi-architecture, synthetic-data]"
        if d.get("synthetic")
        else "tags: [hyperkd, teacher]",
        "---",
        "",
        f"# {name}",
        "",
        f"**{config.get('note', NOT_PRITHVI)}.** It has the Prithvi-EO masked-autoencoder architecture at a small "
        f"width, built as hyperkd's registered teacher `{config.get('teacher')}` with the architecture below, and was "
        "trained from random init by `hyperkd teacher pretrain`. NASA/IBM's Prithvi-EO models are trained on millions "
        "of real HLS chips; this one has seen only the data listed here.",
        "",
        "## Use",
        "",
        "```bash",
        "hyperkd distill --teacher path/to/this/folder ...   # architecture read from config.json",
        "```",
        "",
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in arch.items()),
        "",
    ]
    if "num_parameters" in config:
        p = config["num_parameters"]
        lines += [
            f"Parameters: encoder {p['encoder']:,}, decoder {p['decoder']:,}, total {p['total']:,}.",
            "",
        ]
    lines += ["## Training data", ""]
    if corpus:
        lines += [
            f"`{corpus['name']}`: {corpus['chips']} **synthetic** HLS chips of {corpus['chip_size']} px in "
            f"{len(corpus['sets'])} sets (hyperkd.synth scenes from real material spectra, `kd-teacher` preset: "
            "every crop, the spatial-context pair included), one per region x landscape, each boosting one crop "
            f"threefold; corpus seed {corpus['seed']}:",
            "",
            "| set | region | landscape | boosted crop | scene seed |",
            "|---|---|---|---|---|",
            *(
                f"| {s['name']} | {s.get('region', '')} | {s.get('landscape', '')} | {s.get('boosted_crop', '')} "
                f"| {s['scene_seed']} |"
                for s in corpus["sets"]
            ),
            "",
        ]
    else:
        lines += [
            f"Stores: {', '.join(d.get('stores', []))} ({d.get('chips')} chips"
            f"{', synthetic' if d.get('synthetic') else ''}).",
            "",
        ]
    lines += [
        f"Split: {d.get('train_chips')} training / {d.get('val_chips')} validation chips (held out per set).",
        "",
        "## Training",
        "",
        f"- objective: {t.get('objective')}",
        f"- budget: {t.get('epochs')} epochs, {t.get('steps')} steps of batch {t.get('batch_size')}, "
        f"{t.get('seconds')} s on {t.get('device')} ({t.get('torch_threads')} torch threads)",
        f"- optimiser: AdamW {t.get('optim')}, warmup-cosine schedule",
        f"- augmentation: {t.get('augment')}; seed {t.get('seed')}",
        f"- date: {t.get('date')}; hyperkd {config.get('hyperkd_version')}",
        f"- command: `{t.get('command') or 'pretrain_teacher(...) from Python'}`",
        "",
        "## Validation",
        "",
        "Masked reconstruction loss (MSE in normalised units on masked patches, fixed masks) on the held-out chips:",
        "",
        "| model | val loss |",
        "|---|---|",
        f"| random init (same architecture) | {t.get('val_loss_random_init')} |",
        f"| this teacher | {t.get('val_loss')} |",
        "",
        f"Per epoch: {t.get('val_loss_by_epoch')}.",
        "",
        "## Licence",
        "",
        f"{config.get('licence', 'Apache-2.0')}.",
        "",
    ]
    return "\n".join(lines)
