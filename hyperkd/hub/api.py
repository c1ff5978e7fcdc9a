"""The sharing entry points: :func:`from_pretrained` (any installed model type), :func:`pull` and :func:`push`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperkd.core.errors import HyperKDError
from hyperkd.hub.card import render_card
from hyperkd.hub.config import model_type_class, read_config
from hyperkd.hub.sources import (
    CARD_NAME,
    CONFIG_NAME,
    SHARED_FILES,
    WEIGHTS_NAME,
    Source,
    fetch_file,
    fetch_weights,
    hub_cache_dir,
    hub_offline,
    parse_source,
    refuse_missing_safetensors,
    shareable_folder,
)


def from_pretrained(
    name_or_path: str | os.PathLike[str] | Source,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
    map_location: str = "cpu",
) -> Any:
    """Load a hyperkd model from a folder, a run folder or a Hub repo (``org/name[@rev]``).

    A local folder wins over a repo id of the same spelling; ``local-dir:PATH`` and
    ``hf-hub:ORG/NAME`` say which is meant (:func:`~hyperkd.hub.sources.parse_source`).
    The class is chosen by ``config.json``'s ``model_type`` among installed ones; only
    ``model.safetensors`` is read (strictly), no code from the repo is run. Under
    ``HF_HUB_OFFLINE=1`` only the local HF cache is used. Returns the model in eval mode.
    """
    source = parse_source(name_or_path, revision)
    if source.repo_id is not None and Path(source.repo_id).is_dir():
        raise HyperKDError(
            f"{source.spec!r}: a local folder {source.repo_id} shadows the Hugging Face repo of the "
            "same name in the loader; load it from another working directory"
        )
    config = read_config(source, token=token, cache_dir=cache_dir, local_files_only=local_files_only)
    cls = model_type_class(config["model_type"])
    offline = hub_offline() if local_files_only is None else (local_files_only or hub_offline())
    model_id = str(source.folder) if source.folder is not None else str(source.repo_id)
    return cls.from_pretrained(
        model_id,
        revision=source.revision,
        token=token,
        cache_dir=cache_dir or (None if source.folder else hub_cache_dir()),
        local_files_only=offline,
        force_download=force_download,
        map_location=map_location,
    )


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
        raise HyperKDError(
            f"{repo_id!r} is a local folder; pull takes a Hugging Face repo id (org/name[@rev])"
        )
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
            repo_id=real_id,
            repo_type="model",
            operations=ops,
            revision=revision,
            commit_message=commit_message
            or f"hyperkd {config.get('hyperkd_version')}: {config['model_type']} for {sensor}",
        )
    except (OSError, ValueError) as exc:  # HTTP errors, offline mode, invalid ids, missing login
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise HyperKDError(
            f"could not push {folder} to {repo_id}{offline}: {type(exc).__name__}: {first}"
        ) from exc
    url = getattr(info, "commit_url", None) or str(info)
    return PushResult(real_id, revision, [op.path_in_repo for op in ops], str(url), rendered)
