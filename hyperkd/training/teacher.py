"""Teachers hyperkd trains itself: teacher pretraining, the synthetic HLS corpus, teacher folders.

Real HyperKD uses NASA/IBM's Prithvi-EO, pretrained on millions of HLS chips. Offline, with
no such weights, hyperkd trains a *small Prithvi-architecture* teacher with the teacher's own
masked-reconstruction objective on a large, varied synthetic multispectral corpus instead
(``hyperkd teacher pretrain``). It is named honestly everywhere: it is not NASA/IBM's Prithvi.

What is here, in pipeline order:

- :func:`corpus_sets` / :func:`synthetic_hls_corpus`: the ``synthetic-hls`` corpus, many
  synthetic HLS stores from every region, several landscapes and crop mixes, and seeds no
  student set uses (:func:`hyperkd.synth.kd_stores` uses ``3 * seed + 0..2``; the corpus starts at
  :data:`CORPUS_SEED`);
- :class:`TeacherMAEModule` and :func:`pretrain_teacher`: training from random init, with
  free augmentation (flips and 90° rotations: nadir imagery has no up), into a **teacher
  folder** in the sharing format: ``config.json`` (the registered teacher that builds it and
  its full architecture), ``model.safetensors`` and a ``README.md`` model card saying how it
  was made;
- :func:`load_teacher`: a teacher name, recipe section *or folder* -> the built teacher
  (:func:`hyperkd.hub.teachers.teacher_spec` reads a folder's config.json, so
  ``hyperkd distill --teacher DIR`` or ``teacher.name: DIR`` needs no ``--set teacher.*``
  architecture flags; the folder format itself lives in :mod:`hyperkd.hub.teachers`);
- :func:`evaluate_teacher`: masked reconstruction error on a store with fixed masks, the
  number a teacher card reports.

Any registered teacher that implements :meth:`hyperkd.core.interfaces.Teacher.mae_loss` and
``save_weights`` can be pretrained this way; one that also has ``folder_config()`` (the
Prithvi teachers) writes its bands and normalisation into the folder's config.json.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.registry import create
from hyperkd.data.loader import ChipDataset
from hyperkd.data.splits import split_chips
from hyperkd.data.store import ChipStore
from hyperkd.hub.teachers import (
    NOT_PRITHVI,
    TEACHER_FOLDER_FORMAT,
    check_out,
    teacher_spec,
    write_teacher_folder,
)
from hyperkd.training.optim import OptimConfig, configure_optimizers
from hyperkd.training.parts import Spec, plain_hparams, split_spec

log = logging.getLogger(__name__)

DEFAULT_OPTIM: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.95)}
"""Teacher pretraining's optimiser settings (MAE-style AdamW)."""

SYNTHETIC_HLS = "synthetic-hls"
"""The ``data`` value that asks :func:`pretrain_teacher` to synthesise its corpus."""

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "patch_size": [1, 4, 4],
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 4,
        "decoder_embed_dim": 32,
        "decoder_depth": 1,
        "decoder_num_heads": 4,
    },
    "small": {
        "patch_size": [1, 4, 4],
        "embed_dim": 128,
        "depth": 4,
        "num_heads": 4,
        "decoder_embed_dim": 64,
        "decoder_depth": 2,
        "decoder_num_heads": 4,
    },
}
"""Architecture presets (``--size``) for the Prithvi-architecture teachers: ``tiny`` trains in
seconds (tests), ``small`` is the packaged ``prithvi-tiny-synth`` (0.9M parameters, 3.7 MB).
Patch 4 keeps an 8 x 8 token grid on 32 px chips. Position tables keep Prithvi's default
``interpolate`` mode: measured on 64 px chips, a teacher trained on 32 px chips reconstructs
them about as well as 32 px crops with it, and twice as badly with ``recompute`` (docs/teachers.md)."""

