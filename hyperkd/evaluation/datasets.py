"""Torch datasets of a chip store's chips with one bound task's targets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from hyperkd.data.store import ChipStore
from hyperkd.evaluation.labels import TaskLabels


def open_store(store: str | Path | ChipStore) -> ChipStore:
    """``store`` itself, or the chip store in that folder."""
    return store if isinstance(store, ChipStore) else ChipStore(store)


class TaskDataset(Dataset):
    """Chips of a store with one task's targets: ``image`` (C,S,S) float32, ``target`` (S,S), ``index``."""

    def __init__(self, store: ChipStore, indices: Sequence[int], labels: TaskLabels) -> None:
        self.store = store
        self.indices = list(indices)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = self.indices[i]
        item = self.store[idx]
        return {
            "image": torch.from_numpy(item["image"]),
            "target": torch.from_numpy(self.labels.target(idx, item)),
            "index": idx,
        }


__all__ = ["TaskDataset", "open_store"]
