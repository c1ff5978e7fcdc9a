"""Fine-tuning and evaluation of students on downstream tasks (``hyperkd finetune`` / ``evaluate``).

One call fine-tunes one (student, task, protocol, seed) and evaluates it on held-out chips::

    from hyperkd.evaluation.finetune import finetune, evaluate

    res = finetune(student="runs/kd", task="landcover", store="data/enmap", protocol="frozen",
                   seed=0, out="runs/ft/kd-landcover-s0")
    res.metrics["miou"], res.metrics["overall_accuracy"]
    finetune(student="raw", task="landcover", store="data/enmap", out="runs/ft/raw")      # control
    finetune(student="runs/kd", init="random", task="landcover", store="data/enmap",
             out="runs/ft/untrained")                                                   # control
    evaluate("runs/ft/kd-landcover-s0", "data/other-enmap", out="runs/ft/eval-other")

``student`` is a run folder (``RUN/student/``), a saved student folder, a Hugging Face repo
id, an architecture name (``enmap-mae-tiny``; only with ``init="random"``) or ``"raw"`` (a
head on the pixel spectra, no encoder). ``init="random"`` keeps the student's architecture
and standardisation but not its weights: the untrained-encoder control.

Data and splits. Labels come from the store's own label layer (``task.label``, or
``label=``) or from a GeoTIFF (``labels=``) reprojected onto every chip
(:mod:`hyperkd.data.labels`). The chips are split once, by ``split_seed`` (default 0, the
same for every run), into train / validation / test; ``seed`` changes the initialisation,
the batch order and — with ``train_chips=N`` (the label-scarce setting) — which N chips of
the training part are used. So runs with different students or seeds are scored on the
same test chips, and at one seed two students see the same training chips in the same order
and start from the same head weights (paired comparisons). ``eval_store=`` tests on a separate
store instead of the test split (``eval_labels=`` defaults to ``labels=``: one national raster
usually covers both).

Training uses Lightning (:func:`hyperkd.training.runner.make_trainer`: CSV/TensorBoard logs,
safetensors checkpoints). With a fixed encoder (``frozen``, ``linear``) the encoder's
output for a chip never changes (no augmentation), so it is computed once and cached on the
CPU (up to ``cache_mb``): later epochs only train the head.

Outputs in ``out``: ``finetune.json`` (settings), ``model/`` (config.json +
model.safetensors, :class:`~hyperkd.models.pixel.PixelModel`), ``metrics.json`` (test
metrics), ``figures/`` (confusion matrix or scatter, predicted maps), ``logs/``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hyperkd.core.errors import DataError, HyperKDError, WeightsError
from hyperkd.core.io import atomic_write_json
from hyperkd.data.store import ChipStore, LabelSpec
from hyperkd.evaluation.tasks import RegressionAccumulator, RegressionTask, SegmentationTask, Task, get_task
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.models.pixel import PROTOCOLS, PixelModel, encoder_config, layers_tuple, recompute_batchnorm

RAW = "raw"
INITS = ("pretrained", "random")


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


HEADLINE = ("overall_accuracy", "miou", "macro_f1", "rmse", "mae", "r2", "bias")
"""The metrics a comparison table reports (``scalars``); the rest stays in ``metrics``."""


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in HEADLINE if isinstance(metrics.get(k), (int, float))}


@dataclass
class EvalResult:
    """Metrics of one model on one set of chips, and where they were written."""

    metrics: dict[str, Any]
    chips: list[int]
    store: Path
    out: Path | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def scalars(self) -> dict[str, float]:
        """The headline numbers only (accuracy, mIoU, macro F1 / RMSE, MAE, R2, bias)."""
        return _scalars(self.metrics)


@dataclass
class FinetuneResult:
    """What :func:`finetune` made: the run folder, the saved model and its test metrics."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    settings: dict[str, Any]
    figures: list[Path] = field(default_factory=list)

    @property
    def scalars(self) -> dict[str, float]:
        """The headline test numbers only (for tables over runs and seeds)."""
        return _scalars(self.metrics)


# ----------------------------------------------------------------------------------------------
# Labels and data
# ----------------------------------------------------------------------------------------------


