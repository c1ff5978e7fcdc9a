"""Convert a Prithvi-EO checkpoint into hyperkd's folder format.

``OUT/model.safetensors`` holds every tensor of the MAE in the ``encoder.`` / ``decoder.``
layout (position tables recomputed for the variant's pretraining grid), ``OUT/config.json``
the variant, architecture, bands, normalisation and where the weights came from. The
folder loads back with ``weights=OUT`` (or ``--teacher-weights OUT``), without pickle.

Why convert: safetensors files load without executing pickle code and memory-map, and the
config travels with the weights. A later issue generalises saving to the Hub; this writer
stays small on purpose.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from hyperkd.core.errors import WeightsError
from hyperkd.core.io import atomic_path, atomic_write_json
from hyperkd_prithvi.model import build_mae
from hyperkd_prithvi.teacher import VARIANTS, folder_config
from hyperkd_prithvi.weights import (
    CONFIG_FILENAME,
    CONVERTED_FILENAME,
    infer_config,
    load_state_dict_into,
    parse_source,
    read_state_dict,
    resolve,
    to_prefixed,
)


def detect_variant(state: dict[str, Tensor]) -> str:
    """The registered variant whose parameter shapes fit a state dict (either layout)."""
    found = infer_config(to_prefixed(state))
    for name, variant in VARIANTS.items():
        fields = variant.config.shape_fields()
        if all(found[k] == fields[k] for k in found if k in fields):
            return name
    shown = ", ".join(f"{k}={v}" for k, v in found.items()) or "no Prithvi keys"
    raise WeightsError(
        f"could not tell which Prithvi variant this checkpoint is ({shown}); pass --variant NAME "
        f"(one of {', '.join(VARIANTS)})"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_prithvi(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    variant: str | None = None,
) -> dict[str, Any]:
    """Read ``src`` (file, folder or Hub reference), check it strictly, write ``out``.

    ``variant`` defaults to the one whose shapes fit the file. Returns a summary dict
    (paths, variant, layout found, tensor and parameter counts).
    """
    if variant is not None and variant not in VARIANTS:
        raise WeightsError(f"unknown Prithvi variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    official = VARIANTS[variant] if variant else None
    source = parse_source(
        src,
        official_repo=official.repo_id if official else None,
        official_filename=official.filename if official else None,
    )
    path = resolve(source, official_filename=official.filename if official else None)
    state = read_state_dict(path)
    name = variant or detect_variant(state)
    spec = VARIANTS[name]
    mae = build_mae(spec.config, device="meta")
    layout = load_state_dict_into(mae, state, source=str(path), variant=name)
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in mae.state_dict().items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:  # safetensors refuses shared storage
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        tensors[k] = v
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / CONVERTED_FILENAME
    from safetensors.torch import save_file

    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "hyperkd_variant": name})
    src_info = {"spec": os.fspath(src), "file": str(path), "sha256": _sha256(path), "layout": layout}
    atomic_write_json(out_dir / CONFIG_FILENAME, folder_config(spec, spec.config, src_info))
    return {
        "variant": name,
        "weights": str(weights_path),
        "config": str(out_dir / CONFIG_FILENAME),
        "layout": layout,
        "tensors": len(tensors),
        "parameters": sum(p.numel() for p in mae.parameters()),
        "source": str(path),
    }
