"""Training checkpoints as safetensors, written atomically.

Lightning's default checkpoint format is a pickle, which ``torch.load`` can only read
safely with ``weights_only=True`` and which runs code when loaded unsafely. hyperkd writes
everything as safetensors instead: :class:`SafetensorsCheckpointIO` flattens Lightning's
checkpoint dict (model, optimiser, scheduler and loop state) into tensors plus one JSON
document (in the safetensors metadata) describing the structure, and writes it through a
temporary file + atomic rename, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import save_file

from hyperkd.core.errors import WeightsError
from hyperkd.core.io import atomic_path

_MAGIC = "hyperkd-checkpoint/1"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and obj != obj:  # NaN is not JSON
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": "inf" if obj > 0 else "-inf"}
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    raise WeightsError(f"cannot store a {type(obj).__name__} in a checkpoint (value {obj!r:.80})")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a nested checkpoint dict as one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(checkpoint, tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _MAGIC, "structure": json.dumps(structure)})


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint_file`."""
    path = Path(path)
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            if meta.get("format") != _MAGIC:
                raise WeightsError(f"{path} is not a hyperkd training checkpoint")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except WeightsError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"cannot read checkpoint {path}: {exc}. Is it complete?") from None
    return _decode(json.loads(meta["structure"]), tensors)


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO that stores checkpoints as atomic safetensors files."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location or "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


def checkpoint_step(path: str | Path) -> int | None:
    """The ``global_step`` stored in a checkpoint, read from its header only (None: not a readable
    hyperkd checkpoint, e.g. cut short by a kill)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _MAGIC:
            return None
        structure = json.loads(meta["structure"])
        for key, value in structure.get("__dict__", []):
            if key == "global_step" and isinstance(value, int):
                return value
    except Exception:  # corrupt or partial files: not a checkpoint to resume from
        return None
    return None


def is_temporary(path: Path) -> bool:
    """A temporary file of an interrupted atomic write (:func:`hyperkd.core.io.atomic_path`)."""
    return path.name.startswith(".") and ".tmp" in path.name


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the leftovers of checkpoint writes that a kill interrupted; returns what went."""
    folder = Path(folder)
    gone = [p for p in folder.glob(".*") if p.is_file() and is_temporary(p)] if folder.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def find_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint a resume continues from: of every readable ``*.ckpt`` in ``folder``, the one
    with the highest stored step (a ``last*`` file wins a tie), whatever its name, so a stale
    ``last.ckpt`` next to a newer ``last-v1.ckpt`` or ``stepN.ckpt`` is never chosen."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    best: tuple[tuple[int, bool, float], Path] | None = None
    for p in folder.glob("*.ckpt"):
        if is_temporary(p) or not p.is_file():
            continue
        step = checkpoint_step(p)
        if step is None:
            continue
        key = (step, p.name.startswith("last"), p.stat().st_mtime)
        if best is None or key > best[0]:
            best = (key, p)
    return best[1] if best is not None else None
