"""Torch datasets and the Lightning data modules over a chip store (an existing one, or synthetic
scenes generated in ``prepare_data``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hyperkd.core.sensors import Sensor
from hyperkd.data.splits import ChipList, check_heldout_store, split_store
from hyperkd.data.store import ChipStore

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


class ChipDataset(Dataset):
    """Chips of a store as tensors: ``image`` (C,S,S) float32 reflectance, ``valid`` (S,S) bool,
    label layers as int64 (classes) or float32 (continuous), and ``index``.

    ``augment=True`` shows each chip in a random one of its 8 flips and 90-degree rotations
    (:func:`dihedral`, applied alike to the image, ``valid`` and labels) and records which in
    ``augment`` (the code), so anything cached per chip (a teacher's features) can key on it.
    """

    def __init__(self, store: ChipStore, indices: list[int] | None = None, augment: bool = False) -> None:
        self.store = store
        self.indices = list(range(len(store))) if indices is None else list(indices)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.store[self.indices[i]]
        out: dict[str, Any] = {
            "image": torch.from_numpy(item["image"]),
            "valid": torch.from_numpy(item["valid"]),
            "index": item["index"],
        }
        for k, spec in self.store.labels.items():
            arr = item[k]
            out[k] = torch.from_numpy(arr.astype(np.int64 if spec.kind == "class" else np.float32))
        if self.augment:
            code = int(torch.randint(NUM_TRANSFORMS, ()).item())
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.ndim >= 2:
                    out[k] = dihedral(v, code).contiguous()
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
