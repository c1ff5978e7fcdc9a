"""Where a shared model lives, and fetching its files: source parsing, the HF cache, error mapping.

One parser for every place that names a Hub object (:func:`parse_hub_ref`), one for model
sources (:func:`parse_source`: a local folder, a run folder or a Hub repo, with the explicit
prefixes ``local-dir:`` and ``hf-hub:``), and one mapping of ``huggingface_hub`` errors to
one-line :class:`~hyperkd.core.errors.WeightsError` messages (:func:`hub_error`,
:func:`not_cached_error`). Plugins that download (the Prithvi teacher weights) use these
instead of their own copies, so every download says the same things the same way.

The cache folder and ``HF_HUB_OFFLINE`` are read from the environment *at call time*
(:func:`hub_cache_dir`, :func:`hub_offline`), not when huggingface_hub was imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

from hyperkd.core.errors import HyperKDError, WeightsError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
SHARED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
"""The files of a shared model; push uploads these and nothing else."""
PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt", "pytorch_model.pt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

HF_PREFIX = "hf-hub:"
"""Prefix that makes a spec a Hugging Face repo, whatever exists locally (timm's spelling)."""
LOCAL_PREFIX = "local-dir:"
"""Prefix that makes a spec a local folder, never a Hub lookup."""

_REF_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+?)(?:@(?P<rev>[^/\s]+))?(?:/(?P<path>[^\s]+))?$")


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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- parsing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubRef:
    """A parsed Hub reference: ``repo_id``, an optional ``revision`` and ``path`` inside the repo.
    ``explicit`` says it was written with ``hf-hub:`` or ``hf://`` (no local reading exists)."""

    repo_id: str
    revision: str | None = None
    path: str | None = None
    explicit: bool = False


def parse_hub_ref(spec: str | os.PathLike[str]) -> HubRef | None:
    """``[hf-hub:|hf://]org/name[@revision][/path/in/repo]`` as a :class:`HubRef`, or ``None``
    when the text is not shaped like one. A revision with a slash is written URL-encoded
    (``@refs%2Fpr%2F1``). Says nothing about whether the repo exists."""
    text = os.fspath(spec).strip()
    explicit = text.startswith((HF_PREFIX, "hf://"))
    body = text[len(HF_PREFIX) :] if text.startswith(HF_PREFIX) else text.removeprefix("hf://")
    m = _REF_RE.match(body)
    if m is None:
        return None
    rev = m.group("rev")
    return HubRef(m.group("repo"), unquote(rev) if rev else None, m.group("path"), explicit)


