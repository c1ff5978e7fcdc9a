"""Finding, reading and strictly loading Prithvi-EO weights.

A *weights source* (``weights=`` of the teacher factories, ``--teacher-weights`` on the
command line) is one of:

* ``"default"`` — the variant's official file on the Hugging Face Hub;
* ``None`` — no weights: keep the random initialisation (the random-teacher control);
* a local ``.pt`` / ``.pth`` / ``.safetensors`` file, or a folder holding one
  (``model.safetensors`` written by ``hyperkd convert prithvi`` first, then the official
  file name, then a single weights file);
* a Hub reference in :class:`huggingface_hub.HfFileSystem` style:
  ``[hf://]org/name[@revision][/path/in/repo.pt]``. Without a path the official file name
  is used for the official repository; other repositories are tried for
  ``model.safetensors`` and then the official file name. A revision with a slash is written
  URL-encoded (``@refs%2Fpr%2F1``).

Hub files are resolved with :func:`huggingface_hub.hf_hub_download`, so the HF cache,
``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` behave as users expect. They are read
*when the download is asked for* (not when huggingface_hub was imported), so a process can
switch caches or go offline at run time.

Files are read with ``torch.load(weights_only=True)`` (never arbitrary pickles) or with
safetensors. Both official key layouts load — v1's flat keys (``blocks.0...``,
``decoder_blocks.0...``) and the ``encoder.`` / ``decoder.`` prefixed layout — as does a
state dict nested one level under ``"model"`` or ``"state_dict"`` (the layout MAE-style
training scripts save: ``torch.save({"model": model.state_dict(), ...})``). Stored
position tables are ignored: the model's own sin-cos table is used, as in the reference
loaders. Everything else must match exactly; any difference raises one
:class:`~hyperkd.core.errors.WeightsError` listing missing keys, unexpected keys and shape
mismatches.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hyperkd.core.errors import WeightsError
from hyperkd.hub import (
    HF_PREFIX,
    LOCAL_PREFIX,
    Source,
    fetch_file,
    first_line,
    not_cached_error,
    parse_hub_ref,
)
from hyperkd_prithvi.model import PrithviConfig, PrithviMAE, sincos_3d

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
CONVERTED_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"
NESTING_KEYS = ("model", "state_dict")
MAX_LISTED = 8
"""How many keys of each kind a mismatch message lists before saying "(+N more)"."""


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from: ``kind`` is ``"hub"``, ``"file"`` or ``"folder"``."""

    kind: str
    spec: str
    path: Path | None = None
    repo_id: str | None = None
    filenames: tuple[str, ...] = ()
    revision: str | None = None
    explicit: bool = False
    """A Hub source written with ``hf-hub:`` / ``hf://`` (or ``"default"``): no local reading."""

    def describe(self) -> str:
        """Human-readable description used in messages and ``teachers show``."""
        if self.kind == "hub":
            rev = f"@{self.revision}" if self.revision else ""
            files = " or ".join(self.filenames)
            return f"Hugging Face {self.repo_id}{rev} / {files}"
        return f"{self.kind} {self.path}"


