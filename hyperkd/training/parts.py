"""Training parts from names: student, masker and loss terms as a recipe (or a notebook) names them.

Every builder also accepts the already built object, so the LightningModules take either
form: ``MAEModule(student="enmap-mae-tiny", masker="random", losses={"mse": {"weight": 1}})``
in a notebook, pre-built parts from the runner (which builds the student for its chip
store's statistics). :func:`plain_hparams` keeps only the name form, for
``save_hyperparameters`` and ``load_from_checkpoint``.

:class:`SpeedUps` is the GPU path's plumbing: the recipe's ``trainer.compile`` and
``trainer.channels_last`` keys (handled by hyperkd, not passed to Lightning) as a callback.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

from hyperkd.components.losses import LossTerm
from hyperkd.core.errors import HyperKDError, RecipeError
from hyperkd.core.registry import create
from hyperkd.models.mae import HyperspectralMAE

log = logging.getLogger(__name__)

Spec = str | Mapping[str, Any]
"""A component by name (``"random"``) or as a recipe section (``{"name": "random", "ratio": 0.6}``)."""


def split_spec(spec: Spec, what: str) -> tuple[str, dict[str, Any]]:
    """``(name, keyword arguments)`` of a name or a recipe section with a ``name`` key."""
    if isinstance(spec, str):
        return spec, {}
    cfg = dict(spec)
    name = cfg.pop("name", None)
    if not name:
        raise RecipeError(f"{what}: give a name (e.g. {what}: {{name: ...}}), got {dict(spec)!r}")
    return str(name), cfg


def build_student(spec: HyperspectralMAE | Spec) -> HyperspectralMAE:
    """A student from a name (``enmap-mae-tiny``, a saved folder, a Hub repo: one resolver,
    :mod:`hyperkd.models.factory`) or a recipe ``student`` section (``name`` + architecture
    keywords, ``selection``, ``init_from``: trained weights to start from)."""
    if isinstance(spec, HyperspectralMAE):
        return spec
    from hyperkd.models.mae import build_student as build_named

    name, cfg = split_spec(spec, "student")
    init_from = cfg.pop("init_from", None)
    model = build_named(name, **cfg)
    if not isinstance(model, HyperspectralMAE):
        raise RecipeError(f"student {name!r} is a {type(model).__name__}, not a hyperspectral MAE student")
    if init_from:
        from hyperkd.hub import load_state
        from hyperkd.models.factory import create_model

        load_state(
            model,
            create_model(str(init_from)).state_dict(),
            where=f"student.init_from {init_from!r}",
            advice="give the recipe the same student architecture, or pass those weights as --student "
            "(which keeps their architecture)",
        )
    return model


def build_masker(spec: Any, mask_ratio: float | None = None) -> tuple[Any, float]:
    """``(masker, ratio)`` from a masker, a name or a recipe ``masker`` section (its ``ratio``
    key is the mask ratio). ``mask_ratio`` given too must agree; default 0.75."""
    if not isinstance(spec, str | Mapping):
        return spec, 0.75 if mask_ratio is None else float(mask_ratio)
    name, cfg = split_spec(spec, "masker")
    ratio = cfg.pop("ratio", None)
    if ratio is not None and mask_ratio is not None and float(ratio) != float(mask_ratio):
        raise RecipeError(f"masker.ratio {ratio} and mask_ratio {mask_ratio} disagree; give one of them")
    chosen = ratio if ratio is not None else mask_ratio
    return create("masker", name, **cfg), 0.75 if chosen is None else float(chosen)


def _is_built_term(value: Any) -> bool:
    return isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[1], LossTerm)


def build_losses(section: Mapping[str, Any] | None) -> dict[str, tuple[float, LossTerm]]:
    """``{name: (weight, term)}`` from a recipe ``losses`` section (``{name: {weight, term, **kw}}``;
    ``term`` defaults to the name) or from already built ``(weight, term)`` pairs."""
    out: dict[str, tuple[float, LossTerm]] = {}
    for name, params in (section or {}).items():
        if _is_built_term(params):
            out[name] = (float(params[0]), params[1])
            continue
        if params is not None and not isinstance(params, Mapping):
            raise RecipeError(f"losses.{name}: expected a mapping like {{weight: 1.0}}, got {params!r}")
        cfg = dict(params or {})
        weight = float(cfg.pop("weight", 1.0))
        term_name = cfg.pop("term", name)
        out[name] = (weight, create("loss", term_name, **cfg))
    return out


def is_prebuilt(value: Any) -> bool:
    """True for objects a checkpoint's hyperparameters cannot rebuild (modules, maskers, terms)."""
    if value is None or isinstance(value, str | int | float | bool | os.PathLike):
        return False
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, Mapping):
        return any(is_prebuilt(v) for v in value.values())
    if isinstance(value, tuple | list):
        return any(is_prebuilt(v) for v in value)
    return True


