"""Fine-tuning and evaluation of students on downstream tasks (``hyperkd finetune`` / ``evaluate``).

One call fine-tunes one (student, task, protocol, seed) and evaluates it on held-out chips::

    from hyperkd.evaluation.finetune import finetune, evaluate

    res = finetune(student="runs/kd", task="landcover", store="data/enmap", seed=0,
                   out="runs/ft/kd-landcover-s0")                        # protocol "fused"
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
``label=``) or from ``labels=``: a raster, a folder of raster tiles or a vector file,
aligned onto every chip (:mod:`hyperkd.data.labels`; ``label_nodata=`` is the ignore value,
``label_field=`` a vector attribute, ``legend=`` a CSV or QGIS style of class names). The
chips are split once, by ``split_seed`` (default 0, the same for every run), into train /
validation / test; ``seed`` changes the initialisation,
the batch order and — with ``train_chips=N`` (the label-scarce setting) — which N chips of
the training part are used. So runs with different students or seeds are scored on the
same test chips, and at one seed two students see the same training chips in the same order
and start from the same head weights (paired comparisons). ``eval_store=`` tests and
``val_store=`` validates on a separate store instead of a split (``eval_labels=`` /
``val_labels=`` default to ``labels=``: one national raster usually covers every store).
``train_list=`` / ``val_list=`` / ``test_list=`` fix parts by chip lists (chip indices or source
files; :mod:`hyperkd.data.splits`). ``label_fraction=F`` trains on a fixed fraction of the
labelled training pixels, drawn from ``split_seed`` and nested across fractions
(:func:`~hyperkd.evaluation.labels.label_fraction_subset`); validation and test labels are whole.
:func:`evaluate` never scores a chip the model trained or validated on unless asked.

Protocols (:mod:`hyperkd.models.pixel`): ``fused`` (the default: spectra + encoder
features of several blocks at pixel resolution), ``fused-full``, ``upernet``, and the
token-grid heads ``frozen`` (the HyperKD paper's), ``linear``, ``full``. ``loss`` is ``ce``,
``weighted`` (class weights from the training chips' labels) or ``focal``
(:mod:`hyperkd.training.finetune`); the weights used are recorded in ``finetune.json``.

Training uses Lightning (:func:`hyperkd.training.runner.make_trainer`: CSV/TensorBoard logs,
safetensors checkpoints) with :class:`~hyperkd.training.finetune.FinetuneModule`,
which also trains under a plain ``lightning.Trainer``. With a fixed encoder (every protocol
but ``full`` / ``fused-full``) the encoder's output for a chip never changes (no augmentation), so it is
computed once and cached on the CPU (up to ``cache_mb``): later epochs only train the head.

The pieces live by concern: splits in :mod:`hyperkd.data.splits`, label binding in
:mod:`hyperkd.evaluation.labels`, datasets in :mod:`hyperkd.evaluation.datasets`, metrics in
:mod:`hyperkd.evaluation.metrics`, results in :mod:`hyperkd.evaluation.results`, the starting
encoder in :mod:`hyperkd.evaluation.students`; this
module keeps the two runners (:func:`finetune`, :func:`evaluate`) and re-exports the rest.

Outputs in ``out``: ``finetune.json`` (settings), ``model/`` (config.json +
model.safetensors, :class:`~hyperkd.models.pixel.PixelModel`), ``metrics.json`` (test
metrics), ``figures/`` (confusion matrix or scatter, predicted maps), ``logs/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.io import atomic_write_json
from hyperkd.data.splits import ChipList, check_heldout_store, list_record, split_chips, split_store
from hyperkd.data.store import ChipStore
from hyperkd.evaluation.compare import headline
from hyperkd.evaluation.datasets import TaskDataset, open_store
from hyperkd.evaluation.labels import (
    TaskLabels,
    bind_labels,
    has_labelled,
    label_fraction_subset,
    no_labelled_pixel,
    target_stats,
)
from hyperkd.evaluation.metrics import RegressionAccumulator
from hyperkd.evaluation.results import EvalResult, FinetuneResult
from hyperkd.evaluation.students import RAW, resolve_student
from hyperkd.evaluation.tasks import RegressionTask, SegmentationTask, Task, get_task
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.models.pixel import (
    CROP_PROTOCOLS,
    DEFAULT_FUSION,
    DEFAULT_PROTOCOL,
    PixelModel,
    check_fusion,
    check_protocol,
    recompute_batchnorm,
)
from hyperkd.recipes import check_keys
from hyperkd.training.checks import trainer_keys
from hyperkd.training.finetune import (
    DEFAULT_LOSS,
    FinetuneModule,
    class_weights_of,
    default_epochs,
    resolve_loss,
    val_every,
)
from hyperkd.training.runner import check_out_folder, remove_created

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# finetune / evaluate
# ----------------------------------------------------------------------------------------------


def _check_eval_store(train: ChipStore, other: ChipStore, task: Task, eval_labels: str | Path | None) -> None:
    """Refuse, before any training, a test store the model could not be scored on."""
    check_heldout_store(train, other, "evaluation store")  # bands by wavelength, chip size
    if eval_labels is None and task.label not in other.labels:
        have = ", ".join(other.labels) or "none"
        raise DataError(
            f"the evaluation store {other.root} has no label layer {task.label!r} (it has: {have}); "
            "pass --eval-labels RASTER"
        )
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
    protocol: str = DEFAULT_PROTOCOL,
    init: str = "pretrained",
    seed: int = 0,
    labels: str | Path | None = None,
    label: str | None = None,
    label_nodata: float | None = None,
    label_field: str | None = None,
    legend: str | Path | None = None,
    train_chips: int | None = None,
    epochs: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-3,
    encoder_lr_scale: float = 0.1,
    weight_decay: float = 1e-4,
    hidden: int = 128,
    fusion: str = DEFAULT_FUSION,
    layers: Sequence[int] | int | None = None,
    loss: str = DEFAULT_LOSS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    eval_store: str | Path | ChipStore | None = None,
    eval_labels: str | Path | None = None,
    val_store: str | Path | ChipStore | None = None,
    val_labels: str | Path | None = None,
    train_list: ChipList | None = None,
    val_list: ChipList | None = None,
    test_list: ChipList | None = None,
    label_fraction: float | None = None,
    train_crop: int | None = None,
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
    check_out_folder(out)
    check_protocol(protocol)
    check_fusion(fusion)
    replace = (out / "metrics.json").exists() or (out / "finetune.json").exists()
    if replace and not overwrite:
        raise HyperKDError(
            f"{out} already holds a fine-tune run; choose another --out, or pass --overwrite "
            "(overwrite=True in Python) to replace it"
        )
    if (epochs is not None and epochs < 1) or batch_size < 1 or not lr > 0:
        raise HyperKDError(
            f"--epochs {epochs} and --batch-size {batch_size} must be at least 1, --lr {lr:g} above 0"
        )
    if train_crop is not None and (train_crop < 1 or protocol not in CROP_PROTOCOLS):
        raise HyperKDError(
            f"--train-crop {train_crop}: a positive number of pixels, with --protocol "
            f"{' or '.join(CROP_PROTOCOLS)} (got --protocol {protocol}); leave it out to train on whole chips"
        )
    check_keys("trainer", trainer, trainer_keys())
    for flag, f in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise HyperKDError(
                f"{flag} {f:g} must be at least 0 and below 1 (a share of the training store's chips)"
            )
    if (0.0 if val_store is not None else val_fraction) + (
        0.0 if eval_store is not None else test_fraction
    ) >= 1:
        raise HyperKDError(
            f"--val-fraction {val_fraction:g} + --test-fraction {test_fraction:g} leave no chip to train on"
        )
    base_task = get_task(task, label=label)
    loss = resolve_loss(loss, base_task)  # "auto": weighted for segmentation, the task's MSE for regression
    train_store = open_store(store)
    eval_st = open_store(eval_store) if eval_store is not None else None
    val_st = open_store(val_store) if val_store is not None else None
    for flag, other in (("--eval-data", eval_st), ("--val-data", val_st)):
        if other is not None and other.root.resolve() == train_store.root.resolve():
            raise HyperKDError(
                f"{flag} {other.root} is the training store: its chips would be trained on; "
                f"give another store, or omit {flag} to hold out a split of the training store"
            )
    # before the labels are aligned: a bad list fails at once
    train_idx, val_idx, test_idx = split_store(
        train_store,
        None if val_store is not None else val_fraction,  # None: from another store
        None if eval_store is not None else test_fraction,
        split_seed,
        train_list=train_list,
        val_list=val_list,
        test_list=test_list,
    )
    L.seed_everything(seed, workers=True, verbose=False)
    encoder = resolve_student(student, train_store, init)  # before the label cache is written
    if replace:  # everything the old run could be refused for has passed: replace it now
        shutil.rmtree(out)
    existed = {p.name for p in out.iterdir()} if out.is_dir() else None
    try:  # a failed fine-tune removes what it created (there is no resume: a rerun starts afresh)
        label_opts: dict[str, Any] = {"nodata": label_nodata, "field": label_field, "legend": legend}
        bound, task_labels = bind_labels(
            base_task,
            train_store,
            labels,
            cache=out / "labels" / "train.npy" if labels else None,
            **label_opts,
        )

        if train_chips is not None:
            if train_chips < 1 or train_chips > len(train_idx):
                raise HyperKDError(
                    f"--train-chips {train_chips}: the training split of {train_store.root} has "
                    f"{len(train_idx)} chips (after holding out {len(val_idx)} validation and "
                    f"{len(test_idx)} test chips)"
                )
            train_idx = sorted(np.random.default_rng(seed).permutation(train_idx)[:train_chips].tolist())
        train_labels = label_fraction_subset(
            task_labels, train_idx, label_fraction, split_seed
        )  # whole if None
        if isinstance(bound, RegressionTask):
            bound = bound.with_target_stats(*target_stats(train_labels, train_idx))
            task_labels.task = bound
        weights = class_weights_of(train_labels, train_idx) if loss == "weighted" else None

        test_labels, test_chips, test_st = task_labels, test_idx, train_store  # what evaluate() scores
        if eval_st is not None:
            if labels is not None and eval_labels is None:
                eval_labels = labels  # one raster (e.g. national NLCD / CDL) usually covers both stores
            _check_eval_store(train_store, eval_st, bound, eval_labels)
            cache = out / "labels" / "eval.npy" if eval_labels else None  # evaluate()'s cache
            _, test_labels = bind_labels(  # codes training lacks: refused now, not after training
                bound, eval_st, eval_labels, cache=cache, held_out="evaluation", **label_opts
            )
            test_labels.task = bound
            test_chips, test_st = list(range(len(eval_st))), eval_st
        if test_chips and not has_labelled(test_labels, test_chips):
            where = eval_labels if eval_st is not None else labels
            raise no_labelled_pixel(test_st, where, bound, f"the {len(test_chips)} test chip(s)")
        val_task_labels = task_labels
        if val_st is not None:
            if labels is not None and val_labels is None:
                val_labels = labels
            _check_eval_store(train_store, val_st, bound, val_labels)
            val_idx = list(range(len(val_st)))
            cache = out / "labels" / "val.npy" if val_labels else None
            _, val_task_labels = bind_labels(bound, val_st, val_labels, cache=cache, **label_opts)
            val_task_labels.task = bound  # the training labels' classes, codes and target statistics

        # None: at least MIN_EPOCHS epochs and MIN_STEPS steps (the loader keeps its last partial batch)
        epochs = (
            epochs
            if epochs is not None
            else default_epochs(-(-len(train_idx) // min(batch_size, len(train_idx))))
        )
        torch.manual_seed(seed)  # the same head initialisation for every student of one architecture
        init_name = "none" if encoder is None else init
        model = PixelModel.build(
            bound,
            encoder=encoder,
            sensor=train_store.sensor,
            img_size=train_store.chip_size,
            protocol=protocol,
            layers=layers,
            hidden=hidden,
            fusion=fusion,
            student=_student_name(student),
            init=init_name,
        )

        settings = {
            "student": _student_name(student),
            "init": init_name,
            "task": bound.name,
            "label": bound.label,
            "kind": bound.kind,
            "protocol": protocol,
            "seed": seed,
            "split_seed": split_seed,
            "store": str(train_store.root.resolve()),
            "synthetic": train_store.synthetic,
            "labels": str(labels) if labels else None,
            "label_nodata": label_nodata,
            "label_field": label_field,
            "legend": str(legend) if legend else None,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "encoder_lr_scale": encoder_lr_scale,
            "weight_decay": weight_decay,
            "hidden": hidden,
            "fusion": fusion,
            "layers": list(model.layers),
            "loss": loss,
            "class_weights": weights,
            "train_crop": train_crop,
            "train_chips": train_idx,
            "val_chips": val_idx,
            "test_chips": test_idx,
            "eval_store": str(eval_st.root.resolve()) if eval_st is not None else None,
            "eval_labels": str(eval_labels) if eval_labels else None,
            "val_store": str(val_st.root.resolve()) if val_st is not None else None,
            "val_labels": str(val_labels) if val_labels else None,
            "label_scarce": train_chips is not None or label_fraction is not None,
            **train_labels.record(),
            "train_list": list_record(train_list),
            "val_list": list_record(val_list),
            "test_list": list_record(test_list),
        }
        model.config["trained_on"] = {
            "store": settings["store"],
            "train_chips": train_idx,
            "val_chips": val_idx,
            "test_chips": test_idx,
            "val_store": settings["val_store"],
            "labels": settings["labels"],
            "label_nodata": label_nodata,
            "label_field": label_field,
            "legend": _legend_record(legend),
            "label_fraction": label_fraction,
        }
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "finetune.json", settings)

        gen = torch.Generator().manual_seed(seed)
        train_loader = DataLoader(
            TaskDataset(train_store, train_idx, train_labels),
            batch_size=min(batch_size, len(train_idx)),
            shuffle=True,
            generator=gen,
            num_workers=num_workers,
        )
        val_data = val_st if val_st is not None else train_store
        val_loader = (
            DataLoader(
                TaskDataset(val_data, val_idx, val_task_labels),
                batch_size=batch_size,
                num_workers=num_workers,
                # its own generator: each pass over a loader draws a seed from it, and drawn from the
                # global one, how often training validates would change the dropout masks
                generator=torch.Generator().manual_seed(seed),
            )
            if val_idx
            else None
        )
        module = FinetuneModule(
            model,
            lr=lr,
            encoder_lr_scale=encoder_lr_scale,
            weight_decay=weight_decay,
            cache_mb=cache_mb,
            loss=loss,
            class_weights=weights,
            train_crop=train_crop,
        )
        from hyperkd.training.runner import make_trainer

        tcfg = {
            "max_epochs": epochs,
            "accelerator": "auto",
            "devices": 1,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": 10**9,
            # per-epoch validation only draws the val/loss curve (the reported validation metrics
            # are computed once, on the final model): about ten points are enough, and on few
            # chips with many epochs validating every epoch took a fifth of the run
            "check_val_every_n_epoch": val_every(epochs),
            **dict(trainer or {}),
        }
        if val_loader is None:
            tcfg["limit_val_batches"] = 0
        lt = make_trainer({"trainer": tcfg}, out)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*module\\(s\\) in eval mode.*"
            )  # the fixed encoder, on purpose
            lt.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        # model/ is the artefact; Lightning's last.ckpt would duplicate the (possibly large) encoder
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        # exact BatchNorm statistics of the final weights over the training chips (see recompute_batchnorm)
        dev = next(module.model.parameters()).device
        stats_loader = DataLoader(
            TaskDataset(train_store, train_idx, task_labels), batch_size=batch_size, num_workers=num_workers
        )
        recompute_batchnorm(
            module.model,
            ({k: v.to(dev) if torch.is_tensor(v) else v for k, v in b.items()} for b in stats_loader),
            module.forward_batch,
        )

        model = module.model.cpu().eval()
        model_dir = model.save(out / "model")
        # validation metrics of the final model (Lightning's per-epoch ones in logs/ used moving BN statistics)
        val_metrics = (
            evaluate(model, val_data, chips=val_idx, figures=False, task_labels=val_task_labels).metrics
            if val_idx and has_labelled(val_task_labels, val_idx)  # unlabelled validation chips: no metrics
            else {}
        )
        if eval_st is not None:
            ev = evaluate(
                model,
                eval_st,
                labels=eval_labels,
                out=out,
                figures=figures,
                settings=settings,
                task_labels=test_labels,
            )
        else:
            # chips=None: the model's recorded test split of its training store
            ev = evaluate(
                model,
                train_store,
                labels=labels,
                out=out,
                figures=figures,
                settings=settings,
                task_labels=task_labels if labels else None,
            )
        if figures:
            from hyperkd.viz.figures import loss_curves

            p = loss_curves(
                out / "logs" / "metrics.csv", out / "figures" / "loss.png", keys=["train/loss", "val/loss"]
            )
            if p is not None:
                ev.figures.append(p)
        summary = json.loads((out / "metrics.json").read_text())
        summary["val"] = headline(val_metrics)
        summary["time_s"] = round(time.time() - t0, 2)
        atomic_write_json(out / "metrics.json", summary)
        return FinetuneResult(
            run_dir=out,
            model_dir=model_dir,
            metrics=ev.metrics,
            val_metrics=val_metrics,
            settings=settings,
            figures=ev.figures,
        )
    except BaseException:
        remove_created(out, existed)
        raise


def _legend_record(legend: str | Path | None) -> dict[str, list[str | None]] | None:
    """``code -> [name, colour]`` of a legend CSV, recorded with the model (maps reuse the colours)."""
    if not legend:
        return None
    from hyperkd.data.labels import read_legend

    names, colours = read_legend(legend)
    return {str(c): [n, colours.get(c)] for c, n in names.items()}


def _used_chips(model: PixelModel, store: ChipStore) -> set[int] | None:
    """Chips of ``store`` the model was trained or validated on; ``None`` if it is not its training store."""
    trained = model.config.get("trained_on") or {}
    if trained.get("store") and Path(trained["store"]).resolve() == store.root.resolve():
        used = set(trained.get("train_chips") or [])
        if not trained.get("val_store"):  # validation chips came from this store too
            used |= set(trained.get("val_chips") or [])
        return used
    return None


def _default_chips(model: PixelModel, store: ChipStore) -> tuple[list[int], str]:
    """The chips :func:`evaluate` scores by default: never one the model trained or validated on."""
    used = _used_chips(model, store)
    if used is None:
        return list(range(len(store))), "all chips"
    test = list((model.config.get("trained_on") or {}).get("test_chips") or [])
    if test:  # the recorded split: every run on this store is scored on the same chips
        return test, "held-out test chips of the training store"
    held = [i for i in range(len(store)) if i not in used]
    if not held:
        raise DataError(
            f"every chip of {store.root} was used to train or validate this model (it was tested on another "
            "store); evaluate on another store, or pass --all-chips (chips='all') to score its training chips"
        )
    return held, "chips of the training store the model neither trained nor validated on"


@torch.no_grad()
def evaluate(
    model: str | Path | PixelModel,
    store: str | Path | ChipStore,
    *,
    labels: str | Path | None = None,
    label_nodata: float | None = None,
    label_field: str | None = None,
    legend: str | Path | None = None,
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

    ``chips``: indices, ``"all"``, or ``None`` — on the store the model was trained on, the
    chips it neither trained nor validated on (refused if there are none), else every chip.
    ``labels``: a raster, folder of rasters or vector file (as for :func:`finetune`;
    ``label_nodata``, ``label_field`` and ``legend`` default to those it was trained with);
    without it the store's label layer named by the task is used. The metrics JSON lists
    the chips scored. ``task_labels`` reuses targets already aligned by :func:`finetune`
    (internal).
    """
    pm = model if isinstance(model, PixelModel) else PixelModel.load(model)
    st = open_store(store)
    if task_labels is None:
        trained = pm.config.get("trained_on") or {}
        cache = Path(out) / "labels" / "eval.npy" if (labels and out is not None) else None
        _, task_labels = bind_labels(
            pm.task,
            st,
            labels,
            cache=cache,
            nodata=label_nodata if label_nodata is not None else trained.get("label_nodata"),
            field=label_field if label_field is not None else trained.get("label_field"),
            legend=legend,
        )
        task_labels.task = pm.task  # keep the model's classes / codes / target statistics
    if chips is None:
        idx, which = _default_chips(pm, st)
    elif isinstance(chips, str):
        if chips != "all":
            raise HyperKDError(f"chips must be indices or 'all', got {chips!r}")
        idx, which = list(range(len(st))), "all chips"
    else:
        idx, which = [int(i) for i in chips], "given chips"
    if not idx:
        raise DataError(f"no chips of {st.root} to evaluate on")
    used = _used_chips(pm, st)
    if used and used & set(idx):
        which += f" (including {len(used & set(idx))} the model was trained or validated on)"
    if pm.in_chans != st.sensor.num_bands or pm.img_size != st.chip_size:
        raise HyperKDError(
            f"the model expects {pm.in_chans} bands of {pm.img_size} px but {st.root} holds "
            f"{st.sensor.num_bands} bands of {st.chip_size} px"
        )
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    pm = pm.to(dev).eval()
    acc = pm.task.accumulator()
    maps: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    loader = DataLoader(TaskDataset(st, idx, task_labels), batch_size=batch_size)
    for batch in loader:
        pred = pm.predict(batch["image"].to(dev)).cpu()
        acc.update(pred, batch["target"])
        for j in range(pred.shape[0]):
            if len(maps) < n_maps:
                maps.append(
                    (
                        int(batch["index"][j]),
                        batch["image"][j].numpy(),
                        batch["target"][j].numpy(),
                        pred[j].numpy(),
                    )
                )
    metrics = acc.compute()
    if not metrics["pixels"]:  # every scored pixel is no-label: NaN/empty metrics would mislead
        raise no_labelled_pixel(st, labels, pm.task, f"the {len(idx)} chip(s) scored ({which})")
    if isinstance(pm.task, SegmentationTask) and task_labels.unknown_pixels:
        metrics["pixels_unknown_class"] = task_labels.unknown_pixels
    result = EvalResult(metrics=metrics, chips=idx, store=st.root, out=Path(out) if out is not None else None)
    if out is None:
        return result
    out = Path(out)
    record = {
        "task": pm.task.name,
        "kind": pm.task.kind,
        "label": pm.task.label,
        "protocol": pm.protocol,
        "student": pm.config.get("student"),
        "init": pm.config.get("init"),
        "store": str(st.root.resolve()),
        "synthetic": st.synthetic,
        "labels": str(labels) if labels else None,
        "chips": which,
        "num_chips": len(idx),
        "scored_chips": idx,
        "scored_sources": sorted({str(st.chips[i].get("source", "")) for i in idx} - {""}),
        **({"settings": dict(settings)} if settings else {}),
        "metrics": metrics,
    }
    atomic_write_json(out / "metrics.json", record)
    if figures:
        from hyperkd.viz.task_figures import confusion_figure, maps_figure, scatter_figure

        figs = out / "figures"
        title = f"{pm.task.name} ({pm.protocol}, {pm.config.get('student')})"
        if isinstance(pm.task, SegmentationTask):
            result.figures.append(
                confusion_figure(
                    np.asarray(metrics["confusion_matrix"]),
                    pm.task.classes,
                    figs / "confusion.png",
                    title=title,
                )
            )
        elif isinstance(acc, RegressionAccumulator):
            result.figures.append(
                scatter_figure(
                    acc.sample, figs / "scatter.png", unit=pm.task.unit, title=title, metrics=metrics
                )
            )
        if maps:
            seg = isinstance(pm.task, SegmentationTask)
            result.figures.append(
                maps_figure(
                    pm.sensor,
                    [m[1] for m in maps],
                    [m[2] for m in maps],
                    [m[3] for m in maps],
                    figs / "maps.png",
                    classes=pm.task.classes if seg else None,
                    unit=getattr(pm.task, "unit", ""),
                    titles=[f"chip {m[0]}" for m in maps],
                    ignore_index=pm.task.ignore_index if seg else -1,
                )
            )
    return result


__all__ = [
    "RAW",
    "EvalResult",
    "FinetuneModule",
    "FinetuneResult",
    "TaskDataset",
    "TaskLabels",
    "bind_labels",
    "evaluate",
    "finetune",
    "resolve_student",
    "split_chips",
]
