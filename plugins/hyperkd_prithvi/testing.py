"""Tiny Prithvi-architecture checkpoints in the real file formats, for tests and CPU demos.

These weights are random (seeded) and are **not** NASA/IBM's: they have the official key
names and the official tensor *structure* at toy widths, so every loading path (both key
layouts, .pt and .safetensors, folders, the Hugging Face cache under ``HF_HUB_OFFLINE=1``)
can be exercised in milliseconds without the real multi-hundred-MB files.

Typical use in a test::

    from hyperkd_prithvi.testing import install_in_hf_cache

    def test_distill_offline(tmp_path, monkeypatch):
        install_in_hf_cache(tmp_path / "hub", "my-org/prithvi-tiny", "weights.pt")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        teacher = hyperkd.create("teacher", "prithvi-eo-tiny", weights="my-org/prithvi-tiny/weights.pt")

To exercise the *default* (official) path of a full-size name, install the tiny file under
the official repo and file name and build that name with :func:`tiny_overrides`::

    install_in_hf_cache(hub, "ibm-nasa-geospatial/Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt")
    teacher = hyperkd.create("teacher", "prithvi", weights="default", **tiny_overrides())
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from hyperkd.core.io import atomic_path, atomic_write_text

Layout = Literal["prefixed", "flat"]
TINY_VARIANT = "prithvi-eo-tiny"


def tiny_overrides(variant: str = TINY_VARIANT) -> dict[str, Any]:
    """Architecture overrides that turn any Prithvi name into ``variant``'s (tiny) shapes."""
    from hyperkd_prithvi.teacher import VARIANTS

    cfg = VARIANTS[variant].config.to_dict()
    keep = (
        "img_size",
        "patch_size",
        "num_frames",
        "in_chans",
        "embed_dim",
        "depth",
        "num_heads",
        "mlp_ratio",
        "decoder_embed_dim",
        "decoder_depth",
        "decoder_num_heads",
        "coords_encoding",
        "coords_scale_learn",
    )
    out = {k: cfg[k] for k in keep}
    out["patch_size"] = tuple(out["patch_size"])
    out["coords_encoding"] = tuple(out["coords_encoding"])
    return out


def tiny_state_dict(
    variant: str = TINY_VARIANT,
    *,
    layout: Layout = "prefixed",
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Tensor]:
    """Seeded random weights of a Prithvi-architecture MAE, in an official key layout.

    ``layout="prefixed"`` gives ``encoder.*`` / ``decoder.*`` keys (Prithvi_EO_V1_100M.pt,
    v2 files); ``"flat"`` gives v1's legacy flat keys (Prithvi_100M.pt). Position tables
    are included, as in the official files.
    """
    from hyperkd_prithvi.model import build_mae
    from hyperkd_prithvi.teacher import variant_config

    if layout not in ("prefixed", "flat"):
        raise ValueError(f"layout must be 'prefixed' or 'flat', got {layout!r}")
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(seed)
        mae = build_mae(variant_config(variant, **overrides))
        # Perturb norms and biases too, so a loader that skipped any tensor is caught.
        with torch.no_grad():
            for name, p in mae.named_parameters():
                if name.endswith("bias") or "norm" in name or name.endswith("scale"):
                    p.add_(0.01 * torch.randn_like(p))
    state = {k: v.detach().clone() for k, v in mae.state_dict().items()}
    if layout == "flat":
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    return state


def write_tiny_checkpoint(
    path: str | os.PathLike[str],
    variant: str = TINY_VARIANT,
    *,
    layout: Layout = "prefixed",
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Write :func:`tiny_state_dict` to ``path``: safetensors if it ends in ``.safetensors``,
    else a plain ``torch.save`` state dict (what the official ``.pt`` files are). Atomic.
    """
    path = Path(path)
    state = tiny_state_dict(variant, layout=layout, seed=seed, **overrides)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        else:
            torch.save(state, tmp)
    return path


def repo_folder_name(repo_id: str, repo_type: str = "model") -> str:
    """The HF cache folder of a repo: ``models--org--name``."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def install_in_hf_cache(
    cache_dir: str | os.PathLike[str],
    repo_id: str,
    filename: str,
    *,
    source: str | os.PathLike[str] | None = None,
    revision: str = "main",
    commit: str | None = None,
    variant: str = TINY_VARIANT,
    layout: Layout = "prefixed",
    seed: int = 0,
) -> Path:
    """Lay a checkpoint out exactly as ``hf_hub_download`` caches it; returns the snapshot path.

    Writes ``cache_dir/models--org--name/blobs/<sha256>``, a relative symlink (a copy where
    symlinks are unavailable) at ``snapshots/<commit>/<filename>``, and
    ``refs/<revision>`` holding the commit hash, so that
    ``hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
    local_files_only=True)`` finds it (also with ``revision=<commit>``). ``source`` is an
    existing file to install; without it a tiny checkpoint of ``variant`` is written.
    """
    repo_dir = Path(cache_dir) / repo_folder_name(repo_id)
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    staged = blobs / f".staging-{os.getpid()}{Path(filename).suffix}"
    try:
        if source is None:
            write_tiny_checkpoint(staged, variant, layout=layout, seed=seed)
        else:
            shutil.copyfile(source, staged)
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
        blob = blobs / digest
        os.replace(staged, blob)
    finally:
        if staged.exists():
            staged.unlink()
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}:{digest}".encode()).hexdigest()
    snap = repo_dir / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    try:
        snap.symlink_to(os.path.relpath(blob, snap.parent))
    except OSError:
        shutil.copyfile(blob, snap)
    atomic_write_text(repo_dir / "refs" / revision, commit)
    return snap
