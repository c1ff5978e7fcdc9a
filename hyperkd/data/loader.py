"""Torch datasets and the Lightning data modules over a chip store (an existing one, or synthetic
scenes generated in ``prepare_data``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hyperkd.core.sensors import Sensor
from hyperkd.data.splits import ChipList, check_heldout_store, split_store
from hyperkd.data.store import ChipStore, LabelSpec

log = logging.getLogger(__name__)


NUM_TRANSFORMS = 8
"""Size of the dihedral group of the square: 4 rotations by 90 degrees, each with or without a flip."""


def dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """Rotate the last two (spatial) axes of ``x`` by ``code % 4`` quarter turns, then flip them
    left-right if ``code >= 4``; ``code`` 0 is the identity (0 <= code < :data:`NUM_TRANSFORMS`).

    For nadir imagery these 8 views are equally plausible scenes: free extra training chips."""
    if not 0 <= code < NUM_TRANSFORMS:
        raise ValueError(f"dihedral transform code must be in 0..{NUM_TRANSFORMS - 1}, got {code}")
    x = torch.rot90(x, code % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if code >= 4 else x


def apply_spatial(item: dict[str, Any], fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """``fn`` applied alike to every spatial tensor of a chip item (image, ``valid``, labels)."""
    return {
        k: fn(v).contiguous() if isinstance(v, torch.Tensor) and v.ndim >= 2 else v for k, v in item.items()
    }


def label_tensor(arr: np.ndarray, spec: LabelSpec) -> torch.Tensor:
    """A label layer as training wants it: int64 class ids or float32 values."""
    return torch.from_numpy(np.asarray(arr).astype(np.int64 if spec.kind == "class" else np.float32))


class ChipDataset(Dataset):
    """Chips of a store as tensors: ``image`` (C,S,S) float32 reflectance, ``valid`` (S,S) bool,
    label layers as int64 (classes) or float32 (continuous), and ``index``.

    ``augment=True`` shows each chip in a random one of its 8 flips and 90-degree rotations
    (:func:`dihedral`, applied alike to the image, ``valid`` and labels) and records which in
    ``augment`` (the code), so anything cached per chip (a teacher's features) can key on it.
    """

    def __init__(self, store: ChipStore, indices: list[int] | None = None, augment: bool = False) -> None:
        self.store = store
        # an int64 array, not a list: a worker receives 8 bytes per chip, never per-chip objects
        self.indices = np.arange(len(store)) if indices is None else np.asarray(list(indices), dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.store.read(int(self.indices[i]), np.float16)  # converted by torch: several times faster
        out: dict[str, Any] = {
            "image": torch.from_numpy(item["image"]).float(),
            "valid": torch.from_numpy(item["valid"]),
            "index": item["index"],
        }
        for k, spec in self.store.labels.items():
            out[k] = label_tensor(item[k], spec)
        if self.augment:
            code = int(torch.randint(NUM_TRANSFORMS, ()).item())
            out = apply_spatial(out, lambda v: dihedral(v, code))
            out["augment"] = code
        return out


class ChipDataModule(L.LightningDataModule):
    """Train/validation loaders over one chip store.

    ``store``: an open :class:`ChipStore` or its folder. ``sensor``, ``chip_size`` and
    ``root`` describe the chips before any loader is made (what a student is built for).
    ``augment``: random flips and 90-degree rotations of the training chips (recipe key
    ``data.augment``; validation chips are never augmented). ``val_store``: validate on every
    chip of that store instead of a split (bands checked by wavelength at :meth:`setup`);
    ``train_list`` / ``val_list`` / ``test_list``: chip lists (:mod:`hyperkd.data.splits`; the
    test chips are kept out of training and validation).
    """

    def __init__(
        self,
        store: ChipStore | str | Path,
        batch_size: int = 8,
        val_fraction: float = 0.125,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
        *,
        val_store: ChipStore | str | Path | None = None,
        train_list: ChipList | None = None,
        val_list: ChipList | None = None,
        test_list: ChipList | None = None,
    ) -> None:
        super().__init__()
        self.augment = augment
        self._store = store if isinstance(store, ChipStore) else None
        self.root = store.root if isinstance(store, ChipStore) else Path(store)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self._split: tuple[list[int], list[int]] | None = None
        self.val_store = ChipStore(val_store) if isinstance(val_store, (str, Path)) else val_store
        self.lists = {"train_list": train_list, "val_list": val_list, "test_list": test_list}

    @property
    def store(self) -> ChipStore:
        """The chip store (opened on first use)."""
        if self._store is None:
            self._store = ChipStore(self.root)
        return self._store

    @property
    def sensor(self) -> Sensor:
        """The chips' band table, with the store's per-band statistics."""
        return self.store.sensor

    @property
    def chip_size(self) -> int:
        """Chip width and height in pixels."""
        return self.store.chip_size

    def _indices(self) -> tuple[list[int], list[int]]:
        if self._split is None:
            # at least one chip in each part when the store has two or more
            vf = None if self.val_store is not None else self.val_fraction
            train, val, _ = split_store(self.store, vf, 0.0, self.seed, strict=False, **self.lists)
            if self.val_store is not None:
                check_heldout_store(self.store, self.val_store, "validation store")
                val = list(range(len(self.val_store)))
            self._split = (train, val)
        return self._split

    @property
    def train_idx(self) -> list[int]:
        """Store indices of the training chips."""
        return self._indices()[0]

    @property
    def val_idx(self) -> list[int]:
        """Store indices of the validation chips."""
        return self._indices()[1]

    def setup(self, stage: str | None = None) -> None:
        """Open the store and split it (deterministic in ``seed``)."""
        self._indices()

    def _loader(self, idx: list[int], shuffle: bool, store: ChipStore | None = None) -> DataLoader:
        return DataLoader(
            ChipDataset(store or self.store, idx, augment=self.augment and shuffle),
            batch_size=min(self.batch_size, max(len(idx), 1)),
            shuffle=shuffle,
            drop_last=shuffle and len(idx) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_idx, shuffle=False, store=self.val_store)


class ChipBatchDataset(Dataset):
    """Whole batches of a store, read with :meth:`ChipStore.read_batch`: ``ds[[i, j, ...]]`` is
    a dict of stacked tensors (``image`` float16 as stored, ``valid``, labels, ``index``).

    For plain (unaugmented) reading: one fancy-index per shard and one copy per layer, and
    half the bytes of float32; convert with ``batch["image"].to(device).float()`` on the
    device (converting a whole float16 batch on the CPU was slower here than
    :class:`ChipDataset`'s per-chip conversion). Use it through :func:`batch_loader`.
    """

    def __init__(self, store: ChipStore, indices: list[int] | None = None) -> None:
        self.store = store
        self.indices = np.arange(len(store)) if indices is None else np.asarray(list(indices), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int]) -> dict[str, Any]:  # type: ignore[override]
        batch = self.store.read_batch(self.indices[np.asarray(positions)], dtype=np.float16)
        out: dict[str, Any] = {k: torch.from_numpy(v) for k, v in batch.items()}
        for k, spec in self.store.labels.items():
            out[k] = label_tensor(batch[k], spec)
        return out


def batch_loader(
    store: ChipStore,
    batch_size: int,
    *,
    indices: list[int] | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader yielding float16 batches read whole by :class:`ChipBatchDataset` (a batch
    sampler as its sampler, ``batch_size=None``)."""
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    ds = ChipBatchDataset(store, indices)
    base = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
    return DataLoader(
        ds,
        sampler=BatchSampler(base, batch_size, drop_last),
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
