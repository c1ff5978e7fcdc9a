"""``HyperKDHubMixin``: :class:`huggingface_hub.PyTorchModelHubMixin` with hyperkd's config, card and safe loading.

It keeps the mixin's ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` and its
``model_card_template`` mechanism and changes three things: ``config.json`` carries hyperkd's
fields (:mod:`hyperkd.hub.config`); loading reads **only** ``model.safetensors``, strictly (the
mixin's fallback to a pickled ``pytorch_model.bin`` is removed); and the config is checked
before any weights are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from huggingface_hub import ModelCard, PyTorchModelHubMixin

from hyperkd.core.errors import HyperKDError, WeightsError
from hyperkd.hub.card import DEFAULT_LICENSE, MODEL_CARD_TEMPLATE, render_card
from hyperkd.hub.config import (
    FORMAT_VERSION,
    HUB_FIELDS,
    MIN_READER_VERSION,
    check_config,
    installed_version,
    normalize_config,
    plugin_record,
    pretrained_cfg,
    provider_of,
    register_model_type,
)
from hyperkd.hub.sources import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, fetch_weights, parse_source
from hyperkd.hub.weights import load_weights_file


class HyperKDHubMixin(
    PyTorchModelHubMixin,
    model_card_template=MODEL_CARD_TEMPLATE,
    library_name="hyperkd",
    license=DEFAULT_LICENSE,
    tags=["hyperkd", "remote-sensing", "earth-observation"],
):
    """``PyTorchModelHubMixin`` with hyperkd's config fields, card and safe loading.

    Subclass as ``class M(nn.Module, HyperKDHubMixin, model_type="name")``; the
    constructor's JSON-able arguments are the architecture part of ``config.json``. A model
    that has a ``sensor`` attribute (:class:`~hyperkd.core.sensors.Sensor`) records the plugin
    that provides it. ``hub_provenance`` (``{"recipe", "training"}``) travels with the
    model: set by :meth:`save_pretrained` (``provenance=``) and by loading.
    """

    hyperkd_model_type: ClassVar[str | None] = None

    def __init_subclass__(cls, *args: Any, model_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(*args, **kwargs)
        if model_type is not None:
            cls.hyperkd_model_type = model_type
            register_model_type(model_type, cls)

    # -- config ---------------------------------------------------------------------------
    def hub_requirements(self) -> list[dict[str, Any]]:
        """What a reader must have installed: the model type's and the sensor's plugins."""
        from hyperkd.core.plugins import plugin_infos
        from hyperkd.core.registry import registry
        from hyperkd.core.sensors import Sensor

        reqs = [{"kind": "model_type", "name": self.hyperkd_model_type, **provider_of(type(self))}]
        sensor = getattr(self, "sensor", None)
        if isinstance(sensor, Sensor):
            reg = registry("sensor")
            prov = reg.get(sensor.name).provider if sensor.name in reg else "unknown"
            reqs.append({"kind": "sensor", "name": sensor.name, **plugin_record(prov, plugin_infos())})
        return reqs

    def hub_architecture(self) -> tuple[str, dict[str, Any]] | None:
        """timm's ``architecture`` and ``model_args`` for ``config.json``: a name that
        :func:`hyperkd.create_model` builds and the keyword arguments that give it this model's
        shape (the sensor goes in as ``sensor=``), or ``None`` (then ``architecture`` is the class
        name and there are no ``model_args``). Model types that have named architectures override it."""
        return None

    def hub_pretrained_cfg(self) -> dict[str, Any] | None:
        """timm's ``pretrained_cfg`` for a model with a ``sensor`` (and ``img_size``): the input it
        takes and the per-band ``mean``/``std`` it standardises with, plus each band's name,
        centre wavelength and FWHM; ``None`` for a model without a sensor."""
        from hyperkd.core.sensors import Sensor

        sensor = getattr(self, "sensor", None)
        if not isinstance(sensor, Sensor):
            return None
        size = getattr(self, "img_size", None)
        return pretrained_cfg(sensor, int(size) if size is not None else None)

    def hub_config(self) -> dict[str, Any]:
        """The full ``config.json``: identity and versions, timm-style ``architecture`` /
        ``model_args`` / ``pretrained_cfg``, constructor args, requirements, provenance."""
        if self.hyperkd_model_type is None:
            raise HyperKDError(f"{type(self).__name__} has no model_type; define it with model_type='...'")
        prov = dict(getattr(self, "hub_provenance", None) or {})
        arch = self.hub_architecture()
        timm_fields: dict[str, Any] = {"architecture": type(self).__name__ if arch is None else arch[0]}
        if arch is not None:
            timm_fields["model_args"] = dict(arch[1])
        pcfg = self.hub_pretrained_cfg()
        if pcfg is not None:
            timm_fields["pretrained_cfg"] = pcfg
        return {
            "model_type": self.hyperkd_model_type,
            **timm_fields,
            "hyperkd_version": installed_version(),
            "hyperkd_format": FORMAT_VERSION,
            "min_hyperkd_version": MIN_READER_VERSION,
            **dict(self._hub_mixin_config or {}),
            "requires": self.hub_requirements(),
            "recipe": prov.get("recipe"),
            "training": prov.get("training"),
        }

    # -- saving ---------------------------------------------------------------------------
    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        provenance: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write model.safetensors, config.json and README.md (the card is always regenerated).

        ``provenance`` (``{"recipe", "training"}``, e.g. :func:`run_provenance`) is stored
        on the model and written into the config and the card. ``config`` holds extra
        fields merged over :meth:`hub_config` (``{"license": "cc-by-4.0"}``).
        """
        if provenance is not None:
            self.hub_provenance = dict(provenance)
        cfg = {**self.hub_config(), **dict(config or {})}
        (Path(save_directory) / CARD_NAME).unlink(missing_ok=True)
        kwargs = dict(model_card_kwargs or {})
        kwargs.setdefault("config", cfg)
        if repo_id:
            kwargs.setdefault("load_id", repo_id)
        self._hyperkd_saving = cfg
        try:
            return super().save_pretrained(
                save_directory,
                config=cfg,
                repo_id=repo_id,
                push_to_hub=push_to_hub,
                model_card_kwargs=kwargs,
                **push_to_hub_kwargs,
            )
        finally:
            self._hyperkd_saving = None

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's safetensors weights, plus config.json in hyperkd's field order (the mixin
        would sort every key, the recipe's included, which makes the saved recipe unreadable)."""
        from hyperkd.core.io import apply_umask, atomic_write_json

        super()._save_pretrained(save_directory)
        apply_umask(Path(save_directory) / WEIGHTS_NAME)  # safetensors writes it 0600
        atomic_write_json(
            Path(save_directory) / CONFIG_NAME, getattr(self, "_hyperkd_saving", None) or self.hub_config()
        )

    def generate_model_card(
        self, *args: Any, config: Mapping[str, Any] | None = None, load_id: str | None = None, **kwargs: Any
    ) -> ModelCard:
        """The README.md card, rendered from the config with the mixin's ``model_card_template``."""
        return render_card(
            config if config is not None else self.hub_config(),
            load_id=load_id,
            template=self._hub_mixin_info.model_card_template,
            **kwargs,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        model_card_kwargs: dict[str, Any] | None = None,  # type: ignore[override]
        **kwargs: Any,
    ) -> str:
        """The mixin's push (save to a temporary folder, upload it), with the repo id in the card."""
        card_kwargs = dict(model_card_kwargs or {})
        card_kwargs.setdefault("load_id", repo_id)
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> HyperKDHubMixin:
        """Check the config, then load ``model.safetensors`` strictly. No pickle fallback; an
        unreadable file or tensors that do not fit are one-line errors (:mod:`hyperkd.hub.weights`)."""
        for legacy in ("proxies", "resume_download"):  # passed by huggingface-hub < 1.0; unused here
            model_kwargs.pop(legacy, None)
        source = parse_source(model_id, revision)
        where = source.describe()
        if config is None:
            raise HyperKDError(f"{where} has no {CONFIG_NAME}; it is not a model saved by hyperkd")
        config = normalize_config(config)
        found = check_config(config, where=where)
        if not issubclass(cls, found):
            raise HyperKDError(
                f"{where} is a {config.get('model_type')!r} model ({found.__name__}), "
                f"not a {cls.__name__}; load it with hyperkd.from_pretrained"
            )
        weights = fetch_weights(
            source,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        if "config" in cls._hub_mixin_init_parameters and "config" not in model_kwargs:
            # models built from one config mapping (e.g. fine-tuned PixelModel) get it back
            # without hyperkd's identity and provenance fields
            model_kwargs["config"] = {k: v for k, v in config.items() if k not in HUB_FIELDS}
        model = cls(**model_kwargs)
        load_weights_file(model, weights, where=where, device=map_location, strict=strict)
        model.eval()  # huggingface-hub < 1.0 leaves safetensors-loaded models in training mode
        model.hub_provenance = {"recipe": config.get("recipe"), "training": config.get("training")}
        return model

    @classmethod
    def _load_as_pickle(cls, model: Any, model_file: str, map_location: str, strict: bool) -> Any:
        """Never used: hyperkd does not unpickle weights from a repo."""
        raise WeightsError(f"refusing to unpickle {model_file}: hyperkd loads only {WEIGHTS_NAME}")