# -- the synthetic HLS corpus -------------------------------------------------------------------
LANDSCAPES: dict[str, dict[str, Any]] = {
    "farmland": {"p_urban": 0.15, "p_water": 0.25, "roads": (0, 2), "parcel_px": (6.0, 20.0)},
    "smallholder": {"p_urban": 0.3, "p_water": 0.3, "roads": (1, 3), "parcel_px": (3.0, 9.0)},
    "peri-urban": {"p_urban": 0.9, "p_water": 0.5, "roads": (1, 4), "parcel_px": (5.0, 14.0)},
}
"""Landscape variants of the corpus: parcel sizes, towns, water and roads."""

CORPUS_SEED = 10_000
"""First scene seed of the corpus (student and evaluation presets use seeds below 10)."""


def corpus_sets(seed: int = 0) -> list[tuple[str, Any, int]]:
    """``(name, SceneConfig, scene seed)`` of every set of the ``synthetic-hls`` corpus.

    One set per region (all five, including those the ``kd-student`` preset lacks) and
    landscape (:data:`LANDSCAPES`), on the ``kd-teacher`` preset (every crop, the
    spatial-context pair included), each boosting one crop threefold so crop mixes differ
    too; 15 sets, each with its own seed.
    """
    from hyperkd.synth import SceneConfig

    base = SceneConfig.preset("kd-teacher")
    regions = [r.name for r in base.regions]
    crops = [c.name for c in base.crops]
    sets = []
    for i, (region, landscape) in enumerate((r, s) for r in regions for s in LANDSCAPES):
        crop = crops[i % len(crops)]
        name = f"{region}-{landscape}-{crop}"
        cfg = base.with_weights(
            regions={r: float(r == region) for r in regions},
            crops={crop: 3.0 * next(c.weight for c in base.crops if c.name == crop)},
            name=f"teacher-corpus/{name}",
        )
        cfg = replace(cfg, **LANDSCAPES[landscape])
        cfg.validate()
        sets.append((name, cfg, CORPUS_SEED + 100 * seed + i))
    return sets