@dataclass(frozen=True)
class Source:
    """Where a model lives: a local ``folder`` or a Hub ``repo_id`` at ``revision``.

    ``explicit`` is true when the spec was prefixed (``hf-hub:``, ``hf://``, ``local-dir:``);
    an unprefixed repo id that cannot be found gets an error naming both readings."""

    spec: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    explicit: bool = False

    def describe(self) -> str:
        """``folder PATH`` or ``Hugging Face repo ORG/NAME[@REV]`` for messages."""
        if self.folder is not None:
            return f"folder {self.folder}"
        return f"Hugging Face repo {self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def reading_note(self) -> str:
        """For an unprefixed repo id: that no local folder of that name exists, and the prefixes."""
        if self.repo_id is None or self.explicit:
            return ""
        return (
            f"; no local file or folder named {self.spec!r} exists either (write {LOCAL_PREFIX}PATH or "
            f"{HF_PREFIX}ORG/NAME to say which)"
        )


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as ``[hf-hub:|hf://]org/name[@revision]`` and is not an existing local path."""
    ref = parse_hub_ref(spec)
    if ref is None or ref.path is not None:
        return False
    return ref.explicit or not Path(spec).expanduser().exists()


def has_model(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model folder or a run folder (``config.json`` in it or in ``student/``)."""
    p = Path(path).expanduser()
    return (p / CONFIG_NAME).is_file() or (p / "student" / CONFIG_NAME).is_file()


def shareable_folder(path: str | os.PathLike[str]) -> Path:
    """The model folder inside ``path``: ``path`` itself, or ``path/student`` for a run folder."""
    p = Path(path).expanduser()
    if not (p / CONFIG_NAME).is_file() and (p / "student" / CONFIG_NAME).is_file():
        return p / "student"
    return p


def parse_source(spec: str | os.PathLike[str] | Source, revision: str | None = None) -> Source:
    """A model source: ``local-dir:PATH`` / ``hf-hub:ORG/NAME[@REV]`` as written; unprefixed,
    an existing local folder (or run folder) wins, else ``org/name[@rev]`` is a Hub repo."""
    if isinstance(spec, Source):
        if not revision or revision == spec.revision:
            return spec
        if spec.folder is not None:
            raise HyperKDError(f"revision={revision!r} was given, but {spec.spec} is a local folder")
        if spec.revision:
            raise HyperKDError(
                f"{spec.spec!r} names revision {spec.revision!r} but revision={revision!r} was also given"
            )
        return replace(spec, revision=revision)
    text = os.fspath(spec).strip()
    forced_local = text.startswith(LOCAL_PREFIX)
    local = Path(text[len(LOCAL_PREFIX) :] if forced_local else text).expanduser()
    if forced_local or (local.is_dir() and not text.startswith(HF_PREFIX)):
        if not local.is_dir():
            raise HyperKDError(f"{text!r}: no such folder ({LOCAL_PREFIX} names a local model or run folder)")
        if revision:
            raise HyperKDError(f"revision={revision!r} was given, but {text} is a local folder")
        return Source(text, folder=shareable_folder(local), explicit=forced_local)
    ref = parse_hub_ref(text)
    if ref is None or ref.path is not None or (local.exists() and not ref.explicit):
        raise HyperKDError(
            f"{text!r} is neither a model folder nor a Hugging Face repo id "
            f"(expected a folder with config.json + model.safetensors, a run folder, or org/name[@revision]; "
            f"{LOCAL_PREFIX}PATH or {HF_PREFIX}ORG/NAME say which)"
        )
    if ref.revision and revision and ref.revision != revision:
        raise HyperKDError(
            f"{text!r} names revision {ref.revision!r} but revision={revision!r} was also given"
        )
    return Source(text, repo_id=ref.repo_id, revision=revision or ref.revision, explicit=ref.explicit)


# -- errors -------------------------------------------------------------------------------------
def not_cached_error(source: Source, filenames: Sequence[str], *, remedy: str | None = None) -> WeightsError:
    """The error for Hub files that are neither in the local cache nor downloadable now
    (offline, or the Hub unreachable). ``remedy`` replaces the default advice."""
    why = (
        "HF_HUB_OFFLINE is set and it is not in the local cache"
        if hub_offline()
        else "it is neither in the local cache nor reachable on the Hub (set HF_HUB_OFFLINE=1 on machines "
        "without internet to skip the download attempts)"
    )
    advice = remedy or (
        f"Run `hyperkd hub pull {source.repo_id}` where the Hub is reachable and copy the cache, "
        "or pass a local folder"
    )
    return WeightsError(
        f"{source.describe()}: {' or '.join(filenames)} not found — {why} "
        f"(cache: {hub_cache_dir()}){source.reading_note()}. {advice}"
    )


def hub_error(
    source: Source, filename: str, exc: BaseException, *, remedy: str | None = None
) -> WeightsError:
    """One-line :class:`WeightsError` for a failed Hub download of ``filename`` from ``source``.
    ``remedy`` (e.g. "pass `--teacher-weights PATH`") is appended where a local copy would help."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = source.describe()
    tail = f". {remedy[0].upper()}{remedy[1:]}" if remedy else ""
    if isinstance(exc, LocalEntryNotFoundError):
        return not_cached_error(source, [filename], remedy=remedy)
    if isinstance(exc, GatedRepoError):
        return WeightsError(
            f"{where} is gated: accept its terms on the Hub and log in (`hf auth login`)"
            f"{', or ' + remedy if remedy else ''} ({first_line(exc)})"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(
            f"{where} does not exist (or is private: pass --token / log in){source.reading_note()}{tail}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"{source.repo_id} has no revision {source.revision!r}{tail}")
    if isinstance(exc, HFValidationError):
        return WeightsError(f"{source.spec!r}: not a valid Hugging Face repo id ({first_line(exc)})")
    return WeightsError(
        f"could not fetch {filename} from {where}: {type(exc).__name__}: {first_line(exc)}{tail}"
    )


# -- fetching -----------------------------------------------------------------------------------
def fetch_file(
    source: Source,
    filename: str,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
    remedy: str | None = None,
    cache_miss_ok: bool = False,
) -> Path | None:
    """The local path of ``filename`` in ``source`` (downloading through the HF cache), or
    ``None`` when the folder or repo has no such file. Other failures raise a clear error
    (:func:`hub_error`, with ``remedy``). ``cache_miss_ok``: a file that is not in the
    cache and cannot be downloaded now is also ``None`` (for callers that try several names)."""
    if source.folder is not None:
        path = source.folder / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = hub_offline() if local_files_only is None else local_files_only or hub_offline()
    assert source.repo_id is not None
    try:
        return Path(
            hf_hub_download(
                source.repo_id,
                filename,
                revision=source.revision,
                cache_dir=cache_dir or hub_cache_dir(),
                token=token,
                local_files_only=offline,
                force_download=force_download,
            )
        )
    except LocalEntryNotFoundError as exc:
        if cache_miss_ok or (offline and _known_missing(source, filename, cache_dir)):
            return None  # (or an earlier online lookup recorded that the repo has no such file)
        raise hub_error(source, filename, exc, remedy=remedy) from exc
    except EntryNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise hub_error(source, filename, exc, remedy=remedy) from exc


def _known_missing(source: Source, filename: str, cache_dir: str | Path | None) -> bool:
    """Whether the cache records that this revision has no ``filename`` (HF's ``.no_exist`` marker)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    assert source.repo_id is not None
    got = try_to_load_from_cache(
        source.repo_id, filename, cache_dir=cache_dir or hub_cache_dir(), revision=source.revision
    )
    return got is _CACHED_NO_EXIST


def fetch_weights(
    source: Source,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
) -> Path:
    """``model.safetensors`` of ``source``; a folder, repo or offline cache that offers only
    pickle weights is refused (nothing is unpickled)."""
    try:
        weights = fetch_file(
            source,
            WEIGHTS_NAME,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
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

        return [
            n
            for n in PICKLE_NAMES
            if isinstance(
                try_to_load_from_cache(
                    source.repo_id, n, cache_dir=cache_dir or hub_cache_dir(), revision=source.revision
                ),
                str,
            )
        ]
    try:
        from huggingface_hub import HfApi

        files = HfApi(token=token if isinstance(token, str) else None).list_repo_files(
            source.repo_id, revision=source.revision
        )
    except Exception:  # only for the message; the refusal stands without it
        return []
    return sorted(f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES)


def refuse_missing_safetensors(
    source: Source, token: str | bool | None = None, cache_dir: str | Path | None = None
) -> WeightsError:
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