def parse_source(
    spec: str | os.PathLike[str],
    *,
    official_repo: str | None = None,
    official_filename: str | None = None,
) -> WeightsSource:
    """Turn a ``weights=`` value (not ``None``) into a :class:`WeightsSource`.

    ``"default"`` needs an official repo and file. Existing local paths win over Hub ids;
    something that looks like a local path but does not exist is an error, not a Hub lookup.
    ``local-dir:PATH`` and ``hf-hub:ORG/NAME[@REV][/FILE]`` choose the reading explicitly
    (the Hub reference is parsed by :func:`hyperkd.hub.parse_hub_ref`, as everywhere in hyperkd).
    """
    text = os.fspath(spec).strip()
    if text == "default":
        if not (official_repo and official_filename):
            raise WeightsError(
                "this teacher has no official weights; pass weights=None (random init) or a "
                "checkpoint file, folder or Hugging Face repo id"
            )
        return WeightsSource(
            "hub", text, repo_id=official_repo, filenames=(official_filename,), explicit=True
        )
    forced_local = text.startswith(LOCAL_PREFIX)
    local = Path(text.removeprefix(LOCAL_PREFIX)).expanduser()
    ref = None if forced_local else parse_hub_ref(text)
    explicit = ref is not None and ref.explicit
    if local.is_file() and not explicit:
        return WeightsSource("file", text, path=local)
    if local.is_dir() and not explicit:
        return WeightsSource("folder", text, path=local)
    looks_local = not explicit and (
        forced_local
        or text.startswith(("/", "./", "../", "~", "\\"))
        or bool(re.match(r"^[A-Za-z]:[\\/]", text))
        or (text.count("/") <= 1 and text.lower().endswith(WEIGHT_SUFFIXES))
        or "/" not in text
    )
    if looks_local or ref is None:
        raise WeightsError(
            f"weights {text!r}: no such file or folder, and not a Hugging Face repo id "
            "(expected a .pt/.safetensors file, a folder, or org/name, org/name@revision, org/name@revision/file; "
            f"{LOCAL_PREFIX}PATH or {HF_PREFIX}ORG/NAME say which)"
        )
    if ref.path:
        filenames: tuple[str, ...] = (ref.path,)
    elif ref.repo_id == official_repo and official_filename:
        filenames = (official_filename,)
    else:
        filenames = (CONVERTED_FILENAME, *((official_filename,) if official_filename else ()))
    return WeightsSource(
        "hub", text, repo_id=ref.repo_id, filenames=filenames, revision=ref.revision, explicit=explicit
    )


# -- resolving -----------------------------------------------------------------------------------

LOCAL_COPY = "pass `--teacher-weights PATH` (weights= in Python) with a local .pt/.safetensors file or folder"


def _hub_download(source: WeightsSource) -> Path:
    """The first of ``source.filenames`` the repo (or, offline, the HF cache) has, through
    :func:`hyperkd.hub.fetch_file`; Hub failures get hyperkd's one-line messages."""
    assert source.repo_id is not None
    where = Source(source.spec, repo_id=source.repo_id, revision=source.revision, explicit=source.explicit)
    for filename in source.filenames:
        got = fetch_file(where, filename, remedy=LOCAL_COPY, cache_miss_ok=True)
        if got is not None:
            return got
    raise not_cached_error(
        where,
        source.filenames,
        remedy=f"Download it where the Hub is reachable (`hf download {source.repo_id} {source.filenames[0]}`) "
        f"and copy the cache, or {LOCAL_COPY}",
    )