def synthetic_hls_corpus(
    out: str | Path,
    *,
    chips: int = 6000,
    size: int = 32,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> list[ChipStore]:
    """Write (or reuse) the ``synthetic-hls`` corpus under ``out``: ``chips`` HLS chips of
    ``size`` px split evenly over :func:`corpus_sets`, one store per set. A set already
    written with the same chips, size and config is reused (corpus synthesis takes minutes)."""
    from hyperkd.synth import synthesize

    out = Path(out)
    sets = corpus_sets(seed)
    per_set = max(1, chips // len(sets))
    stores = []
    for name, cfg, scene_seed in sets:
        path = out / name
        if (path / "manifest.json").exists():
            store = ChipStore(path)
            a = store.manifest.get("attrs") or {}
            if len(store) == per_set and store.chip_size == size and a.get("corpus_digest") == cfg.digest():
                stores.append(store)
                continue
            raise DataError(
                f"{path} holds another corpus set (chips, size or scene config differ); delete it "
                "or choose another corpus folder"
            )
        log.info("synthesising corpus set %s (%d chips, seed %d)", name, per_set, scene_seed)
        stores.append(
            synthesize(
                "hls",
                path,
                chips=per_set,
                size=size,
                seed=scene_seed,
                config=cfg,
                workers=workers,
                progress=progress,
                attrs={"corpus": "synthetic-hls", "corpus_set": name, "corpus_digest": cfg.digest()},
            )
        )
    return stores


# -- training -----------------------------------------------------------------------------------
class TeacherMAEModule(L.LightningModule):
    """Trains a teacher (built with its decoder) on its masked-reconstruction loss.

    ``teacher``: a built teacher, or a name / ``{"name", **architecture}`` section built from
    random init with its decoder (``create("teacher", name, weights=None, keep_decoder=True,
    frozen=False, ...)``); named teachers are recorded with ``save_hyperparameters``.
    ``optim``: an :class:`~hyperkd.training.optim.OptimConfig` mapping over
    :data:`DEFAULT_OPTIM`. Validation uses fixed masks (seeded by batch) without disturbing the training RNG.
    """

    def __init__(
        self,
        teacher: Any,
        mask_ratio: float = 0.75,
        optim: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(plain_hparams(teacher=teacher, mask_ratio=mask_ratio, optim=optim))
        if isinstance(teacher, str | Mapping):
            name, cfg = split_spec(teacher, "teacher")
            teacher = create(
                "teacher", name, **{"weights": None, "keep_decoder": True, "frozen": False, **cfg}
            )
        self.teacher = teacher
        self.mask_ratio = mask_ratio
        self.optim_cfg = OptimConfig.from_mapping({**DEFAULT_OPTIM, **(optim or {})})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        loss = self.teacher.mae_loss(x, self.mask_ratio)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            loss = self.teacher.mae_loss(batch["image"], self.mask_ratio)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> dict[str, Any]:
        """The shared AdamW + warmup-cosine recipe (:mod:`hyperkd.training.optim`)."""
        return configure_optimizers(self, self.optim_cfg, int(self.trainer.estimated_stepping_batches))


class _History(L.Callback):
    """Per-epoch mean training and validation loss (for the model card)."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val.append(round(float(trainer.callback_metrics["val/loss"]), 5))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "train/loss_epoch" in trainer.callback_metrics:
            self.train.append(round(float(trainer.callback_metrics["train/loss_epoch"]), 5))


def masked_recon_loss(teacher: Any, loader: DataLoader, mask_ratio: float = 0.75, seed: int = 0) -> float:
    """Mean masked-reconstruction loss of ``teacher`` over ``loader`` with fixed masks
    (batch ``i`` masked with seed ``seed + i``), leaving the global RNG as it was."""
    total, n = 0.0, 0
    was_training = teacher.training
    teacher.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for i, batch in enumerate(loader):
            torch.manual_seed(seed + i)
            x = batch["image"]
            total += float(teacher.mae_loss(x, mask_ratio)) * x.shape[0]
            n += x.shape[0]
    teacher.train(was_training)
    return total / max(n, 1)


def _open_stores(data: Any) -> list[ChipStore]:
    items = data if isinstance(data, list | tuple) else [data]
    stores = [s if isinstance(s, ChipStore) else ChipStore(s) for s in items]
    if not stores:
        raise DataError("no chip store given to pretrain the teacher on")
    first = stores[0]
    for s in stores[1:]:
        if s.sensor.band_names != first.sensor.band_names or s.chip_size != first.chip_size:
            raise DataError(
                f"{s.root} holds {s.chip_size} px chips of bands {s.sensor.band_names}, but {first.root} "
                f"holds {first.chip_size} px chips of {first.sensor.band_names}; a teacher trains on one format"
            )
    return stores


def pretrain_teacher(
    data: str | Path | ChipStore | Sequence[str | Path | ChipStore],
    out: str | Path,
    *,
    teacher: str = "prithvi-eo-tiny",
    size: str | None = None,
    epochs: int = 5,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup_epochs: float = 0.0,
    mask_ratio: float = 0.75,
    augment: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    chips: int = 6000,
    chip_size: int = 32,
    corpus_dir: str | Path | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
    **architecture: Any,
) -> Path:
    """Train ``teacher`` from random init on ``data``; returns the teacher folder ``out``.

    ``data``: a multispectral chip store in the teacher's bands, several of them, or
    ``"synthetic-hls"``: the corpus of :func:`synthetic_hls_corpus` (``chips`` chips of
    ``chip_size`` px, written to ``corpus_dir`` and kept for reuse, or to a temporary folder
    removed afterwards). ``size``: an architecture preset of :data:`SIZES`; ``architecture``
    keywords override it (and default ``img_size`` to the chip size). ``val_fraction`` of each
    store is held out; its masked reconstruction loss (fixed masks) before and after training
    goes into the card. ``out`` receives config.json, model.safetensors and README.md,
    atomically; an existing non-empty ``out`` is refused unless ``overwrite``. Load the result
    with ``--teacher OUT`` (:func:`load_teacher`) or ``weights=OUT``.
    """
    out = Path(out)
    check_out(out, overwrite)
    if size is not None and size not in SIZES:
        raise HyperKDError(f"unknown teacher size {size!r}; choose one of {', '.join(SIZES)}")
    arch = {**(SIZES[size] if size else {}), **architecture}
    tmp_corpus = None
    corpus = None
    if isinstance(data, str) and data == SYNTHETIC_HLS:
        if corpus_dir is None:
            tmp_corpus = Path(
                tempfile.mkdtemp(prefix=".teacher-corpus-", dir=out.parent if out.parent.exists() else None)
            )
        root = Path(corpus_dir) if corpus_dir is not None else tmp_corpus
        assert root is not None
        stores = synthetic_hls_corpus(root, chips=chips, size=chip_size, seed=seed, workers=workers)
        corpus = {
            "name": SYNTHETIC_HLS,
            "sets": [
                {"name": n, "scene_seed": s, "preset": "kd-teacher", **_landscape(n)}
                for n, _, s in corpus_sets(seed)
            ],
            "chips": sum(len(s) for s in stores),
            "chip_size": chip_size,
            "seed": seed,
        }
    else:
        stores = _open_stores(data)
    try:
        return _train(
            stores,
            out,
            teacher=teacher,
            arch=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup_epochs=warmup_epochs,
            mask_ratio=mask_ratio,
            augment=augment,
            val_fraction=val_fraction,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
            corpus=corpus,
            command=command,
            size=size,
        )
    finally:
        if tmp_corpus is not None:
            shutil.rmtree(tmp_corpus, ignore_errors=True)


def _landscape(set_name: str) -> dict[str, str]:
    for landscape in LANDSCAPES:
        region, _, rest = set_name.partition(f"-{landscape}-")
        if rest:
            return {"region": region, "landscape": landscape, "boosted_crop": rest}
    return {}


def _train(stores: list[ChipStore], out: Path, **kw: Any) -> Path:
    """:func:`pretrain_teacher` on opened stores."""
    first = stores[0]
    seed = kw["seed"]
    L.seed_everything(seed, workers=True, verbose=False)
    arch = {"img_size": first.chip_size, **kw["arch"]}
    name = kw["teacher"]
    model = create("teacher", name, weights=None, keep_decoder=True, frozen=False, **arch)
    if [b.name for b in model.sensor.bands] != first.sensor.band_names:
        raise HyperKDError(
            f"teacher {name!r} expects bands {model.sensor.band_names} but {first.root} holds "
            f"{first.sensor.band_names}; synthesise the teacher's view with `hyperkd data synth --sensor "
            f"{model.sensor.name}`"
        )
    train_sets: list[ChipDataset] = []
    val_sets: list[ChipDataset] = []
    for s in stores:
        tr, va, _ = split_chips(len(s), kw["val_fraction"], seed=seed, strict=False)
        train_sets.append(ChipDataset(s, tr, augment=kw["augment"]))
        val_sets.append(ChipDataset(s, va))
    train_ds: ConcatDataset[dict[str, Any]] = ConcatDataset(train_sets)
    val_ds: ConcatDataset[dict[str, Any]] = ConcatDataset(val_sets)
    bs = kw["batch_size"]
    train_dl = DataLoader(
        train_ds, batch_size=min(bs, len(train_ds)), shuffle=True, drop_last=len(train_ds) >= bs
    )
    val_dl = DataLoader(val_ds, batch_size=max(bs, 64))
    val_before = masked_recon_loss(model, val_dl, kw["mask_ratio"]) if len(val_ds) else float("nan")
    steps_per_epoch = len(train_dl)
    warmup = round(kw["warmup_epochs"] * steps_per_epoch)
    module = TeacherMAEModule(
        model,
        mask_ratio=kw["mask_ratio"],
        optim={"lr": kw["lr"], "warmup_steps": warmup},
    )
    history = _History()
    trainer = L.Trainer(
        max_epochs=kw["epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=kw["progress"],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="auto",
        devices=1,
        callbacks=[history],
    )
    t0 = time.time()
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl if len(val_ds) else None)
    seconds = time.time() - t0
    val_after = masked_recon_loss(model, val_dl, kw["mask_ratio"]) if len(val_ds) else float("nan")
    folder_cfg = (
        model.folder_config({"kind": "trained", "by": "hyperkd teacher pretrain"})
        if hasattr(model, "folder_config")
        else {"hyperkd_format": TEACHER_FOLDER_FORMAT, "architecture": arch}
    )
    from hyperkd import __version__

    config = {
        **folder_cfg,
        "teacher": name,
        "size": kw["size"],
        "hyperkd_version": __version__,
        "note": NOT_PRITHVI,
        "licence": "Apache-2.0 (hyperkd's licence); trained from random init on synthetic or your own data",
        "training": {
            "objective": f"the teacher's own masked reconstruction (MSE on masked patches of the normalised "
            f"input), mask ratio {kw['mask_ratio']}",
            "data": {
                "stores": [] if kw["corpus"] else [str(s.root) for s in stores],
                "synthetic": all(s.synthetic for s in stores),
                "chips": sum(len(s) for s in stores),
                "train_chips": len(train_ds),
                "val_chips": len(val_ds),
                "chip_size": first.chip_size,
                "corpus": kw["corpus"],
            },
            "epochs": kw["epochs"],
            "steps": int(trainer.global_step),
            "batch_size": bs,
            "optim": module.optim_cfg.to_dict(),
            "augment": "random flips and 90° rotations" if kw["augment"] else "none",
            "seed": seed,
            "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "device": str(next(model.parameters()).device),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": kw["command"],
            "val_loss_random_init": round(val_before, 5),
            "val_loss": round(val_after, 5),
            "val_loss_by_epoch": history.val,
            "train_loss_by_epoch": history.train,
        },
    }
    model.cpu()
    return write_teacher_folder(model, out, config, overwrite=kw["overwrite"])


# -- teacher folders and evaluation --------------------------------------------------------
def load_teacher(spec: Spec, **kwargs: Any) -> Any:
    """Build the teacher a name, recipe section or folder names (:func:`hyperkd.hub.teachers.teacher_spec`);
    ``kwargs`` are extra factory keywords (e.g. ``keep_decoder=True``)."""
    name, cfg = teacher_spec(*split_spec(spec, "teacher"))
    return create("teacher", name, **{**cfg, **kwargs})


def evaluate_teacher(
    spec: Spec,
    data: str | Path | ChipStore,
    *,
    mask_ratio: float = 0.75,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Masked reconstruction loss of a teacher (name, section or folder) on every chip of a
    store, with fixed masks (:func:`masked_recon_loss`). Needs a teacher with its decoder.

    Why this number: it is what the teacher was trained to minimise, on chips it did not see,
    and it compares teachers of the same patch size directly (a finer patch is an easier task)."""
    teacher = load_teacher(spec, keep_decoder=True)
    store = data if isinstance(data, ChipStore) else ChipStore(data)
    if [b.name for b in teacher.sensor.bands] != store.sensor.band_names:
        raise DataError(
            f"{store.root} holds bands {store.sensor.band_names}; the teacher expects {teacher.sensor.band_names}"
        )
    loader = DataLoader(ChipDataset(store), batch_size=batch_size)
    loss = masked_recon_loss(teacher, loader, mask_ratio, seed)
    return {
        "teacher": spec if isinstance(spec, str) else dict(spec),
        "store": str(store.root),
        "chips": len(store),
        "mask_ratio": mask_ratio,
        "patch_size": int(teacher.patch_size),
        "masked_recon_loss": round(loss, 5),
        "weights": dict(getattr(teacher, "weights_info", {})),
    }
