"""HyperKD distillation: a frozen multispectral teacher guides a hyperspectral MAE student.

``distill(recipe, out)`` is what ``hyperkd distill`` calls. One training step:

1. the chip ``(B, Cs, H, W)`` (student-sensor reflectance) goes through the **aligner**
   to the teacher's bands, ``(B, Ct, H, W)`` -- the teacher's view of the same scene;
2. the **masker** picks the hidden patches (``spatial-feature`` scores the aligned view:
   ``distill.mask_on``);
3. the student encodes the visible patches and reconstructs the hidden ones;
4. the **teacher** encodes the *whole* aligned chip, frozen, under ``torch.inference_mode``
   (a teacher sensor of another GSD sees the chip's ground at its own GSD, and its tokens are
   pooled onto the student's by ground position: :class:`~hyperkd.components.aligners.GroundMatch`);
5. for every layer pair in ``distill.pairs`` (``[student_block, teacher_block]``), the
   student's visible tokens are projected to the teacher's width by a trainable projector
   and the teacher's tokens are taken at the same patch positions (token grids of
   different size are interpolated, :func:`hyperkd.components.losses.teacher_tokens_at`);
6. the recipe's loss terms are summed: reconstruction (``mse``, ``ssim``, ``sam``) and
   distillation (``kld``, ``cosine``).

Because the teacher sees the full chip, its features depend only on the chip -- not on
the mask, the masker or the student -- so with a fixed aligner they can be cached across
epochs (``distill.cache_teacher``); the run reports what the cache saved in
``RUN/distill.json``. The run folder is pretraining's (:mod:`hyperkd.training.runner`) plus
``figures/distill_loss.png`` and ``distill.json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperkd import recipes as recipes_mod
from hyperkd.components.aligners import ground_match_for
from hyperkd.components.losses import teacher_tokens_at
from hyperkd.core.errors import HyperKDError, RecipeError, WeightsError
from hyperkd.core.interfaces import Aligner, Teacher
from hyperkd.core.registry import create
from hyperkd.data.cache import FeatureCache as TeacherCache  # teacher features per chip
from hyperkd.data.loader import NUM_TRANSFORMS
from hyperkd.data.multistore import MAX_STORES
from hyperkd.hub.teachers import teacher_spec
from hyperkd.models.mae import HyperspectralMAE, MAEOutput
from hyperkd.training.callbacks import DistillReport
from hyperkd.training.checks import check_components
from hyperkd.training.parts import Spec, build_student, plain_hparams, split_spec
from hyperkd.training.pretrain import MAEModule
from hyperkd.training.runner import RunResult, fit, plan_run, recipe_for, store_field

PROJECTORS = ("linear", "mlp")


def make_projector(student_dim: int, teacher_dim: int, kind: str = "linear") -> nn.Module:
    """Student width -> teacher width: ``linear`` (default) or ``mlp`` (Linear-GELU-Linear)."""
    if kind == "linear":
        return nn.Linear(student_dim, teacher_dim)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(student_dim, teacher_dim), nn.GELU(), nn.Linear(teacher_dim, teacher_dim)
        )
    raise RecipeError(f"distill.projector must be one of {', '.join(PROJECTORS)}, got {kind!r}")


class DistillModule(MAEModule):
    """MAE training of ``student`` plus distillation from a frozen ``teacher``.

    ``pairs``: ``[(student_block, teacher_block), ...]`` (negative = from the end); one
    projector per pair. ``mask_on``: ``"aligned"`` (the masker sees the teacher-band view,
    as spatial feature-guided masking intends) or ``"student"``. ``cache_teacher``:
    ``"auto"`` (on unless the aligner is trainable), ``True`` or ``False``.
    ``teacher_img_size``: resize the aligned chip to this size before the teacher
    (``None``: as is; the chip size must then be a multiple of the teacher's patch).

    Parts may be given by name, as in a recipe, or already built; unnamed ``aligner``,
    ``masker`` and ``losses`` are the ``hyperkd`` recipe's (spectral-range, spatial-feature,
    MSE + SSIM + KLD)::

        DistillModule(student={"name": "enmap-mae-tiny", "img_size": 64},
                      teacher={"name": "prithvi", "weights": "default"}, pairs=[[-1, -1]])

    Named parts are recorded with ``save_hyperparameters`` (``load_from_checkpoint`` rebuilds
    them, the teacher from its weights); pre-built ones must be passed again.

    The teacher is a submodule (so it follows the module to its device) but is left out
    of ``state_dict``: checkpoints hold the student, projectors and a learned aligner only,
    and the teacher is rebuilt from the recipe on resume.
    """

    RECIPE = "hyperkd"

    def __init__(
        self,
        student: HyperspectralMAE | Spec,
        teacher: Teacher | Spec,
        aligner: Aligner | Spec | None = None,
        masker: Any = None,
        losses: Mapping[str, Any] | None = None,
        *,
        mask_ratio: float | None = None,
        optim: Mapping[str, Any] | None = None,
        pairs: Sequence[Sequence[int]] = ((-1, -1),),
        projector: str = "linear",
        mask_on: str = "aligned",
        cache_teacher: bool | str = "auto",
        cache_max_mb: float = 2048.0,
        teacher_img_size: int | None = None,
        ground_match: str = "auto",
    ) -> None:
        hparams = plain_hparams(
            student=student,
            teacher=teacher,
            aligner=aligner,
            masker=masker,
            losses=losses,
            mask_ratio=mask_ratio,
            optim=optim,
            pairs=[list(p) for p in pairs],
            projector=projector,
            mask_on=mask_on,
            cache_teacher=cache_teacher,
            cache_max_mb=cache_max_mb,
            teacher_img_size=teacher_img_size,
            ground_match=ground_match,
        )
        student = build_student(student)
        teacher = teacher if isinstance(teacher, Teacher) else teacher_from_spec(teacher)
        if not isinstance(aligner, nn.Module):
            aligner = build_aligner(
                {"aligner": aligner or recipes_mod.load_recipe(self.RECIPE)["aligner"]}, student, teacher
            )
        pairs = [(int(s), int(t)) for s, t in pairs]
        if not pairs:
            raise RecipeError("distill.pairs is empty; give at least one [student_block, teacher_block]")
        for s, t in pairs:
            if not -student.depth <= s < student.depth:
                raise RecipeError(
                    f"distill.pairs: student block {s} out of range (student depth {student.depth})"
                )
            if not -teacher.depth <= t < teacher.depth:
                raise RecipeError(
                    f"distill.pairs: teacher block {t} out of range (teacher depth {teacher.depth})"
                )
        super().__init__(
            student,
            masker,
            losses,
            mask_ratio=mask_ratio,
            optim=optim,
            feature_layers=tuple(s for s, _ in pairs),
        )
        self.hparams.pop("feature_layers", None)  # derived from pairs; not an argument of this class
        self.save_hyperparameters(hparams)
        if mask_on not in ("aligned", "student"):
            raise RecipeError(f"distill.mask_on must be 'aligned' or 'student', got {mask_on!r}")
        if (
            aligner.source.num_bands != student.in_chans
            or aligner.target.num_bands != teacher.sensor.num_bands
        ):
            raise HyperKDError(
                f"aligner maps {aligner.source.num_bands} -> {aligner.target.num_bands} bands, but the student "
                f"has {student.in_chans} and the teacher {teacher.sensor.num_bands}"
            )
        if getattr(teacher, "input_unit", "reflectance") != "reflectance":
            raise HyperKDError(
                f"teacher {type(teacher).__name__} takes {teacher.input_unit!r}, but aligners hand teachers "
                "surface reflectance; give the teacher a reflectance front end (see hyperkd.core.interfaces.Teacher)"
            )
        # sensors of different GSD: the teacher sees the chip's ground at its own GSD (aligners.GroundMatch)
        self.ground = ground_match_for(
            student.sensor,
            student.img_size,
            student.patch_size,
            teacher.sensor,
            teacher.patch_size,
            ground_match,
        )
        if self.ground is not None and teacher_img_size and int(teacher_img_size) != self.ground.teacher_size:
            raise RecipeError(
                f"distill.teacher_img_size {teacher_img_size} would rescale the teacher's {self.ground.teacher_gsd:g} m "
                f"pixels; the student's chip covers {self.ground.teacher_size} px of them: leave it unset "
                "(or set distill.ground_match=off)"
            )
        size = (
            self.ground.teacher_size if self.ground is not None else int(teacher_img_size or student.img_size)
        )
        if size % teacher.patch_size:
            raise RecipeError(
                f"the teacher's input ({size} px) is not a multiple of its patch size {teacher.patch_size}; "
                f"set distill.teacher_img_size to a multiple of {teacher.patch_size}"
            )
        self.teacher = teacher.freeze()
        self.aligner = aligner
        self.pairs = pairs
        self.teacher_layers = [t for _, t in pairs]
        self.teacher_img_size = int(teacher_img_size) if teacher_img_size else None
        self.teacher_grid = (size // teacher.patch_size, size // teacher.patch_size)
        self.mask_on = mask_on
        self.uses_teacher = any(
            getattr(t, "needs_teacher", False) and w != 0 for w, t in self.loss_terms.values()
        )
        # no projector without a teacher term: parameters that never get a gradient break DDP
        self.projectors = nn.ModuleList(
            [make_projector(student.embed_dim, teacher.embed_dim, projector) for _ in pairs]
            if self.uses_teacher
            else []
        )
        self.aligner_trainable = any(p.requires_grad for p in aligner.parameters())
        use_cache = (not self.aligner_trainable) if cache_teacher == "auto" else bool(cache_teacher)
        if use_cache and self.aligner_trainable:
            raise RecipeError(
                "distill.cache_teacher: the aligner is trainable, so teacher features change; "
                "set cache_teacher to auto or false"
            )
        self.cache = TeacherCache(cache_max_mb) if use_cache else None
        self.teacher_seconds = 0.0
        self.teacher_chips = 0
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    # -- keep the teacher frozen and out of checkpoints -----------------------------------------
    def train(self, mode: bool = True) -> DistillModule:
        """Switch student, projectors and aligner; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- one step ---------------------------------------------------------------------------
    def make_mask(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """The masker's choice on the aligned (teacher-band) view or on the chip (``mask_on``)."""
        image = batch["image"]
        if self.mask_on == "aligned":
            with torch.no_grad():
                image = self.aligner(image)
        return self.masker(image, self.student.grid, self.mask_ratio, generator)

    def teacher_input(self, image: Tensor) -> Tensor:
        """The aligned chip the teacher sees (resized to ``teacher_img_size`` if set)."""
        x = self.aligner(image)
        if self.ground is not None:  # the chip's ground at the teacher's GSD
            return self.ground.pixels(x)
        if self.teacher_img_size and x.shape[-1] != self.teacher_img_size:
            x = F.interpolate(x, size=(self.teacher_img_size,) * 2, mode="bilinear", align_corners=False)
        return x

    def _run_teacher(self, image: Tensor) -> list[Tensor]:
        """Encode chips with the frozen teacher, timing it (for ``distill.json``)."""
        sync = image.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(image.device)
        t0 = time.perf_counter()
        if self.aligner_trainable:  # gradients must reach the aligner through the frozen teacher
            feats = self.teacher.forward_features(self.teacher_input(image), self.teacher_layers)
        else:
            with torch.inference_mode():
                feats = self.teacher.forward_features(self.teacher_input(image), self.teacher_layers)
            feats = [f.clone() for f in feats]  # inference tensors cannot enter autograd
        if sync:
            torch.cuda.synchronize(image.device)
        self.teacher_seconds += time.perf_counter() - t0
        self.teacher_chips += image.shape[0]
        return feats

    def teacher_features(self, batch: Mapping[str, Any]) -> list[Tensor]:
        """Teacher tokens ``(B, Ht*Wt, D)`` per paired layer; cached chips are not re-encoded."""
        image = batch["image"]
        if self.cache is None or "index" not in batch:
            return self._run_teacher(image)
        keys = [int(i) for i in torch.as_tensor(batch["index"]).flatten().tolist()]
        if "augment" in batch:  # data.augment: each flip/rotation of a chip is its own teacher input
            codes = torch.as_tensor(batch["augment"]).flatten().tolist()
            keys = [k * NUM_TRANSFORMS + int(a) for k, a in zip(keys, codes, strict=True)]
        if "store" in batch:  # several stores (hyperkd.data.multistore): chip indices repeat across them
            stores = torch.as_tensor(batch["store"]).flatten().tolist()
            keys = [k * MAX_STORES + int(s) for k, s in zip(keys, stores, strict=True)]
        return self.cache.fetch(
            keys,
            lambda missing: self._run_teacher(image[missing] if len(missing) < len(keys) else image),
            image.device,
        )

    def extra_context(self, batch: Mapping[str, Tensor], out: MAEOutput) -> dict[str, Any]:
        """``kd_pairs`` (projected student, teacher tokens at the same patches) per layer pair."""
        if not self.uses_teacher:
            return {}
        feats = self.teacher_features(batch)
        pairs = []
        for proj, s, t in zip(self.projectors, out.features, feats, strict=True):
            # teacher tokens stay as stored (float32): the kd terms compare in float32, so casting
            # them to the student's autocast dtype here would only round them and copy twice
            if self.ground is not None:  # pooled over each student token's ground footprint
                t_at = self.ground.tokens(t, out.ids_keep)
            else:
                t_at = teacher_tokens_at(t, self.teacher_grid, self.student.grid, out.ids_keep)
            pairs.append((proj(s), t_at))
        return {"kd_pairs": pairs, "teacher_features": feats}

    def teacher_stats(self) -> dict[str, Any]:
        """What the teacher cost and what the cache saved (``RUN/distill.json``)."""
        per_chip = self.teacher_seconds / self.teacher_chips if self.teacher_chips else None
        stats: dict[str, Any] = {
            "teacher_forward_s": round(self.teacher_seconds, 4),
            "teacher_chips_encoded": self.teacher_chips,
            "teacher_s_per_chip": per_chip,
            "ground": self.ground.describe() if self.ground is not None else {"matched": False},
        }
        if self.cache is not None:
            c = self.cache
            stats["cache"] = {
                "enabled": True,
                "hits": c.hits,
                "misses": c.misses,
                "entries": len(c.store),
                "bytes": c.bytes,
                "full": c.full,
                "saved_s_estimate": round(c.hits * per_chip, 4) if per_chip else 0.0,
            }
        else:
            stats["cache"] = {"enabled": False}
        return stats


def _drop_teacher_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """state_dict post-hook: the frozen teacher is rebuilt from the recipe, never checkpointed."""
    for k in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[k]


def _ignore_missing_teacher_keys(module: nn.Module, incompatible: Any) -> None:
    """load_state_dict post-hook: checkpoints lack the teacher on purpose (strict loads still
    catch every other missing key)."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith("teacher.")]


# -- assembly from a recipe ---------------------------------------------------------------------
def build_teacher(recipe: Mapping[str, Any]) -> Teacher:
    """The frozen teacher a recipe's ``teacher`` section names (``name`` + factory keywords)."""
    cfg = recipe.get("teacher") or {}
    if not cfg.get("name"):
        raise RecipeError("distillation needs a teacher: set teacher.name (e.g. --teacher prithvi)")
    return teacher_from_spec(cfg)


def teacher_from_spec(spec: Spec) -> Teacher:
    """The frozen teacher a name, a ``teacher`` section (``name`` + factory keywords) or a teacher
    folder (``hyperkd teacher pretrain``; architecture from its config.json) names."""
    name, cfg = teacher_spec(*split_spec(spec, "teacher"))
    try:
        teacher = create("teacher", name, **cfg)
    except WeightsError as exc:
        if "--teacher-weights" in str(exc):
            raise
        raise WeightsError(f"teacher {name}: {exc} (command line: --teacher-weights PATH, or none)") from exc
    except TypeError as exc:  # a factory taking **kwargs refused a key the recipe's teacher section gave
        raise RecipeError(f"recipe section teacher ({name}): {exc}; fix or remove that key") from exc
    if not isinstance(teacher, Teacher):
        raise HyperKDError(f"teacher {name!r} built a {type(teacher).__name__}, not a hyperkd Teacher")
    return teacher.freeze()


def build_aligner(recipe: Mapping[str, Any], student: HyperspectralMAE, teacher: Teacher) -> Aligner:
    """The recipe's aligner from the student's and the teacher's band tables."""
    name, cfg = split_spec(recipe.get("aligner") or "spectral-range", "aligner")
    return create("aligner", name, source=student.sensor, target=teacher.sensor, **cfg)


DISTILL_KEYS = (
    "pairs",
    "projector",
    "mask_on",
    "cache_teacher",
    "cache_max_mb",
    "teacher_img_size",
    "ground_match",
)


def distill_module(recipe: Mapping[str, Any], student: HyperspectralMAE, teacher: Teacher) -> DistillModule:
    """A :class:`DistillModule` assembled from a recipe for an already built teacher."""
    d = dict(recipe.get("distill") or {})
    unknown = sorted(set(d) - set(DISTILL_KEYS))
    if unknown:
        raise RecipeError(f"unknown distill setting(s) {unknown}; known: {', '.join(DISTILL_KEYS)}")
    return DistillModule(
        student,
        teacher,
        build_aligner(recipe, student, teacher),
        recipe["masker"],
        recipe.get("losses") or {},
        optim=recipe.get("optim"),
        **d,
    )


def teacher_terms(module: MAEModule) -> list[str]:
    """Names of the loss terms that compare with the teacher."""
    return [n for n, (_, t) in module.loss_terms.items() if getattr(t, "needs_teacher", False)]


def distill(
    recipe: str | Path | Mapping[str, Any] | None = None,
    out: str | Path = "runs/distill",
    *,
    teacher: str | None = None,
    teacher_weights: str | None = None,
    student: str | None = None,
    data: str | Sequence[str] | None = None,
    overrides: Iterable[str] = (),
    resume: bool = False,
    callbacks: Iterable[Any] = (),
    **fields: Any,
) -> RunResult:
    """Distil ``teacher`` into a hyperspectral MAE ``student`` following ``recipe``.

    ``teacher`` / ``teacher_weights`` / ``student`` / ``data`` set ``teacher.name``,
    ``teacher.weights`` (a file, folder or Hub repo; ``"none"`` = random init, the
    random-teacher control), ``student.name`` and ``data.store`` (several stores: one band
    table and chip size, :mod:`hyperkd.data.multistore`); ``overrides`` are
    ``key=value`` strings and ``fields`` dotted keys with ``.`` written ``__``, as in
    :func:`hyperkd.training.runner.pretrain`. The teacher is built (and its weights found) before the
    run folder or any data is made, so a missing checkpoint fails at once. ``recipe``: by default
    ``hyperkd``, or with ``resume`` the run's saved ``recipe.yaml``.
    """
    random_teacher = teacher_weights is not None and str(teacher_weights).lower() in ("none", "random")
    named = {
        "teacher.name": teacher,
        "student.name": student,
        "data.store": store_field(data),
        "teacher.weights": None if random_teacher or teacher_weights is None else str(teacher_weights),
    }
    start = recipe_for(recipe, out, resume, "hyperkd")  # --resume alone: the run's recipe.yaml
    resolved = recipes_mod.resolve_for_run(start, overrides, {**fields, **named})
    if random_teacher:
        resolved["teacher"]["weights"] = None  # resolve_for_run skips None values
    check_components(resolved, teacher=True)  # every key, before the teacher's weights are fetched
    plan_run(out, resolved, resume, mode="distill")  # the run folder (and a resume) before the teacher
    built = build_teacher(resolved)

    def factory(rec: Mapping[str, Any], stu: HyperspectralMAE, data: Any) -> L.LightningModule:
        return distill_module(rec, stu, built)

    run = Path(out)
    report = DistillReport(
        run,
        {
            "teacher": resolved["teacher"],
            "teacher_weights": dict(getattr(built, "weights_info", {})),
            "aligner": resolved.get("aligner"),
        },
        metrics_csv=run / "logs" / "metrics.csv" if resolved["trainer"].get("figures", True) else None,
    )
    return fit(
        resolved, out, resume=resume, module_factory=factory, callbacks=[report, *callbacks], mode="distill"
    )
