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

Modules: :mod:`~hyperkd.hub.sources` (where a model lives: ``local-dir:`` / ``hf-hub:`` specs,
fetching through the HF cache, Hub error messages), :mod:`~hyperkd.hub.config` (the folder
format, config checks, model types), :mod:`~hyperkd.hub.card` (model card, citations, a run's
provenance), :mod:`~hyperkd.hub.weights` (reading ``model.safetensors`` into a model with
one-line errors), :mod:`~hyperkd.hub.mixin` (:class:`HyperKDHubMixin`) and :mod:`~hyperkd.hub.api`
(:func:`from_pretrained`, :func:`pull`, :func:`push`). Everything public is re-exported here.
"""

from hyperkd.hub.api import PushResult, from_pretrained, pull, push
from hyperkd.hub.card import (
    CITATIONS,
    DEFAULT_LICENSE,
    MODEL_CARD_TEMPLATE,
    render_card,
    run_provenance,
    training_data_info,
)
from hyperkd.hub.config import (
    BUILTIN_MODEL_TYPES,
    FORMAT_VERSION,
    HUB_FIELDS,
    LEGACY_STUDENT_KEYS,
    MIN_READER_VERSION,
    MODEL_TYPES,
    check_config,
    installed_version,
    model_type_class,
    normalize_config,
    read_config,
    register_model_type,
)
from hyperkd.hub.mixin import HyperKDHubMixin
from hyperkd.hub.sources import (
    CARD_NAME,
    CONFIG_NAME,
    HF_PREFIX,
    LOCAL_PREFIX,
    PICKLE_NAMES,
    PICKLE_SUFFIXES,
    SHARED_FILES,
    WEIGHTS_NAME,
    HubRef,
    Source,
    fetch_file,
    fetch_weights,
    first_line,
    has_model,
    hub_cache_dir,
    hub_error,
    hub_offline,
    is_repo_id,
    not_cached_error,
    parse_hub_ref,
    parse_source,
    refuse_missing_safetensors,
    shareable_folder,
)
from hyperkd.hub.weights import load_state, load_weights_file, mismatch_message, read_safetensors

__all__ = [
    "BUILTIN_MODEL_TYPES",
    "CARD_NAME",
    "CITATIONS",
    "CONFIG_NAME",
    "DEFAULT_LICENSE",
    "FORMAT_VERSION",
    "HF_PREFIX",
    "HUB_FIELDS",
    "LEGACY_STUDENT_KEYS",
    "LOCAL_PREFIX",
    "MIN_READER_VERSION",
    "MODEL_CARD_TEMPLATE",
    "MODEL_TYPES",
    "PICKLE_NAMES",
    "PICKLE_SUFFIXES",
    "SHARED_FILES",
    "WEIGHTS_NAME",
    "HubRef",
    "HyperKDHubMixin",
    "PushResult",
    "Source",
    "check_config",
    "fetch_file",
    "fetch_weights",
    "first_line",
    "from_pretrained",
    "has_model",
    "hub_cache_dir",
    "hub_error",
    "hub_offline",
    "installed_version",
    "is_repo_id",
    "load_state",
    "load_weights_file",
    "mismatch_message",
    "model_type_class",
    "normalize_config",
    "not_cached_error",
    "parse_hub_ref",
    "parse_source",
    "pull",
    "push",
    "read_config",
    "read_safetensors",
    "refuse_missing_safetensors",
    "register_model_type",
    "render_card",
    "run_provenance",
    "shareable_folder",
    "training_data_info",
]
