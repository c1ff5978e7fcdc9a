"""Train / validation / test splits of a chip store's indices (one rule for every run).

Pretraining, distillation and fine-tuning all split a store's chips here.

Fractions (:func:`split_chips`): a permutation drawn from ``seed`` whose first chips are the
test part, the next ones the validation part and the rest the training part. A part whose
fraction is above zero gets at least one chip; training always keeps at least one. So two
runs with the same ``seed`` (fine-tuning's ``split_seed``) hold out the same chips, whatever
they train.

Lists (:func:`split_listed`, :func:`split_store`; ``--train-list`` / ``--val-list`` /
``--test-list``): a part given by a list is exactly the chips the list names, and no random
split is drawn for it. A list is a text file (one entry per line, ``#`` comments), a CSV whose
first column holds the entries (a header row such as ``image,mask`` is skipped), or in Python a
sequence of entries. An entry is a chip index (``0`` .. ``n - 1``) or the file or product a chip
was cut from, matched by file name (``images/tile_3.tif`` names every chip cut from a file called
``tile_3.tif``; the product name ``tile_3`` works too). Lists must not share a chip. The chips in
no list are *the rest*:

- training not listed: the rest is split by the fractions (as :func:`split_chips` does) among
  training and the held-out parts that are not listed;
- training listed: the held-out parts that are not listed (with a fraction above zero) share
  the rest in proportion to their fractions; with both held-out parts listed the rest is unused.
  When the lists leave no chip for validation the run validates on none (a warning); a test part
  left empty is refused (fine-tuning would have nothing to score).

A held-out part that comes from a separate store (``val_fraction=None`` / ``test_fraction=None``:
``--val-data``, ``--eval-data``) takes no chip of this store, and a list for it is refused.
:func:`check_heldout_store` is the check such a separate store passes (bands by wavelength, chip
size).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Protocol

import numpy as np

from hyperkd.core.errors import DataError

log = logging.getLogger(__name__)

ChipList = str | os.PathLike[str] | Sequence[int | str]
"""A chip list: a text or CSV file, or (Python) the entries themselves."""

PARTS = ("train", "val", "test")
LIST_FLAGS = {"train": "--train-list", "val": "--val-list", "test": "--test-list"}
_NAMES = {"train": "training", "val": "validation", "test": "test"}
_STORE_FLAGS = {"val": "--val-data", "test": "--eval-data"}
_FRACTION_FLAGS = {"val": "--val-fraction", "test": "--test-fraction"}


def split_chips(
    n: int,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    *,
    strict: bool = True,
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic, disjoint, sorted ``(train, validation, test)`` indices of ``n`` chips.

    Validation and test get ``round(fraction * n)`` chips, at least one each when their
    fraction is > 0, shrunk (test first while it is the larger part) until training keeps
    one. ``strict``: a store too small to give every requested part a chip raises
    :class:`DataError`; with ``strict=False`` the holdouts that do not fit are left empty
    instead (pretraining on a one-chip store trains without validation).
    """
    parts = 1 + (val_fraction > 0) + (test_fraction > 0)
    if strict and n < parts:
        names = "/".join(
            p for p, f in (("train", 1), ("validation", val_fraction), ("test", test_fraction)) if f > 0
        )
        raise DataError(f"{n} chips are too few to split into {names}; use a larger store")
    perm = np.random.default_rng(seed).permutation(max(n, 0)).tolist()
    n_test = max(round(test_fraction * n), 1) if test_fraction > 0 else 0
    n_val = max(round(val_fraction * n), 1) if val_fraction > 0 else 0
    while n - n_test - n_val < 1 and (n_test or n_val):
        if (n_test >= n_val and n_test > 1) or not n_val:
            n_test -= 1
        else:
            n_val -= 1
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)


# ----------------------------------------------------------------------------------------------
# Chip lists
# ----------------------------------------------------------------------------------------------

_INDEX = re.compile(r"^[+]?\d+$")
_WORD = re.compile(r"^[A-Za-z_][\w -]*$")  # a CSV header cell: no path separator, no extension