def plain_hparams(**arguments: Any) -> dict[str, Any]:
    """The constructor arguments given by name or value (pre-built objects left out)."""
    return {k: v for k, v in arguments.items() if not is_prebuilt(v)}


#: ``trainer`` keys :class:`SpeedUps` takes (the values: :data:`hyperkd.recipes.CHOICES`).
SPEED_KEYS = ("compile", "channels_last")

#: The :func:`torch.compile` backend :class:`SpeedUps` uses (tests set ``aot_eager``, which skips
#: inductor's C++ build).
COMPILE_BACKEND = "inductor"

#: What each module compiles: the student's ``forward`` (called as ``student(...)``), the
#: teacher's ``forward_features`` (what distillation calls).
COMPILED_METHODS = (("student", "forward"), ("teacher", "forward_features"))


class EagerFallback:
    """``method`` compiled with :func:`torch.compile`, run eagerly from the first call whose
    compilation fails (no C compiler, an unsupported operation...), after one warning.

    Compilation is lazy, so a failure shows at the first call, not here. Errors of the method
    itself (a :class:`~hyperkd.core.errors.HyperKDError`, or any exception that is not
    torch.compile's) propagate unchanged.
    """

    def __init__(self, method: Callable[..., Any], mode: bool | str, name: str, backend: Any = None) -> None:
        self.eager = method
        self.name = name
        self.failed = False
        compile_mode = None if mode in (True, "default") else str(mode)
        self.compiled = torch.compile(method, backend=backend or COMPILE_BACKEND, mode=compile_mode)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except HyperKDError:
            raise
        except Exception as err:
            if not _is_compile_error(err):
                raise
            self.failed = True
            reason = " ".join(str(err).split())[:300]
            log.warning("torch.compile of %s failed, running it eagerly: %s", self.name, reason)
            return self.eager(*args, **kwargs)


def _is_compile_error(err: BaseException) -> bool:
    """Whether ``err`` comes from torch.compile (dynamo, a backend, inductor's C++ build)."""
    import torch._dynamo.exc as dynamo_exc

    return isinstance(err, dynamo_exc.TorchDynamoException) or type(err).__module__.startswith(
        ("torch._dynamo", "torch._inductor")
    )


def compile_methods(module: nn.Module, mode: bool | str, backend: Any = None) -> list[str]:
    """Compile the :data:`COMPILED_METHODS` that ``module`` has (in place, as instance attributes
    wrapping the bound methods, so parameter names and ``state_dict`` keys stay as they are);
    undone by :func:`uncompile_methods`. Returns what was compiled (``student.forward``...)."""
    done = []
    for part, method in COMPILED_METHODS:
        owner = getattr(module, part, None)
        if owner is None or not callable(getattr(owner, method, None)) or method in vars(owner):
            continue
        name = f"{part}.{method}"
        setattr(owner, method, EagerFallback(getattr(owner, method), mode, name, backend))
        done.append(name)
    return done


def uncompile_methods(module: nn.Module) -> None:
    """Undo :func:`compile_methods`: the eager methods back."""
    for part, method in COMPILED_METHODS:
        owner = getattr(module, part, None)
        if owner is not None and isinstance(vars(owner).get(method), EagerFallback):
            delattr(owner, method)


