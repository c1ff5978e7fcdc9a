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
from hyperkd.data.splits import split_chips
from hyperkd.data.store import ChipStore

log = logging.getLogger(__name__)


class ChipDataset(Dataset):
    """Chips of a store as tensors: ``image`` (C,S,S) float32 reflectance, ``valid`` (S,S) bool,
    label layers as int64 (classes) or float32 (continuous), and ``index``."""

    def __init__(self, store: ChipStore, indices: list[int] | None = None) -> None:
        self.store = store
        self.indices = list(range(len(store))) if indices is None else list(indices)

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
        return out


class ChipDataModule(L.LightningDataModule):
    """Train/validation loaders over one chip store.

    ``store``: an open :class:`ChipStore` or its folder. ``sensor``, ``chip_size`` and
    ``root`` describe the chips before any loader is made (what a student is built for).
    """

    def __init__(
        self,
        store: ChipStore | str | Path,
        batch_size: int = 8,
        val_fraction: float = 0.125,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._store = store if isinstance(store, ChipStore) else None
        self.root = store.root if isinstance(store, ChipStore) else Path(store)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self._split: tuple[list[int], list[int]] | None = None

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
            train, val, _ = split_chips(len(self.store), self.val_fraction, seed=self.seed, strict=False)
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

    def _loader(self, idx: list[int], shuffle: bool) -> DataLoader:
        return DataLoader(
            ChipDataset(self.store, idx),
            batch_size=min(self.batch_size, max(len(idx), 1)),
            shuffle=shuffle,
            drop_last=shuffle and len(idx) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_idx, shuffle=False)
