"""Sharing models on the Hugging Face Hub: one folder format, safe loading, a model card.

The unit of sharing is a folder (a local directory or a Hub repo) with exactly three files:

* ``model.safetensors`` -- the weights (never a pickle);
* ``config.json`` -- everything needed to rebuild the model *without running code from the
  repo*: ``model_type`` (which installed class builds it), the constructor arguments
  (architecture, the sensor with its full band table), ``hyperkd_version`` /
  ``hyperkd_format`` / ``min_hyperkd_version``, ``requires`` (the plugins that provide the
  model type and the sensor, with their distributions and versions), the resolved
  ``recipe`` and ``training`` (metrics, training data, run);
* ``README.md`` -- a model card rendered from that config (what it is, band table, training
  data, recipe, metrics, licence, citations, how to load it).

It is built on :class:`huggingface_hub.PyTorchModelHubMixin`: models inherit
:class:`HyperKDHubMixin`, which keeps the mixin's ``save_pretrained`` / ``from_pretrained``
/ ``push_to_hub`` and its ``model_card_template`` mechanism and changes three things:

1. ``config.json`` carries the fields above (the card is a pure function of it, so a
   pushed card can be re-rendered and always matches the weights);
2. loading reads **only** ``model.safetensors``, strictly; the mixin's fallback to
   ``pytorch_model.bin`` (a pickle) is removed, and a repo that has only pickles is refused;
3. before any weights are read, the config is checked: a newer folder format or a
   ``min_hyperkd_version`` above the installed one, an unknown ``model_type`` or a sensor no
   installed plugin provides raise a :class:`~hyperkd.core.errors.HyperKDError` naming the
   version or plugin to install.

Model types are a small registry: ``class MyModel(nn.Module, HyperKDHubMixin,
model_type="my-type")`` registers the class at definition; :func:`from_pretrained` maps a
config's ``model_type`` to that class. Built-in types are imported on demand
(:data:`BUILTIN_MODEL_TYPES`); plugin types register when their plugin loads.

Hub access goes through ``hf_hub_download`` / :class:`huggingface_hub.HfApi`, with the cache
folder and ``HF_HUB_OFFLINE`` read from the environment *at call time*.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin

from hyperkd.core.errors import DuplicateComponentError, HyperKDError, WeightsError

FORMAT_VERSION = 1
"""Version of the folder format this hyperkd writes and the newest it reads."""
MIN_READER_VERSION = "0.1.0"
"""The oldest hyperkd that reads what this hyperkd writes (``min_hyperkd_version``)."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
SHARED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
"""The files of a shared model; push uploads these and nothing else."""
PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt", "pytorch_model.pt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_LICENSE = "apache-2.0"

BUILTIN_MODEL_TYPES: dict[str, str] = {"hyperspectral-mae": "hyperkd.models.mae",
                                        "hyperkd-pixel": "hyperkd.models.pixel"}
"""Core model types -> the module whose import registers them (imported on first use)."""

_REPO_RE = re.compile(r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@(?P<rev>[^/\s]+))?$")

CITATIONS = """```bibtex
@inproceedings{matin2025hyperkd,
  title     = {HyperKD: Distilling Cross-Spectral Knowledge in Masked Autoencoders via Inverse Domain Shift with Spatial-Aware Masking and Specialized Loss},
  author    = {Matin, Abdul and Faruk, Tanjim Bin and Pallickara, Shrideep and Pallickara, Sangmi Lee},
  booktitle = {IEEE International Conference on Data Science and Advanced Analytics (DSAA)},
  year      = {2025},
  eprint    = {2508.09453},
  archivePrefix = {arXiv}
}
@article{jakubik2023prithvi,
  title   = {Foundation Models for Generalist Geospatial Artificial Intelligence},
  author  = {Jakubik, Johannes and others},
  journal = {arXiv preprint arXiv:2310.18660},
  year    = {2023}
}
@article{szwarcman2024prithvi2,
  title   = {Prithvi-EO-2.0: A Versatile Multi-Temporal Foundation Model for Earth Observation Applications},
  author  = {Szwarcman, Daniela and others},
  journal = {arXiv preprint arXiv:2412.02732},
  year    = {2024}
}
```"""

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

- **Model type:** `{{ model_type }}` (`{{ class_name }}`), saved by hyperkd {{ hyperkd_version }} (folder format {{ hyperkd_format }})
- **Architecture:** {{ architecture }}
- **Sensor:** {{ sensor_line }}
- **Needs:** {{ requires_line }}