class TaskLabels:
    """Per-chip targets for a bound task: from a store label layer or an aligned raster.

    Targets are int64 class ids (``ignore_index`` = no label) or float32 values (NaN = no
    label); pixels the chip marks invalid (no image data) are never labelled.
    """

    def __init__(self, store: ChipStore, task: Task, raster_values: np.ndarray | None = None,
                 unknown_pixels: int = 0) -> None:
        self.store = store
        self.task = task
        self.raster_values = raster_values
        self.unknown_pixels = unknown_pixels

    def target(self, index: int, item: Mapping[str, Any] | None = None) -> np.ndarray:
        item = item if item is not None else self.store[index]
        if self.raster_values is not None:
            t = np.asarray(self.raster_values[index])
        else:
            t = np.asarray(item[self.task.label])
        valid = np.asarray(item["valid"], dtype=bool)
        if isinstance(self.task, SegmentationTask):
            t = t.astype(np.int64)
            ign = self.task.ignore_index
            bad = (t != ign) & ((t < 0) | (t >= len(self.task.classes)))
            if bad.any():
                raise DataError(f"{self.store.root}: chip {index} has class ids outside 0..{len(self.task.classes) - 1} "
                                f"in label {self.task.label!r} (e.g. {int(t[bad][0])})")
            return np.where(valid, t, ign)
        t = t.astype(np.float32)
        return np.where(valid, t, np.float32(np.nan))


def bind_labels(
    task: Task,
    store: ChipStore,
    labels: str | Path | None = None,
    cache: Path | None = None,
) -> tuple[Task, TaskLabels]:
    """Bind ``task`` to the store's label layer or to a label raster; returns (task, labels).

    For a class raster, a task that already has ``codes`` (a trained model's) keeps them;
    otherwise the codes present in the raster over the store's chips become the classes.
    """
    if labels is None:
        if task.label not in store.labels:
            have = ", ".join(store.labels) or "none"
            raise DataError(
                f"{store.root} has no label layer {task.label!r} (it has: {have}); pass --labels RASTER "
                "with a GeoTIFF of the labels, or --label NAME to use another layer"
            )
        bound = task.bind(store.labels[task.label])
        if isinstance(task, SegmentationTask) and task.classes and tuple(task.classes) != bound.classes:
            raise DataError(f"label {task.label!r} of {store.root} has classes {list(bound.classes)}, but the "
                            f"model was trained on {list(task.classes)}")
        return bound, TaskLabels(store, bound)

    from hyperkd.data.labels import NLCD_CLASSES, align_label_raster, class_codes, class_names, encode_classes

    kind = task.label_kind
    values = align_label_raster(labels, store, kind, cache=cache)
    if isinstance(task, SegmentationTask):
        codes = list(task.codes) or class_codes(values)
        if not codes:
            raise DataError(f"label raster {labels} has no labelled pixel over the chips of {store.root}")
        names = list(task.classes) if task.codes else class_names(codes, NLCD_CLASSES if task.name == "landcover" else None)
        spec = LabelSpec("class", classes=tuple(names), ignore_index=task.ignore_index)
        bound_seg = SegmentationTask(label=task.label, name=task.name, classes=tuple(names),
                                     ignore_index=task.ignore_index, codes=tuple(float(c) for c in codes))
        bound_seg.bind(spec)
        ids, unknown = encode_classes(values, codes, task.ignore_index)
        return bound_seg, TaskLabels(store, bound_seg, ids, unknown)
    if not np.isfinite(values).any():
        raise DataError(f"label raster {labels} has no valid value over the chips of {store.root}")
    bound = task.bind(LabelSpec("continuous", unit=getattr(task, "unit", "")))
    return bound, TaskLabels(store, bound, values)


class TaskDataset(Dataset):
    """Chips of a store with one task's targets: ``image`` (C,S,S) float32, ``target`` (S,S), ``index``."""

    def __init__(self, store: ChipStore, indices: Sequence[int], labels: TaskLabels) -> None:
        self.store = store
        self.indices = list(indices)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = self.indices[i]
        item = self.store[idx]
        return {"image": torch.from_numpy(item["image"]),
                "target": torch.from_numpy(self.labels.target(idx, item)), "index": idx}