def _pick_in_folder(folder: Path, official_filename: str | None) -> Path:
    for name in (CONVERTED_FILENAME, official_filename):
        if name and (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsError(
            f"folder {folder} holds no weights file ({CONVERTED_FILENAME}"
            f"{', ' + official_filename if official_filename else ''} or any {'/'.join(WEIGHT_SUFFIXES)})"
        )
    raise WeightsError(
        f"folder {folder} holds several weights files ({', '.join(p.name for p in found)}); "
        "pass the one to use"
    )


def resolve(source: WeightsSource, *, official_filename: str | None = None) -> Path:
    """The local file a source points to (downloading through the HF cache if needed)."""
    if source.kind == "hub":
        return _hub_download(source)
    assert source.path is not None
    if source.kind == "folder":
        return _pick_in_folder(source.path, official_filename)
    return source.path


# -- reading -------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, safely.

    ``.safetensors`` files go through safetensors; everything else through
    ``torch.load(weights_only=True)``. Unreadable files raise a :class:`WeightsError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(
            f"weights file {path} is empty (an interrupted download?); delete it and fetch it again"
        )
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(
                f"weights file {path} is not a readable safetensors file ({first_line(exc)}); "
                "it may be truncated or corrupt — delete it and fetch it again"
            ) from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            if "weights_only" in msg or "Weights only load failed" in msg:
                raise WeightsError(
                    f"weights file {path} holds Python objects besides tensors, and hyperkd loads "
                    "checkpoints only with torch.load(weights_only=True); save a plain state dict "
                    "(torch.save(model.state_dict(), ...)) or convert it with `hyperkd convert prithvi`"
                ) from exc
            raise WeightsError(f"weights file {path} is corrupt ({first_line(exc)})") from exc
        except Exception as exc:
            raise WeightsError(
                f"weights file {path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: "
                f"{first_line(exc)}); it may be truncated or corrupt — delete it and fetch it again"
            ) from exc
    return _as_flat_state_dict(obj, path)


def _as_flat_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        for key in NESTING_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        shown = ", ".join(bad[:MAX_LISTED]) + (
            f" (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        )
        raise WeightsError(f"weights file {path} is not a plain state dict: non-tensor entries {shown}")
    return {str(k): v for k, v in obj.items()}


# -- matching ------------------------------------------------------------------------------------


def to_prefixed(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map v1 flat keys to the ``encoder.`` / ``decoder.`` layout; prefixed keys pass through.

    The rule is the reference's: flat keys that belong to the decoder start with
    ``decoder`` or contain ``_dec`` (TL encoders) or are ``mask_token``.
    """
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith(("encoder.", "decoder.")):
            out[k] = v
        elif k.startswith("decoder") or "_dec" in k or k == "mask_token":
            out["decoder." + k] = v
        else:
            out["encoder." + k] = v
    return out


def key_layout(state: Mapping[str, Tensor]) -> str:
    """``"prefixed"``, ``"flat"`` or ``"mixed"``."""
    pref = sum(k.startswith(("encoder.", "decoder.")) for k in state)
    return "prefixed" if pref == len(state) else "flat" if pref == 0 else "mixed"


POS_EMBED_KEYS = ("encoder.pos_embed", "decoder.decoder_pos_embed")


def fresh_pos_embeds(cfg: PrithviConfig) -> dict[str, Tensor]:
    """The model's own position tables for its configured grid (CPU, float32)."""
    grid = cfg.grid_size
    return {
        "encoder.pos_embed": sincos_3d(cfg.embed_dim, grid, device="cpu"),
        "decoder.decoder_pos_embed": sincos_3d(cfg.decoder_embed_dim, grid, device="cpu"),
    }


@dataclass
class Mismatch:
    """What differs between a state dict and a model."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        """One line: counts and (truncated) lists of each kind of difference."""

        def listing(items: list[str]) -> str:
            head = ", ".join(items[:MAX_LISTED])
            more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            return head + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {listing(self.unexpected)}")
        if self.shapes:
            parts.append(
                f"{len(self.shapes)} shape mismatch(es): "
                + listing([f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.shapes])
            )
        return "; ".join(parts)


def compare(state: Mapping[str, Tensor], model: PrithviMAE) -> Mismatch:
    """Compare a prefixed state dict with ``model.state_dict()`` (names and shapes)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Listed in the model's module order (patch embedding, blocks, norm, decoder), which
    # reads better than alphabetical order; unexpected keys in the file's order.
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        (k, tuple(state[k].shape), shape)
        for k, shape in want.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    return Mismatch(missing, unexpected, shapes)


def infer_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Architecture fields read off a (prefixed) state dict's shapes, for helpful messages."""
    out: dict[str, Any] = {}
    w = state.get("encoder.patch_embed.proj.weight")
    if w is not None and w.ndim == 5:
        out["embed_dim"], out["in_chans"] = int(w.shape[0]), int(w.shape[1])
        out["patch_size"] = [int(s) for s in w.shape[2:]]
    for prefix, key in (("encoder.blocks.", "depth"), ("decoder.decoder_blocks.", "decoder_depth")):
        idx = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
        if idx:
            out[key] = max(idx) + 1
    d = state.get("decoder.decoder_embed.weight")
    if d is not None and d.ndim == 2:
        out["decoder_embed_dim"] = int(d.shape[0])
    coords = [
        c
        for c, k in (
            ("time", "encoder.temporal_embed_enc.scale"),
            ("location", "encoder.location_embed_enc.scale"),
        )
        if k in state
    ]
    out["coords_encoding"] = coords
    return out


def load_state_dict_into(
    model: PrithviMAE,
    state: Mapping[str, Tensor],
    *,
    source: str = "state dict",
    variant: str | None = None,
) -> str:
    """Strictly load ``state`` (either layout) into ``model``; returns the layout found.

    Stored position tables are replaced by the model's own. A model on the meta device is
    loaded with ``assign=True`` (so a full-size key set can be checked without memory).
    """
    layout = key_layout(state)
    prefixed = to_prefixed(state)
    for k in POS_EMBED_KEYS:
        prefixed.pop(k, None)
    prefixed.update(fresh_pos_embeds(model.cfg))
    mismatch = compare(prefixed, model)
    if mismatch:
        who = variant or "this Prithvi model"
        guess = infer_config(prefixed)
        hint = ""
        if guess:
            hint = " The file looks like: " + ", ".join(f"{k}={v}" for k, v in guess.items()) + "."
        layout_note = " (flat v1 keys, shown with encoder./decoder. prefixes)" if layout != "prefixed" else ""
        raise WeightsError(
            f"weights from {source} do not match {who} (strict load){layout_note}: {mismatch.describe()}."
            f"{hint} Check that the file is for this variant (`hyperkd teachers show NAME`), "
            "or build the teacher with matching architecture overrides"
        )
    current = model.state_dict()
    on_meta = any(t.is_meta for t in current.values())
    if on_meta:
        # assign=True adopts the file's tensors; keep the model's dtype (float32) regardless
        # of how the file stored them.
        prefixed = {
            k: v.to(current[k].dtype) if v.is_floating_point() and not v.is_meta else v
            for k, v in prefixed.items()
        }
    model.load_state_dict(prefixed, strict=True, assign=on_meta)
    return layout


def check_folder_config(folder: Path, model_cfg: PrithviConfig, variant: str | None) -> None:
    """If a converted folder's ``config.json`` names another architecture, say so clearly."""
    cfg_path = folder / CONFIG_FILENAME
    if not cfg_path.is_file():
        return
    try:
        data = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{cfg_path} is not valid JSON ({first_line(exc)})") from exc
    arch = data.get("architecture") if isinstance(data, Mapping) else None
    if not isinstance(arch, Mapping):
        return
    theirs = PrithviConfig.from_dict(arch).shape_fields()
    ours = model_cfg.shape_fields()
    diff = {k: (theirs[k], ours[k]) for k in ours if theirs.get(k) != ours[k]}
    if diff:
        shown = ", ".join(f"{k}: folder {a} vs model {b}" for k, (a, b) in diff.items())
        raise WeightsError(
            f"{folder} holds weights for {data.get('variant', 'another architecture')}, not "
            f"{variant or 'this model'} ({shown})"
        )


def load_weights(
    model: PrithviMAE,
    spec: str | os.PathLike[str],
    *,
    official_repo: str | None = None,
    official_filename: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Resolve ``spec``, read it and load it strictly into ``model``.

    Returns what was loaded: ``{"source", "path", "layout"}`` (for logs and run records).
    """
    source = parse_source(spec, official_repo=official_repo, official_filename=official_filename)
    if source.kind == "folder":
        assert source.path is not None
        check_folder_config(source.path, model.cfg, variant)
    path = resolve(source, official_filename=official_filename)
    state = read_state_dict(path)
    layout = load_state_dict_into(model, state, source=str(path), variant=variant)
    return {"source": source.describe(), "path": str(path), "layout": layout}
