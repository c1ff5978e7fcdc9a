"""Torch datasets and the Lightning data module over a chip store."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hyperkd.data.store import ChipStore


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


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split (at least one chip in each when n >= 2)."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(max(round(val_fraction * n), 1 if n >= 2 and val_fraction > 0 else 0), n - 1)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class ChipDataModule(L.LightningDataModule):
    """Train/validation loaders over one chip store."""

    def __init__(self, store: ChipStore, batch_size: int = 8, val_fraction: float = 0.125,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.store = store
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_idx, self.val_idx = split_indices(len(store), val_fraction, seed)

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