def read_list(path: str | os.PathLike[str]) -> tuple[list[tuple[int, str]], bool]:
    """The entries of a list file as ``(line number, entry)``, and whether it was read as CSV.

    One entry per line, or a CSV's first column; blank lines and lines starting with ``#``
    are skipped. A file is read as CSV when it ends in ``.csv`` or its first entry line holds
    a comma.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(
            f"chip list {p}: cannot read it ({exc.strerror or exc}); give an existing file"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"chip list {p}: not UTF-8 text ({exc.reason} at byte {exc.start}); give a text or CSV file "
            "of chip indices or source file names"
        ) from None
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    is_csv = p.suffix.lower() == ".csv" or bool(lines and "," in lines[0][1])
    if not is_csv:
        return [(n, line.strip()) for n, line in lines], False
    rows = csv.reader([line for _, line in lines])
    return [
        (n, row[0].strip()) for (n, _), row in zip(lines, rows, strict=True) if row and row[0].strip()
    ], True


def _chip_names(chips: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """File or product name -> the chips cut from it (a chip's ``source`` and its ``path``'s file name)."""
    names: dict[str, list[int]] = {}
    for i, c in enumerate(chips):
        keys = {str(c["source"])} if c.get("source") else set()
        if c.get("path"):
            keys.add(PurePath(str(c["path"]).replace("\\", "/")).name)
        for k in keys:
            names.setdefault(k, []).append(i)
    return names


def _how_named(chips: Sequence[Mapping[str, Any]]) -> str:
    for c in chips:
        if c.get("path"):
            return f"e.g. {PurePath(str(c['path'])).name!r}"
        if c.get("source"):
            return f"e.g. {str(c['source'])!r}"
    return "this store records none"


def chips_from_list(
    chip_list: ChipList,
    chips: Sequence[Mapping[str, Any]],
    *,
    flag: str = "--train-list",
    root: str | os.PathLike[str] = "the store",
) -> list[int]:
    """Sorted indices of the chips (a store's manifest records, ``store.chips``) ``chip_list`` names.

    Raises :class:`DataError` naming the list, the entry and how chips are named when an
    entry matches no chip, and when the list names no chip at all.
    """
    where = _where(chip_list, flag)
    if isinstance(chip_list, (str, os.PathLike)):
        entries, is_csv, unit = *read_list(chip_list), "line"
    else:
        entries, is_csv, unit = [(n, str(e).strip()) for n, e in enumerate(chip_list, 1)], False, "item"
    names = _chip_names(chips)
    n = len(chips)
    picked: set[int] = set()
    for k, (line, entry) in enumerate(entries):
        if _INDEX.match(entry):
            if int(entry) >= n:
                raise DataError(
                    f"{where}: entry {entry!r} ({unit} {line}) is no chip of {root}: its {n} chips are "
                    f"numbered 0..{n - 1}"
                )
            picked.add(int(entry))
            continue
        name = PurePath(entry.replace("\\", "/")).name
        hit = names.get(name) or names.get(PurePath(name).stem)
        if hit:
            picked.update(hit)
        elif not (is_csv and k == 0 and _WORD.match(entry)):  # else: a CSV header such as image,mask
            raise DataError(
                f"{where}: entry {entry!r} ({unit} {line}) matches no chip of {root}; entries are chip "
                f"indices 0..{n - 1} or the file or product a chip was cut from, by name "
                f"({_how_named(chips)})"
            )
    if not picked:
        raise DataError(f"{where} ({flag}) names no chip; list chip indices or source files, one per line")
    return sorted(picked)


def _where(chip_list: ChipList, flag: str) -> str:
    """How messages name a list: its file, or the Python keyword it came in."""
    if isinstance(chip_list, (str, os.PathLike)):
        return str(chip_list)
    return f"the {flag.lstrip('-').replace('-', '_')} entries"


def split_listed(
    chips: Sequence[Mapping[str, Any]],
    val_fraction: float | None,
    test_fraction: float | None = 0.0,
    seed: int = 0,
    *,
    train: ChipList | None = None,
    val: ChipList | None = None,
    test: ChipList | None = None,
    strict: bool = True,
    root: str | os.PathLike[str] = "the store",
) -> tuple[list[int], list[int], list[int]]:
    """``(train, validation, test)`` indices of a store's ``chips`` from lists and fractions.

    The rule is the module docstring's. A fraction of ``None`` means that part comes from a
    separate store (no chip of this one; a list for it is refused). Without lists this is
    :func:`split_chips`. Raises :class:`DataError` for lists that share a chip, for no
    training chip, and (``strict``) for a test part with a fraction above zero left empty (an
    empty validation part is only a warning: the run trains without validation).
    """
    fractions = {"val": val_fraction, "test": test_fraction}
    given = {"train": train, "val": val, "test": test}
    if all(v is None for v in given.values()):
        return split_chips(len(chips), val_fraction or 0.0, test_fraction or 0.0, seed, strict=strict)
    listed: dict[str, list[int]] = {}
    for part, chip_list in given.items():
        if chip_list is None:
            continue
        if part != "train" and fractions[part] is None:
            raise DataError(
                f"{LIST_FLAGS[part]} names chips of {root}, but the {_NAMES[part]} chips come from the store "
                f"given by {_STORE_FLAGS[part]}; give one of the two"
            )
        listed[part] = chips_from_list(chip_list, chips, flag=LIST_FLAGS[part], root=root)
    owner: dict[int, str] = {}
    named = {p: f"{_where(given[p] or (), LIST_FLAGS[p])} ({LIST_FLAGS[p]})" for p in listed}
    for part, idx in listed.items():
        for i in idx:
            if i in owner:
                src = chips[i].get("source")
                raise DataError(
                    f"chip {i}{f' ({src})' if src else ''} of {root} is in both {named[owner[i]]} and "
                    f"{named[part]}; a chip belongs to one part"
                )
            owner[i] = part
    rest = [i for i in range(len(chips)) if i not in owner]
    parts = {p: list(listed.get(p, [])) for p in PARTS}
    open_parts = {p: float(fractions[p] or 0.0) for p in ("val", "test") if p not in listed}
    if "train" not in listed:
        tr, va, te = split_chips(
            len(rest), open_parts.get("val", 0.0), open_parts.get("test", 0.0), seed, strict=False
        )
        for p, got in (("train", tr), ("val", va), ("test", te)):
            if p not in listed:
                parts[p] = [rest[i] for i in got]
    else:
        share = {p: f for p, f in open_parts.items() if f > 0}
        perm = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
        if len(share) == 2:
            n_test = round(len(rest) * share["test"] / (share["val"] + share["test"]))
            if len(rest) >= 2:
                n_test = min(max(n_test, 1), len(rest) - 1)
            parts["test"], parts["val"] = sorted(perm[:n_test]), sorted(perm[n_test:])
        elif share:
            parts[next(iter(share))] = sorted(rest)
        elif rest:
            log.info("%d chips of %s are in no list and not used", len(rest), root)
    if not parts["train"]:
        raise DataError(
            f"no chip of {root} is left to train on: the lists name {len(owner)} of its {len(chips)} chips; "
            "give --train-list FILE, or fewer chips in the other lists"
        )
    for p, f in open_parts.items():
        if f > 0 and not parts[p] and (p == "val" or not strict):
            log.warning(
                "no chip of %s is left for %s (every chip is in a list): none held out", root, _NAMES[p]
            )
        elif f > 0 and not parts[p]:
            raise DataError(
                f"no chip of {root} is left for the {_NAMES[p]} part (every chip is in a list); give "
                f"{LIST_FLAGS[p]} FILE, {_STORE_FLAGS[p]} STORE, or {_FRACTION_FLAGS[p]} 0"
            )
    log.info(
        "split of %s: %s",
        root,
        ", ".join(f"{len(parts[p])} {_NAMES[p]} ({'list' if p in listed else 'drawn'})" for p in PARTS),
    )
    return parts["train"], parts["val"], parts["test"]


class _Store(Protocol):
    @property
    def chips(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def root(self) -> Path: ...


def split_store(
    store: _Store,
    val_fraction: float | None,
    test_fraction: float | None = 0.0,
    seed: int = 0,
    *,
    train_list: ChipList | None = None,
    val_list: ChipList | None = None,
    test_list: ChipList | None = None,
    strict: bool = True,
) -> tuple[list[int], list[int], list[int]]:
    """:func:`split_listed` over a :class:`~hyperkd.data.store.ChipStore`'s chips."""
    return split_listed(
        store.chips,
        val_fraction,
        test_fraction,
        seed,
        train=train_list,
        val=val_list,
        test=test_list,
        strict=strict,
        root=store.root,
    )


def list_record(chip_list: ChipList | None) -> str | list[int | str] | None:
    """A chip list as a run records it: the file's path, or the entries given in Python."""
    if chip_list is None or isinstance(chip_list, (str, os.PathLike)):
        return None if chip_list is None else str(chip_list)
    return list(chip_list)


def check_heldout_store(train: Any, other: Any, role: str) -> None:
    """Refuse a store to validate or test on (``role``: "validation store"...) that does not hold the
    training store's bands, matched by wavelength and in the same order, or has another chip size."""
    from hyperkd.core.sensors import match_bands

    if Path(other.root).resolve() == Path(train.root).resolve():
        raise DataError(
            f"the {role} {other.root} is the training store: its chips would be trained on; give "
            "another store, or hold out a split of the training store"
        )
    order = match_bands(train.sensor, other.sensor, f"{role} {other.root} vs {train.root}")
    if order != list(range(train.sensor.num_bands)) or other.sensor.num_bands != train.sensor.num_bands:
        raise DataError(
            f"the {role} {other.root} holds {train.root}'s bands in another order or with others "
            "beside them; use a store made with the same band selection"
        )
    if other.chip_size != train.chip_size:
        raise DataError(
            f"the {role} {other.root} has {other.chip_size} px chips but {train.root} has "
            f"{train.chip_size} px; use a store made with the same --size"
        )


__all__ = [
    "ChipList",
    "check_heldout_store",
    "chips_from_list",
    "list_record",
    "read_list",
    "split_chips",
    "split_listed",
    "split_store",
]