def _convs(module: nn.Module) -> list[tuple[nn.Conv2d | nn.Conv3d, torch.memory_format]]:
    """The 2-D and 3-D convolutions of ``module``, each with its channels-last format."""
    out: list[tuple[nn.Conv2d | nn.Conv3d, torch.memory_format]] = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append((m, torch.channels_last))
        elif isinstance(m, nn.Conv3d):
            out.append((m, torch.channels_last_3d))
    return out


def _input_to(fmt: torch.memory_format, _: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].contiguous(memory_format=fmt), *args[1:])


def to_channels_last(module: nn.Module) -> list[Any]:
    """Every 2-D/3-D convolution of ``module`` (the student's patch embedding, the teacher's) in
    channels-last memory format: weights converted in place (the parameters stay the same
    objects), inputs converted by a forward pre-hook. Returns the hook handles; undone by
    :func:`to_contiguous`."""
    handles = []
    for conv, fmt in _convs(module):
        conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)
        handles.append(conv.register_forward_pre_hook(functools.partial(_input_to, fmt)))
    return handles


def to_contiguous(module: nn.Module, handles: list[Any]) -> None:
    """Undo :func:`to_channels_last` (safetensors exports need contiguous weights)."""
    for h in handles:
        h.remove()
    for conv, _ in _convs(module):
        conv.weight.data = conv.weight.data.contiguous()


class SpeedUps(L.Callback):
    """``trainer.compile`` and ``trainer.channels_last`` of a recipe, applied at fit start.

    ``compile``: ``false``, ``true`` (= ``default``) or a :func:`torch.compile` mode
    (``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``): the student's
    forward (and the teacher's ``forward_features`` in distillation) is compiled, falling back
    to eager with one warning if compilation fails (:class:`EagerFallback`).
    ``channels_last``: ``auto`` (on CUDA only), ``true`` (on any device) or ``false``
    (:func:`to_channels_last`). Both are undone at fit end, so the exported student and what
    :func:`hyperkd.pretrain` returns are plain modules. Put it first among the callbacks:
    its ``on_fit_end`` must run before the student is exported.
    """

    def __init__(
        self, compile: bool | str = False, channels_last: bool | str = "auto", backend: Any = None
    ) -> None:
        self.compile = compile
        self.channels_last = channels_last
        self.backend = backend
        self.handles: list[Any] = []
        self.compiled: list[str] = []

    @classmethod
    def from_trainer_section(cls, section: dict[str, Any]) -> SpeedUps:
        """Pop :data:`SPEED_KEYS` from a recipe's ``trainer`` section (a copy) into a callback."""
        given = {k: section.pop(k, None) for k in SPEED_KEYS}  # null = the default
        return cls(**{k: v for k, v in given.items() if v is not None})

    def wants_channels_last(self, device: torch.device) -> bool:
        """``auto``: on CUDA only; ``true``/``false`` as given."""
        return device.type == "cuda" if self.channels_last == "auto" else bool(self.channels_last)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.wants_channels_last(pl_module.device):
            self.handles = to_channels_last(pl_module)
            log.info("channels-last memory format for %d convolution(s)", len(self.handles))
        if self.compile:
            self.compiled = compile_methods(pl_module, self.compile, self.backend)
            log.info("torch.compile (%s): %s", self.compile, ", ".join(self.compiled) or "nothing to compile")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Optimiser state restored from a (contiguous) checkpoint takes its parameter's layout."""
        if not self.handles:
            return
        for opt in trainer.optimizers:
            for param, state in opt.state.items():
                for key, value in state.items():
                    if (
                        torch.is_tensor(value)
                        and value.shape == param.shape
                        and value.stride() != param.stride()
                    ):
                        state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore(pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore(pl_module)  # also after a failed fit, which skips on_fit_end

    def restore(self, pl_module: L.LightningModule) -> None:
        """Eager methods and contiguous weights back (idempotent)."""
        uncompile_methods(pl_module)
        if self.handles:
            to_contiguous(pl_module, self.handles)
            self.handles = []