def split_chips(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Deterministic train / validation / test chip indices (test and validation get >= 1 chip
    each when their fraction is > 0; training keeps at least one)."""
    if n < 1 + (val_fraction > 0) + (test_fraction > 0):
        raise DataError(f"{n} chips are too few to split into train/validation/test; use a larger store")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_test = max(round(test_fraction * n), 1) if test_fraction > 0 else 0
    n_val = max(round(val_fraction * n), 1) if val_fraction > 0 else 0
    while n - n_test - n_val < 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return sorted(train), sorted(val), sorted(test)


def _open_store(store: str | Path | ChipStore) -> ChipStore:
    return store if isinstance(store, ChipStore) else ChipStore(store)


# ----------------------------------------------------------------------------------------------
# Students
# ----------------------------------------------------------------------------------------------


def resolve_student(student: str | Path | HyperspectralMAE, store: ChipStore, init: str = "pretrained"
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
        from hyperkd import hub
        from hyperkd.core.registry import create, registry
        from hyperkd.models.mae import SIZES

        spec = str(student)
        path = Path(spec)
        if path.is_dir() or hub.is_repo_id(spec):
            if path.is_dir() and not ((path / "config.json").exists() or (path / "student" / "config.json").exists()):
                raise WeightsError(f"{path} holds no student (no config.json, no student/config.json); pass a "
                                   "run folder of `hyperkd pretrain`/`distill`, a saved student, or 'raw'")
            loaded = hub.from_pretrained(spec)  # folders, run folders and Hub repos, by model_type
            if not isinstance(loaded, HyperspectralMAE):
                raise HyperKDError(f"student {spec!r} is a {type(loaded).__name__}, not a hyperspectral MAE student")
            model = loaded
        else:
            arch: tuple[str, str] | None = None
            if spec in registry("student"):
                arch = (spec, store.sensor.name)
            elif "-mae-" in spec and spec.rsplit("-mae-", 1)[1] in SIZES:
                arch = (f"mae-{spec.rsplit('-mae-', 1)[1]}", spec.rsplit("-mae-", 1)[0])
            elif spec in registry("sensor"):
                arch = ("mae-tiny", spec)
            if arch is None:
                raise WeightsError(f"student {spec!r} not found: not a folder, 'raw', an architecture name "
                                   "or a Hugging Face repo id (org/name)")
            if init != "random":
                raise HyperKDError(
                    f"student {spec!r} is an architecture, not trained weights; pass init='random' "
                    "(--init random) for an untrained-encoder control, or a trained run folder")
            if arch[1] != store.sensor.name:
                raise HyperKDError(f"student {spec!r} is for sensor {arch[1]!r} but {store.root} holds "
                                   f"{store.sensor.name!r} chips")
            # the store's band table carries its statistics: the encoder standardises with them
            return create("student", arch[0], sensor=store.sensor, img_size=store.chip_size)
    if model.in_chans != store.sensor.num_bands or model.img_size != store.chip_size:
        raise HyperKDError(
            f"the student expects {model.in_chans} bands of {model.img_size} px but {store.root} holds "
            f"{store.sensor.num_bands} bands of {store.chip_size} px; use a store made with the student's "
            "band selection and chip size"
        )
    if list(model.sensor.band_names) != list(store.sensor.band_names):
        raise HyperKDError(f"the student's bands differ from those of {store.root} (same count, other bands); "
                           "use a store with the student's band selection")
    if init == "random":
        return HyperspectralMAE(**encoder_config(model))  # same architecture and standardisation, new weights
    return model


# ----------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------


class FeatureCache:
    """Head inputs per chip (keyed by store index) on the CPU, up to ``max_mb``; valid only while
    the encoder is fixed and the loader does no augmentation."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.rows: dict[int, Tensor] = {}
        self.bytes = 0

    def get(self, keys: Sequence[int]) -> Tensor | None:
        rows = [self.rows.get(int(k)) for k in keys]
        return None if any(r is None for r in rows) else torch.stack(rows)  # type: ignore[arg-type]

    def put(self, keys: Sequence[int], feats: Tensor) -> None:
        for k, f in zip(keys, feats, strict=True):
            if int(k) in self.rows:
                continue
            size = f.numel() * f.element_size()
            if self.bytes + size > self.max_bytes:
                return
            self.rows[int(k)] = f.detach().to("cpu", copy=True)
            self.bytes += size


class FinetuneModule(L.LightningModule):
    """Trains a :class:`PixelModel`'s head (and, for ``full``, its encoder) on one task."""

    def __init__(self, model: PixelModel, lr: float = 1e-3, encoder_lr_scale: float = 0.1,
                 weight_decay: float = 1e-4, warmup_steps: int = 0, cache_mb: float = 1024.0) -> None:
        super().__init__()
        self.model = model
        self.lr, self.encoder_lr_scale, self.weight_decay = lr, encoder_lr_scale, weight_decay
        self.warmup_steps = warmup_steps
        self.cache = FeatureCache(cache_mb) if model.encoder_frozen and model.encoder is not None and cache_mb > 0 else None
        self._val_acc: Any = None

    def _features(self, batch: Mapping[str, Any]) -> Tensor:
        if self.cache is None:
            return self.model.features(batch["image"])
        keys = [int(i) for i in batch["index"]]
        got = self.cache.get(keys)
        if got is not None:
            return got.to(batch["image"].device)
        feats = self.model.features(batch["image"])
        self.cache.put(keys, feats)
        return feats

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self.model.head_forward(self._features(batch))
        loss = self.model.task.loss(out, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_acc = self.model.task.accumulator()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.model.head_forward(self._features(batch))
        self.log("val/loss", self.model.task.loss(out, batch["target"]), batch_size=batch["image"].shape[0])
        self._val_acc.update(self.model.task.predict(out), batch["target"])

    def on_validation_epoch_end(self) -> None:
        for k, v in _scalars(self._val_acc.compute()).items():
            if math.isfinite(v):
                self.log(f"val/{k}", v)

    def configure_optimizers(self) -> dict[str, Any]:
        head, enc = self.model.trainable_groups()
        groups = [{"params": head, "lr": self.lr}]
        if enc:
            groups.append({"params": enc, "lr": self.lr * self.encoder_lr_scale})
        opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(self.warmup_steps, max(total - 1, 0))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------------------------
# finetune / evaluate
# ----------------------------------------------------------------------------------------------


def _target_stats(labels: TaskLabels, indices: Sequence[int]) -> tuple[float, float]:
    acc = RegressionAccumulator(sample_size=0)
    for i in indices:
        t = labels.target(i)
        acc.update(t, t)
    m = acc.compute()
    if not m["pixels"]:
        raise DataError(f"the training chips have no labelled pixel for {labels.task.label!r}")
    return float(m["target_mean"]), float(m["target_std"] or 1.0)


def _check_eval_store(train: ChipStore, other: ChipStore, task: Task, eval_labels: str | Path | None) -> None:
    """Refuse, before any training, a test store the model could not be scored on."""
    if other.sensor.band_names != train.sensor.band_names or other.chip_size != train.chip_size:
        raise HyperKDError(f"the evaluation store {other.root} has other bands or chip size than {train.root}; "
                           "evaluate on a store made with the same band selection and --size")
    if eval_labels is None and task.label not in other.labels:
        have = ", ".join(other.labels) or "none"
        raise DataError(f"the evaluation store {other.root} has no label layer {task.label!r} (it has: {have}); "
                        "pass --eval-labels RASTER")
    if eval_labels is not None and not Path(eval_labels).exists():
        raise DataError(f"label raster {eval_labels} does not exist")


def _student_name(student: Any) -> str:
    if isinstance(student, HyperspectralMAE):
        return f"<{type(student).__name__} object>"
    return str(student)


def finetune(
    *,
    student: str | Path | HyperspectralMAE,
    task: str | Task,
    store: str | Path | ChipStore,
    out: str | Path,
    protocol: str = "frozen",
    init: str = "pretrained",
    seed: int = 0,
    labels: str | Path | None = None,
    label: str | None = None,
    train_chips: int | None = None,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 1e-3,
    encoder_lr_scale: float = 0.1,
    weight_decay: float = 1e-4,
    hidden: int = 128,
    layers: Sequence[int] | int = (-1,),
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    eval_store: str | Path | ChipStore | None = None,
    eval_labels: str | Path | None = None,
    cache_mb: float = 1024.0,
    num_workers: int = 0,
    trainer: Mapping[str, Any] | None = None,
    figures: bool = True,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune ``student`` on ``task`` with ``protocol`` and evaluate it on held-out chips.

    See the module docstring for what ``student``, ``init``, the splits and the outputs
    are. ``trainer`` passes extra Lightning Trainer settings (``accelerator``,
    ``precision``...). Returns test metrics (``result.metrics``; ``result.scalars`` for the
    headline numbers) — one call per (student, task, protocol, seed) makes a table row.
    """
    t0 = time.time()
    out = Path(out)
    if protocol not in PROTOCOLS:
        raise HyperKDError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if (out / "metrics.json").exists() or (out / "finetune.json").exists():
        if not overwrite:
            raise HyperKDError(f"{out} already holds a fine-tune run; choose another --out (or overwrite=True)")
        shutil.rmtree(out)
    base_task = get_task(task, label=label)
    train_store = _open_store(store)
    bound, task_labels = bind_labels(base_task, train_store, labels, cache=out / "labels" / "train.npy" if labels else None)

    tf = 0.0 if eval_store is not None else test_fraction
    train_idx, val_idx, test_idx = split_chips(len(train_store), val_fraction, tf, split_seed)
    if train_chips is not None:
        if train_chips < 1 or train_chips > len(train_idx):
            raise HyperKDError(f"--train-chips {train_chips}: the training split of {train_store.root} has "
                               f"{len(train_idx)} chips (after holding out {len(val_idx)} validation and "
                               f"{len(test_idx)} test chips)")
        train_idx = sorted(np.random.default_rng(seed).permutation(train_idx)[:train_chips].tolist())
    if isinstance(bound, RegressionTask):
        bound = bound.with_target_stats(*_target_stats(task_labels, train_idx))
        task_labels.task = bound

    eval_st = _open_store(eval_store) if eval_store is not None else None
    if eval_st is not None:
        if labels is not None and eval_labels is None:
            eval_labels = labels  # one raster (e.g. national NLCD / CDL) usually covers both stores
        _check_eval_store(train_store, eval_st, bound, eval_labels)

    L.seed_everything(seed, workers=True, verbose=False)
    encoder = resolve_student(student, train_store, init)
    torch.manual_seed(seed)  # the same head initialisation for every student of one architecture at this seed
    cfg: dict[str, Any] = {
        "task": bound.to_dict(),
        "protocol": protocol,
        "img_size": train_store.chip_size,
        "layers": list(layers_tuple(layers)),
        "hidden": hidden,
        "encoder": encoder_config(encoder) if encoder is not None else None,
        "sensor": train_store.sensor.to_dict() if encoder is None else None,
        "student": _student_name(student),
        "init": "none" if encoder is None else init,
    }
    model = PixelModel(cfg)
    if encoder is not None:
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)  # type: ignore[union-attr]
        if missing or unexpected:
            raise WeightsError(f"student weights do not fit its encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")

    settings = {
        "student": _student_name(student), "init": cfg["init"], "task": bound.name, "label": bound.label,
        "kind": bound.kind, "protocol": protocol, "seed": seed, "split_seed": split_seed,
        "store": str(train_store.root.resolve()), "synthetic": train_store.synthetic,
        "labels": str(labels) if labels else None, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "encoder_lr_scale": encoder_lr_scale, "weight_decay": weight_decay, "hidden": hidden,
        "layers": list(layers_tuple(layers)), "train_chips": train_idx, "val_chips": val_idx,
        "test_chips": test_idx, "eval_store": str(eval_st.root.resolve()) if eval_st is not None else None,
        "eval_labels": str(eval_labels) if eval_labels else None,
        "label_scarce": train_chips is not None,
    }
    model.config["trained_on"] = {"store": settings["store"], "train_chips": train_idx, "val_chips": val_idx,
                                  "test_chips": test_idx, "labels": settings["labels"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "finetune.json", settings)

    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TaskDataset(train_store, train_idx, task_labels), batch_size=min(batch_size, len(train_idx)),
                              shuffle=True, generator=gen, num_workers=num_workers)
    val_loader = DataLoader(TaskDataset(train_store, val_idx, task_labels), batch_size=batch_size,
                            num_workers=num_workers) if val_idx else None
    module = FinetuneModule(model, lr=lr, encoder_lr_scale=encoder_lr_scale, weight_decay=weight_decay,
                            cache_mb=cache_mb)
    from hyperkd.training.runner import make_trainer

    tcfg = {"max_epochs": epochs, "accelerator": "auto", "devices": 1, "log_every_n_steps": 1,
            "checkpoint_every_n_steps": 10**9, **dict(trainer or {})}
    if val_loader is None:
        tcfg["limit_val_batches"] = 0
    lt = make_trainer({"trainer": tcfg}, out)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the fixed encoder, on purpose
        lt.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    # model/ is the artefact; Lightning's last.ckpt would duplicate the (possibly large) encoder
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    # exact BatchNorm statistics of the final weights over the training chips (see recompute_batchnorm)
    dev = next(module.model.parameters()).device
    stats_loader = DataLoader(TaskDataset(train_store, train_idx, task_labels), batch_size=batch_size,
                              num_workers=num_workers)
    recompute_batchnorm(module.model, (
        {k: v.to(dev) if torch.is_tensor(v) else v for k, v in b.items()} for b in stats_loader),
        lambda b: module.model.head_forward(module._features(b)))

    model = module.model.cpu().eval()
    model_dir = model.save(out / "model")
    # validation metrics of the final model (Lightning's per-epoch ones in logs/ used moving BN statistics)
    val_metrics = evaluate(model, train_store, chips=val_idx, figures=False,
                           task_labels=task_labels).metrics if val_idx else {}
    if eval_st is not None:
        ev = evaluate(model, eval_st, labels=eval_labels, out=out, figures=figures, settings=settings)
    else:
        # chips=None: the model's recorded test split of its training store
        ev = evaluate(model, train_store, labels=labels, out=out, figures=figures,
                      settings=settings, task_labels=task_labels if labels else None)
    if figures:
        from hyperkd.viz.figures import loss_curves

        p = loss_curves(out / "logs" / "metrics.csv", out / "figures" / "loss.png", keys=["train/loss", "val/loss"])
        if p is not None:
            ev.figures.append(p)
    summary = json.loads((out / "metrics.json").read_text())
    summary["val"] = _scalars(val_metrics)
    summary["time_s"] = round(time.time() - t0, 2)
    atomic_write_json(out / "metrics.json", summary)
    return FinetuneResult(run_dir=out, model_dir=model_dir, metrics=ev.metrics, val_metrics=val_metrics,
                          settings=settings, figures=ev.figures)


def _test_chips_for(model: PixelModel, store: ChipStore) -> list[int] | None:
    trained = model.config.get("trained_on") or {}
    if trained.get("store") and Path(trained["store"]).resolve() == store.root.resolve():
        return list(trained.get("test_chips") or []) or None  # none held out (it was tested on another store)
    return None


@torch.no_grad()
def evaluate(
    model: str | Path | PixelModel,
    store: str | Path | ChipStore,
    *,
    labels: str | Path | None = None,
    chips: Sequence[int] | str | None = None,
    out: str | Path | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    figures: bool = True,
    n_maps: int = 4,
    settings: Mapping[str, Any] | None = None,
    task_labels: TaskLabels | None = None,
) -> EvalResult:
    """Exact test metrics of a fine-tuned model on chips of ``store``; writes JSON and figures to ``out``.

    ``chips``: indices, ``"all"``, or ``None`` — the model's held-out test chips when
    ``store`` is the store it was trained on (so training chips are never scored), else
    every chip. ``labels``: a label raster (as for :func:`finetune`); without it the
    store's label layer named by the task is used. ``task_labels`` reuses targets already
    aligned by :func:`finetune` (internal).
    """
    pm = model if isinstance(model, PixelModel) else PixelModel.load(model)
    st = _open_store(store)
    if task_labels is None:
        cache = Path(out) / "labels" / "eval.npy" if (labels and out is not None) else None
        _, task_labels = bind_labels(pm.task, st, labels, cache=cache)
        task_labels.task = pm.task  # keep the model's classes / codes / target statistics
    if chips is None:
        chosen = _test_chips_for(pm, st)
        idx = chosen if chosen is not None else list(range(len(st)))
        which = "held-out test chips of the training store" if chosen is not None else "all chips"
    elif isinstance(chips, str):
        if chips != "all":
            raise HyperKDError(f"chips must be indices or 'all', got {chips!r}")
        idx, which = list(range(len(st))), "all chips"
    else:
        idx, which = [int(i) for i in chips], "given chips"
    if not idx:
        raise DataError(f"no chips of {st.root} to evaluate on")
    if len(idx) == len(st) and _test_chips_for(pm, st) is not None:
        which = "all chips (including the chips the model was trained on)"
    if pm.in_chans != st.sensor.num_bands or pm.img_size != st.chip_size:
        raise HyperKDError(f"the model expects {pm.in_chans} bands of {pm.img_size} px but {st.root} holds "
                           f"{st.sensor.num_bands} bands of {st.chip_size} px")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pm = pm.to(dev).eval()
    acc = pm.task.accumulator()
    maps: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    loader = DataLoader(TaskDataset(st, idx, task_labels), batch_size=batch_size)
    for batch in loader:
        pred = pm.predict(batch["image"].to(dev)).cpu()
        acc.update(pred, batch["target"])
        for j in range(pred.shape[0]):
            if len(maps) < n_maps:
                maps.append((int(batch["index"][j]), batch["image"][j].numpy(), batch["target"][j].numpy(),
                             pred[j].numpy()))
    metrics = acc.compute()
    if isinstance(pm.task, SegmentationTask) and task_labels.unknown_pixels:
        metrics["pixels_unknown_class"] = task_labels.unknown_pixels
    result = EvalResult(metrics=metrics, chips=idx, store=st.root, out=Path(out) if out is not None else None)
    if out is None:
        return result
    out = Path(out)
    record = {
        "task": pm.task.name, "kind": pm.task.kind, "label": pm.task.label, "protocol": pm.protocol,
        "student": pm.config.get("student"), "init": pm.config.get("init"),
        "store": str(st.root.resolve()), "synthetic": st.synthetic, "labels": str(labels) if labels else None,
        "chips": which, "num_chips": len(idx), **({"settings": dict(settings)} if settings else {}),
        "metrics": metrics,
    }
    atomic_write_json(out / "metrics.json", record)
    if figures:
        from hyperkd.viz.task_figures import confusion_figure, maps_figure, scatter_figure

        figs = out / "figures"
        title = f"{pm.task.name} ({pm.protocol}, {pm.config.get('student')})"
        if isinstance(pm.task, SegmentationTask):
            result.figures.append(confusion_figure(np.asarray(metrics["confusion_matrix"]), pm.task.classes,
                                                   figs / "confusion.png", title=title))
        elif isinstance(acc, RegressionAccumulator):
            result.figures.append(scatter_figure(acc.sample, figs / "scatter.png", unit=pm.task.unit,
                                                 title=title, metrics=metrics))
        if maps:
            seg = isinstance(pm.task, SegmentationTask)
            result.figures.append(maps_figure(
                pm.sensor, [m[1] for m in maps], [m[2] for m in maps], [m[3] for m in maps], figs / "maps.png",
                classes=pm.task.classes if seg else None, unit=getattr(pm.task, "unit", ""),
                titles=[f"chip {m[0]}" for m in maps],
                ignore_index=pm.task.ignore_index if seg else -1))
    return result


__all__ = ["RAW", "EvalResult", "FinetuneModule", "FinetuneResult", "TaskDataset", "TaskLabels", "bind_labels",
           "evaluate", "finetune", "resolve_student", "split_chips"]