## How to load

```python
import hyperkd

model = hyperkd.from_pretrained("{{ load_id }}")  # a Hub repo id (add revision=...) or a local folder
```

or from the command line: `hyperkd hub pull {{ load_id }}`; continue training from it with
`hyperkd pretrain --student {{ load_id }}` or `hyperkd distill --student {{ load_id }}`.
Only `model.safetensors` is read; no code from this repository is run.

## Training data

{{ training_data }}

## Metrics

{{ metrics_table }}

## Training recipe

{{ recipe_line }}

{{ recipe_block }}

## Bands

{{ num_bands }} bands, input is surface reflectance per band (the model standardises with the mean/std below).

| # | band | centre (nm) | FWHM (nm) | range (nm) | mean | std |
|---|---|---|---|---|---|---|
{{ band_rows }}

## Licence

{{ license_line }}

## Citation

This model was made with hyperkd, an implementation of HyperKD (Matin et al., IEEE DSAA 2025,
[arXiv:2508.09453](https://arxiv.org/abs/2508.09453)). Its teacher family is Prithvi-EO (Jakubik et al.,
[arXiv:2310.18660](https://arxiv.org/abs/2310.18660); Szwarcman et al.,
[arXiv:2412.02732](https://arxiv.org/abs/2412.02732)). Please cite:

{{ citations }}
"""


# -- environment --------------------------------------------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set *now*, not when
    huggingface_hub was imported. Shared by every hyperkd component that downloads."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _truthy(env) if env is not None else bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The HF hub cache folder per the environment *now* (huggingface_hub's precedence)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(env[var])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _installed_version() -> str:
    from hyperkd import __version__

    return __version__


def _version_gt(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) > Version(b)
    except InvalidVersion:
        return False


# -- sources ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where a model lives: a local ``folder`` or a Hub ``repo_id`` at ``revision``."""

    spec: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        """``folder PATH`` or ``Hugging Face repo ORG/NAME[@REV]`` for messages."""
        if self.folder is not None:
            return f"folder {self.folder}"
        return f"Hugging Face repo {self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as ``[hf://]org/name[@revision]`` and is not an existing local path."""
    return not Path(spec).expanduser().exists() and _REPO_RE.match(spec.strip()) is not None


def shareable_folder(path: str | os.PathLike[str]) -> Path:
    """The model folder inside ``path``: ``path`` itself, or ``path/student`` for a run folder."""
    p = Path(path).expanduser()
    if not (p / CONFIG_NAME).is_file() and (p / "student" / CONFIG_NAME).is_file():
        return p / "student"
    return p


def parse_source(spec: str | os.PathLike[str], revision: str | None = None) -> Source:
    """A local folder (or run folder) wins; else ``org/name[@rev]`` is a Hub repo."""
    text = os.fspath(spec).strip()
    local = Path(text).expanduser()
    if local.is_dir():
        if revision:
            raise HyperKDError(f"revision={revision!r} was given, but {text} is a local folder")
        return Source(text, folder=shareable_folder(local))
    m = _REPO_RE.match(text)
    if local.exists() or m is None:
        raise HyperKDError(
            f"{text!r} is neither a model folder nor a Hugging Face repo id "
            "(expected a folder with config.json + model.safetensors, a run folder, or org/name[@revision])"
        )
    rev = m.group("rev")
    if rev and revision and rev != revision:
        raise HyperKDError(f"{text!r} names revision {rev!r} but revision={revision!r} was also given")
    return Source(text, repo_id=m.group("repo"), revision=revision or rev)


def _hub_error(source: Source, filename: str, exc: BaseException) -> HyperKDError:
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = source.describe()
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, LocalEntryNotFoundError):
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if hub_offline()
               else "it is not in the local cache and the Hub could not be reached")
        local = f"; no local folder named {source.spec!r} exists either" if "/" in source.spec else ""
        return WeightsError(
            f"{where}: {filename} not found — {why} (cache: {hub_cache_dir()}){local}. Run "
            f"`hyperkd hub pull {source.repo_id}` where the Hub is reachable and copy the cache, or pass a local folder"
        )
    if isinstance(exc, GatedRepoError):
        return WeightsError(f"{where} is gated: accept its terms on the Hub and log in (`hf auth login`) ({first})")
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(f"{where} does not exist (or is private: pass --token / log in)")
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"{source.repo_id} has no revision {source.revision!r}")
    return WeightsError(f"could not fetch {filename} from {where}: {type(exc).__name__}: {first}")


def fetch_file(
    source: Source,
    filename: str,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
) -> Path | None:
    """The local path of ``filename`` in ``source`` (downloading through the HF cache), or
    ``None`` when the folder or repo has no such file. Other failures raise a clear error."""
    if source.folder is not None:
        path = source.folder / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = hub_offline() if local_files_only is None else local_files_only or hub_offline()
    assert source.repo_id is not None
    try:
        return Path(hf_hub_download(
            source.repo_id, filename, revision=source.revision, cache_dir=cache_dir or hub_cache_dir(),
            token=token, local_files_only=offline, force_download=force_download,
        ))
    except LocalEntryNotFoundError as exc:
        if offline and _known_missing(source, filename, cache_dir):
            return None  # an earlier online lookup recorded that the repo has no such file
        raise _hub_error(source, filename, exc) from exc
    except EntryNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _hub_error(source, filename, exc) from exc


def _known_missing(source: Source, filename: str, cache_dir: str | Path | None) -> bool:
    """Whether the cache records that this revision has no ``filename`` (HF's ``.no_exist`` marker)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    assert source.repo_id is not None
    got = try_to_load_from_cache(source.repo_id, filename, cache_dir=cache_dir or hub_cache_dir(),
                                 revision=source.revision)
    return got is _CACHED_NO_EXIST


def fetch_weights(source: Source, *, token: str | bool | None = None, cache_dir: str | Path | None = None,
                  local_files_only: bool | None = None, force_download: bool = False) -> Path:
    """``model.safetensors`` of ``source``; a folder, repo or offline cache that offers only
    pickle weights is refused (nothing is unpickled)."""
    try:
        weights = fetch_file(source, WEIGHTS_NAME, token=token, cache_dir=cache_dir,
                             local_files_only=local_files_only, force_download=force_download)
    except WeightsError:
        if source.repo_id is not None and hub_offline() and _pickles_in(source, token, cache_dir):
            raise refuse_missing_safetensors(source, token, cache_dir) from None
        raise
    if weights is None:
        raise refuse_missing_safetensors(source, token, cache_dir)
    return weights


def _pickles_in(source: Source, token: str | bool | None, cache_dir: str | Path | None) -> list[str]:
    """Pickle-format weight files the folder or repo holds (for the refusal message)."""
    if source.folder is not None:
        return sorted(p.name for p in source.folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    assert source.repo_id is not None
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        return [n for n in PICKLE_NAMES if isinstance(
            try_to_load_from_cache(source.repo_id, n, cache_dir=cache_dir or hub_cache_dir(),
                                   revision=source.revision), str)]
    try:
        from huggingface_hub import HfApi

        files = HfApi(token=token if isinstance(token, str) else None).list_repo_files(
            source.repo_id, revision=source.revision)
    except Exception:  # only for the message; the refusal stands without it
        return []
    return sorted(f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES)


def refuse_missing_safetensors(source: Source, token: str | bool | None = None,
                               cache_dir: str | Path | None = None) -> WeightsError:
    """The error for a folder or repo without ``model.safetensors`` (pickle-only or empty)."""
    pickles = _pickles_in(source, token, cache_dir)
    where = source.describe()
    if source.repo_id is not None and hub_offline():
        where += f" (as cached in {cache_dir or hub_cache_dir()}, HF_HUB_OFFLINE is set)"
    if pickles:
        return WeightsError(
            f"{where} has no {WEIGHTS_NAME}, only pickle weights ({', '.join(pickles)}): hyperkd loads "
            "weights only from safetensors and never unpickles files from a repo, because unpickling can run "
            "arbitrary code. If you trust the source, convert it yourself (torch.load(..., weights_only=True), "
            "load the state dict into the model, then model.save_pretrained(FOLDER))"
        )
    return WeightsError(f"{where} has no {WEIGHTS_NAME}; it is not a complete hyperkd model")


# -- config -------------------------------------------------------------------------------------
def read_config(
    spec: str | os.PathLike[str] | Source,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> dict[str, Any]:
    """Read and check ``config.json`` of a folder or repo (see :func:`check_config`)."""
    source = spec if isinstance(spec, Source) else parse_source(spec, revision)
    path = fetch_file(source, CONFIG_NAME, token=token, cache_dir=cache_dir, local_files_only=local_files_only)
    if path is None:
        raise HyperKDError(f"{source.describe()} has no {CONFIG_NAME}; it is not a model saved by hyperkd")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HyperKDError(f"{source.describe()}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    config = normalize_config(config)
    check_config(config, where=source.describe())
    return config


LEGACY_STUDENT_KEYS = frozenset({"sensor", "embed_dim", "patch_size", "decoder_embed_dim", "img_size"})
"""Constructor fields of a student saved before the folder format existed (plain mixin config)."""


def normalize_config(config: Any) -> Any:
    """Read a pre-format student config (only constructor arguments, as hyperkd 0.1.0 wrote before
    :mod:`hyperkd.hub`) as folder format 0 of ``hyperspectral-mae``; other configs pass unchanged."""
    if isinstance(config, Mapping) and "hyperkd_format" not in config and set(config) >= LEGACY_STUDENT_KEYS:
        return {"model_type": "hyperspectral-mae", "hyperkd_format": 0, "hyperkd_version": "0.1.0", **config}
    return config


def check_config(config: Any, *, where: str = "this model") -> type[HyperKDHubMixin]:
    """Refuse a config this installation cannot load safely; return the class that builds it.

    Checks, in order: it is a hyperkd config; its folder format and ``min_hyperkd_version``
    are not newer than this hyperkd; an installed plugin provides its ``model_type``; and
    one provides every sensor it ``requires``. Nothing from the repo is imported or run.
    """
    config = normalize_config(config)
    if not isinstance(config, Mapping) or "hyperkd_format" not in config:
        raise HyperKDError(f"{where}: {CONFIG_NAME} is not a hyperkd model config (no hyperkd_format)")
    if config.get("family") == "prithvi-eo" and "model_type" not in config:
        raise HyperKDError(
            f"{where} is a converted Prithvi-EO teacher checkpoint, not a student: use it as "
            "--teacher-weights (or weights= of a Prithvi teacher)"
        )
    installed = _installed_version()
    writer = str(config.get("hyperkd_version", "unknown"))
    need = str(config.get("min_hyperkd_version") or writer)
    fmt = config.get("hyperkd_format")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION or _version_gt(need, installed):
        raise HyperKDError(
            f"{where} was saved by hyperkd {writer} (folder format {fmt}) and needs hyperkd >= {need}; "
            f"this is hyperkd {installed}, which reads folder format <= {FORMAT_VERSION}. Upgrade: "
            f"pip install -U 'hyperkd>={need}'"
        )
    requires = {r.get("kind"): r for r in config.get("requires") or [] if isinstance(r, Mapping)}
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise HyperKDError(f"{where}: {CONFIG_NAME} has no model_type")
    cls = model_type_class(model_type, requirement=requires.get("model_type"), where=where)
    sensor = requires.get("sensor")
    if sensor is None and isinstance(config.get("sensor"), Mapping) and "name" in config["sensor"]:
        sensor = {"kind": "sensor", "name": config["sensor"]["name"]}  # format 0: no plugin recorded
    if sensor is not None:
        from hyperkd.core.registry import registry

        if sensor.get("name") not in registry("sensor"):
            raise HyperKDError(
                f"{where} was trained for sensor {sensor.get('name')!r}, which no installed plugin provides; "
                f"{_requirement_text(sensor)} and check `hyperkd plugins list`"
            )
    return cls


def _requirement_text(req: Mapping[str, Any]) -> str:
    """``the hyperkd plugin 'p' (pip install 'dist>=v')``, or a hint for user-registered components."""
    plugin = req.get("plugin")
    if plugin is None:
        return f"install the plugin that provides {req.get('kind', 'component')} {req.get('name')!r}"
    if plugin in ("user", "unknown"):
        return (f"register the {req.get('kind', 'component')} {req.get('name')!r} yourself (it came from "
                "user code, not from a plugin, when the model was saved)")
    dist = req.get("distribution")
    version = req.get("version")
    pkg = f" (pip install '{dist}>={version}')" if dist and version else (f" (pip install {dist})" if dist else "")
    return f"install the hyperkd plugin {plugin!r}{pkg}"


# -- model types --------------------------------------------------------------------------------
MODEL_TYPES: dict[str, type[HyperKDHubMixin]] = {}
"""``model_type`` -> the installed class that builds it (filled by class definitions)."""


def register_model_type(name: str, cls: type[HyperKDHubMixin]) -> None:
    """Map ``model_type`` ``name`` to ``cls`` (done by ``HyperKDHubMixin`` subclasses with ``model_type=``)."""
    old = MODEL_TYPES.get(name)
    if old is not None and f"{old.__module__}.{old.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
        raise DuplicateComponentError(
            f"model type {name!r} is already provided by {old.__module__}.{old.__qualname__}; "
            f"{cls.__module__}.{cls.__qualname__} tried to register it again"
        )
    MODEL_TYPES[name] = cls


def model_type_class(name: str, *, requirement: Mapping[str, Any] | None = None,
                     where: str = "this model") -> type[HyperKDHubMixin]:
    """The installed class for ``model_type`` ``name``; an unknown one names the plugin to install."""
    if name not in MODEL_TYPES and name in BUILTIN_MODEL_TYPES:
        importlib.import_module(BUILTIN_MODEL_TYPES[name])
    if name not in MODEL_TYPES:
        from hyperkd.core.plugins import load_plugins

        load_plugins()
    if name not in MODEL_TYPES:
        known = ", ".join(sorted({*MODEL_TYPES, *BUILTIN_MODEL_TYPES}))
        need = _requirement_text(requirement) if requirement else "install the plugin that provides it"
        raise HyperKDError(
            f"{where} is a {name!r} model, a model type no installed plugin provides (known: {known}); "
            f"{need} and check `hyperkd plugins list`"
        )
    return MODEL_TYPES[name]


def _provider_of(obj: Any) -> dict[str, Any]:
    """Plugin name, distribution and version that provide ``obj`` (a class)."""
    from hyperkd.core.plugins import plugin_infos
    from hyperkd.core.registry import _infer_provider

    name = _infer_provider(obj)
    return _plugin_record(name, plugin_infos())


def _plugin_record(name: str, infos: list[Any]) -> dict[str, Any]:
    if name == "hyperkd":
        return {"plugin": "hyperkd", "distribution": "hyperkd", "version": _installed_version()}
    for info in infos:
        if info.name == name:
            return {"plugin": name, "distribution": info.distribution, "version": info.version}
    return {"plugin": name, "distribution": None, "version": None}


# -- provenance ---------------------------------------------------------------------------------
def training_data_info(recipe: Mapping[str, Any] | None, run_dir: Path | None) -> dict[str, Any] | None:
    """What a run trained on: ``{"store", "synthetic", "num_chips", "chip_size", "description"}``."""
    if not recipe or "data" not in recipe:
        return None
    data = recipe["data"]
    store = str(data.get("store", "synthetic"))
    info: dict[str, Any] = {"store": store, "synthetic": store == "synthetic"}
    root: Path | None = None
    if store == "synthetic" and run_dir is not None:
        found = sorted((run_dir / "data").glob("synthetic-*/manifest.json"))
        root = found[0].parent if found else None
        info.update({k: v for k, v in (data.get("synthetic") or {}).items() if k in ("chips", "size", "seed")})
    elif store != "synthetic":
        root = Path(store)
    manifest = root / "manifest.json" if root is not None else None
    if manifest is not None and manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            m = {}
        info["synthetic"] = bool(info["synthetic"] or m.get("synthetic"))
        info["num_chips"] = m.get("num_chips")
        info["chip_size"] = m.get("chip_size")
        attrs = m.get("attrs") or {}
        if isinstance(attrs.get("synthetic"), str):
            info["description"] = attrs["synthetic"]
    return info


def run_provenance(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"recipe", "training"}`` of a run folder (recipe.yaml, metrics.json, its data)."""
    run = Path(run_dir)
    recipe: dict[str, Any] | None = None
    if (run / "recipe.yaml").is_file():
        from hyperkd import recipes

        recipe = dict(recipes.load_recipe(run / "recipe.yaml"))
    metrics: dict[str, Any] | None = None
    if (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
    return {"recipe": recipe,
            "training": {"metrics": metrics, "data": training_data_info(recipe, run), "run": run.name}}


HUB_FIELDS = frozenset({"model_type", "architecture", "hyperkd_version", "hyperkd_format",
                        "min_hyperkd_version", "requires", "recipe", "training"})
"""config.json fields hyperkd adds around a model's own constructor arguments."""


# -- the mixin ----------------------------------------------------------------------------------
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

        reqs = [{"kind": "model_type", "name": self.hyperkd_model_type, **_provider_of(type(self))}]
        sensor = getattr(self, "sensor", None)
        if isinstance(sensor, Sensor):
            reg = registry("sensor")
            prov = reg.get(sensor.name).provider if sensor.name in reg else "unknown"
            reqs.append({"kind": "sensor", "name": sensor.name, **_plugin_record(prov, plugin_infos())})
        return reqs

    def hub_config(self) -> dict[str, Any]:
        """The full ``config.json``: identity and versions, constructor args, requirements, provenance."""
        if self.hyperkd_model_type is None:
            raise HyperKDError(f"{type(self).__name__} has no model_type; define it with model_type='...'")
        prov = dict(getattr(self, "hub_provenance", None) or {})
        return {
            "model_type": self.hyperkd_model_type,
            "architecture": type(self).__name__,
            "hyperkd_version": _installed_version(),
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
            return super().save_pretrained(save_directory, config=cfg, repo_id=repo_id, push_to_hub=push_to_hub,
                                           model_card_kwargs=kwargs, **push_to_hub_kwargs)
        finally:
            self._hyperkd_saving = None

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's safetensors weights, plus config.json in hyperkd's field order (the mixin
        would sort every key, the recipe's included, which makes the saved recipe unreadable)."""
        from hyperkd.core.io import atomic_write_json

        super()._save_pretrained(save_directory)
        atomic_write_json(Path(save_directory) / CONFIG_NAME, getattr(self, "_hyperkd_saving", None) or self.hub_config())

    def generate_model_card(self, *args: Any, config: Mapping[str, Any] | None = None,
                            load_id: str | None = None, **kwargs: Any) -> ModelCard:
        """The README.md card, rendered from the config with the mixin's ``model_card_template``."""
        return render_card(config if config is not None else self.hub_config(), load_id=load_id,
                           template=self._hub_mixin_info.model_card_template, **kwargs)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None,  # type: ignore[override]
                    **kwargs: Any) -> str:
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
        """Check the config, then load ``model.safetensors`` strictly. No pickle fallback."""
        source = parse_source(model_id, revision)
        where = source.describe()
        if config is None:
            raise HyperKDError(f"{where} has no {CONFIG_NAME}; it is not a model saved by hyperkd")
        config = normalize_config(config)
        found = check_config(config, where=where)
        if not issubclass(cls, found):
            raise HyperKDError(f"{where} is a {config.get('model_type')!r} model ({found.__name__}), "
                               f"not a {cls.__name__}; load it with hyperkd.from_pretrained")
        weights = fetch_weights(source, token=token, cache_dir=cache_dir, local_files_only=local_files_only,
                                force_download=force_download)
        if "config" in cls._hub_mixin_init_parameters and "config" not in model_kwargs:
            # models built from one config mapping (e.g. fine-tuned PixelModel) get it back
            # without hyperkd's identity and provenance fields
            model_kwargs["config"] = {k: v for k, v in config.items() if k not in HUB_FIELDS}
        model = cls(**model_kwargs)
        try:
            cls._load_as_safetensor(model, str(weights), map_location, strict)
        except (RuntimeError, ValueError, OSError) as exc:
            raise WeightsError(f"{where}: {WEIGHTS_NAME} does not fit the model its config describes: {exc}") from exc
        model.hub_provenance = {"recipe": config.get("recipe"), "training": config.get("training")}
        return model

    @classmethod
    def _load_as_pickle(cls, model: Any, model_file: str, map_location: str, strict: bool) -> Any:
        """Never used: hyperkd does not unpickle weights from a repo."""
        raise WeightsError(f"refusing to unpickle {model_file}: hyperkd loads only {WEIGHTS_NAME}")


# -- the card -----------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _band_rows(sensor: Mapping[str, Any]) -> str:
    rows = []
    for i, b in enumerate(sensor.get("bands", []), start=1):
        rng = b.get("range_nm") or [b["center_nm"] - b["fwhm_nm"] / 2, b["center_nm"] + b["fwhm_nm"] / 2]
        rows.append(f"| {i} | {b['name']} | {b['center_nm']:.2f} | {b['fwhm_nm']:.2f} | "
                    f"{rng[0]:.1f}–{rng[1]:.1f} | {_fmt(b.get('mean'))} | {_fmt(b.get('std'))} |")
    return "\n".join(rows)


def _metrics_table(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return "No metrics were recorded for this model (it was not saved from a training run)."
    lines = ["Final validation metrics of the training run (`metrics.json`; losses in standardised units, "
             "PSNR/SSIM/SAM on reflectance of the masked patches):", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    return "\n".join(lines)


def _training_data(data: Mapping[str, Any] | None, sensor_name: str) -> str:
    if not data:
        return "Not recorded (the model was not saved from a hyperkd training run)."
    n, size = data.get("num_chips") or data.get("chips"), data.get("chip_size") or data.get("size")
    amount = f"{n} chips of {size}×{size} px" if n and size else "chips"
    if data.get("synthetic"):
        what = data.get("description") or "synthetic scenes generated by hyperkd"
        return (f"**Synthetic data.** Trained on {amount} of synthetic {sensor_name} reflectance ({what}). "
                "These weights are a demonstration and test artefact: they have seen no real imagery and say "
                "nothing about real scenes.")
    return (f"Trained on {amount} of {sensor_name} surface reflectance from the chip store "
            f"`{Path(str(data.get('store'))).name}` (the recipe's `data` section below names it).")


def _summary(config: Mapping[str, Any], sensor_name: str, num_bands: int) -> tuple[str, str, list[str]]:
    recipe = config.get("recipe") or {}
    mode = recipe.get("mode")
    teacher = recipe.get("teacher") or {}
    if mode == "distill":
        weights = teacher.get("weights")
        w = "random weights (control)" if weights is None else f"weights `{weights}`"
        return (f"HyperKD student for {sensor_name}",
                f"A hyperspectral masked autoencoder for {sensor_name} ({num_bands} bands), distilled with HyperKD "
                f"from the frozen multispectral teacher `{teacher.get('name')}` ({w}).",
                ["knowledge-distillation", "hyperkd-distill"])
    if mode == "pretrain":
        return (f"Hyperspectral MAE for {sensor_name}",
                f"A hyperspectral masked autoencoder for {sensor_name} ({num_bands} bands), MAE-pretrained "
                "without distillation (the no-KD baseline).", ["mae-pretrain"])
    return (f"hyperkd {config.get('model_type')} for {sensor_name}",
            f"A hyperkd `{config.get('model_type')}` model for {sensor_name} ({num_bands} bands).", [])


def render_card(config: Mapping[str, Any], *, load_id: str | None = None, template: str = MODEL_CARD_TEMPLATE,
                **extra: Any) -> ModelCard:
    """Render the model card of a hyperkd ``config.json`` (used for saving and pushing)."""
    import yaml

    sensor = config.get("sensor") or {}
    sensor_name = str(sensor.get("name", "unknown sensor"))
    bands = sensor.get("bands", [])
    title, summary, tags = _summary(config, sensor_name, len(bands))
    training = config.get("training") or {}
    data = training.get("data") or {}
    card_data = ModelCardData(
        library_name="hyperkd", license=config.get("license") or DEFAULT_LICENSE,
        tags=sorted({"hyperkd", "remote-sensing", "earth-observation", "hyperspectral", sensor_name,
                     str(config.get("model_type")), *tags, *(["synthetic-data"] if data.get("synthetic") else [])}),
    )
    arch_keys = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth",
                 "embedding", "spectral_dim", "size")
    arch = ", ".join(f"{k}={config[k]}" for k in arch_keys if config.get(k) is not None) or config.get("architecture")
    centres = [b["center_nm"] for b in bands]
    sensor_line = (f"{sensor_name}, {len(bands)} bands ({sensor.get('selection', 'all')} selection), "
                   f"{min(centres):.0f}–{max(centres):.0f} nm, GSD {sensor.get('gsd_m')} m" if centres else sensor_name)
    reqs = [f"{r.get('kind')} `{r.get('name')}` from plugin `{r.get('plugin')}`"
            + (f" ({r.get('distribution')} {r.get('version')})" if r.get("distribution") else "")
            for r in config.get("requires") or []]
    recipe = config.get("recipe")
    if recipe:
        recipe_line = (f"Recipe `{recipe.get('name')}` ({recipe.get('mode')}), fully resolved as saved with the run; "
                       "re-run it with `--recipe recipe.yaml`:")
        recipe_block = "```yaml\n" + yaml.safe_dump(recipe, sort_keys=False).strip() + "\n```"
    else:
        recipe_line, recipe_block = "No recipe was recorded.", ""
    license_id = config.get("license") or DEFAULT_LICENSE
    context = {
        "title": title, "summary": summary, "model_type": config.get("model_type"),
        "class_name": config.get("architecture"), "hyperkd_version": config.get("hyperkd_version"),
        "hyperkd_format": config.get("hyperkd_format"), "architecture": arch, "sensor_line": sensor_line,
        "requires_line": "; ".join(reqs) or "hyperkd", "load_id": load_id or "ORG/NAME-or-folder",
        "training_data": _training_data(data, sensor_name), "metrics_table": _metrics_table(training.get("metrics")),
        "recipe_line": recipe_line, "recipe_block": recipe_block, "num_bands": len(bands),
        "band_rows": _band_rows(sensor),
        "license_line": (f"`{license_id}`. The hyperkd code is Apache-2.0; Prithvi-EO teacher weights are released "
                         "by NASA/IBM under Apache-2.0. Check the licence of the training data before reuse."),
        "citations": CITATIONS, **extra,
    }
    return ModelCard.from_template(card_data, template_str=template, **context)


# -- public API ---------------------------------------------------------------------------------
def from_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
    map_location: str = "cpu",
) -> Any:
    """Load a hyperkd model from a folder, a run folder or a Hub repo (``org/name[@rev]``).

    The class is chosen by ``config.json``'s ``model_type`` among installed ones; only
    ``model.safetensors`` is read (strictly), no code from the repo is run. Under
    ``HF_HUB_OFFLINE=1`` only the local HF cache is used. Returns the model in eval mode.
    """
    source = parse_source(name_or_path, revision)
    config = read_config(source, token=token, cache_dir=cache_dir, local_files_only=local_files_only)
    cls = model_type_class(config["model_type"])
    offline = hub_offline() if local_files_only is None else (local_files_only or hub_offline())
    model_id = str(source.folder) if source.folder is not None else str(source.repo_id)
    return cls.from_pretrained(model_id, revision=source.revision, token=token,
                               cache_dir=cache_dir or (None if source.folder else hub_cache_dir()),
                               local_files_only=offline, force_download=force_download,
                               map_location=map_location)


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    out: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download a model's three files into the HF cache (and copy them to ``out``); returns the folder.

    Only ``config.json``, ``model.safetensors`` and ``README.md`` are fetched; the config is
    checked before the weights are downloaded, and a repo without safetensors is refused.
    """
    from hyperkd.core.io import atomic_path

    source = parse_source(repo_id, revision)
    if source.folder is not None:
        raise HyperKDError(f"{repo_id!r} is a local folder; pull takes a Hugging Face repo id (org/name[@rev])")
    read_config(source, token=token, cache_dir=cache_dir)
    weights = fetch_weights(source, token=token, cache_dir=cache_dir)
    files = {name: fetch_file(source, name, token=token, cache_dir=cache_dir) for name in SHARED_FILES}
    if out is None:
        return weights.parent
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise HyperKDError(f"--out {dest} is a file; give a folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        if path is not None:
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(path, tmp)
    return dest


@dataclass
class PushResult:
    """What :func:`push` uploaded: the repo, the branch, the files and the commit URL."""

    repo_id: str
    revision: str | None
    files: list[str]
    commit_url: str
    card_rendered: bool


def push(
    path: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Upload a model folder (or a run folder's ``student/``) to ``repo_id`` in one commit.

    The folder is checked first as a reader would check it (config, versions, plugins, a
    ``model.safetensors`` that exists). Only the three shared files are uploaded. A README
    that hyperkd generated and nobody edited is re-rendered with the repo id in its
    loading instructions; an edited one is uploaded as it is. ``revision`` is a branch,
    created from the default branch if it does not exist.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = shareable_folder(path)
    if not folder.is_dir():
        raise HyperKDError(f"{path} is not a folder; push takes a run folder or a model folder")
    source = Source(str(folder), folder=folder)
    config = read_config(source)
    if not (folder / WEIGHTS_NAME).is_file():
        raise refuse_missing_safetensors(source)
    card_path = folder / CARD_NAME
    generated = render_card(config).content
    rendered = not card_path.is_file() or card_path.read_text(encoding="utf-8") == generated
    card = render_card(config, load_id=repo_id).content if rendered else card_path.read_text(encoding="utf-8")
    ops = [
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode("utf-8")),
    ]
    api = HfApi(token=token)
    sensor = (config.get("sensor") or {}).get("name", "")
    try:
        repo = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        real_id = getattr(repo, "repo_id", None) or repo_id
        if revision:
            api.create_branch(repo_id=real_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.create_commit(
            repo_id=real_id, repo_type="model", operations=ops, revision=revision,
            commit_message=commit_message
            or f"hyperkd {config.get('hyperkd_version')}: {config['model_type']} for {sensor}",
        )
    except (OSError, ValueError) as exc:  # HTTP errors, offline mode, invalid ids, missing login
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise HyperKDError(f"could not push {folder} to {repo_id}{offline}: {type(exc).__name__}: {first}") from exc
    url = getattr(info, "commit_url", None) or str(info)
    return PushResult(real_id, revision, [op.path_in_repo for op in ops], str(url), rendered)

