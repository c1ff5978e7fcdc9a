"""Per-chip features kept on the CPU across epochs (one cache for every fixed encoder).

When a network's output for a chip cannot change during a run — a frozen teacher behind a
fixed aligner (distillation), a frozen encoder under a fine-tuning head — and the loaders
do no augmentation, encoding the chip again every epoch is wasted work. :class:`FeatureCache`
keeps those outputs, keyed by chip-store index, on the CPU up to a memory budget, and
:meth:`FeatureCache.fetch` encodes only the chips of a batch that are not cached yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class FeatureCache:
    """Per-chip rows of one or more feature tensors, keyed by chip-store index, on the CPU.

    Stops adding entries once ``max_mb`` would be exceeded (``full`` turns true); counts
    ``hits`` and ``misses`` so a run can report what caching saved. Valid only while the
    cached network is fixed and the loaders do no augmentation.
    """

    def __init__(self, max_mb: float = 2048.0) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.store: dict[int, list[Tensor]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False

    def __len__(self) -> int:
        return len(self.store)

    def get(self, keys: Sequence[int]) -> list[list[Tensor] | None]:
        """Each key's cached rows (one per feature tensor), or ``None`` where it is not cached."""
        return [self.store.get(int(k)) for k in keys]

    def put(self, keys: Sequence[int], feats: Sequence[Tensor]) -> None:
        """Store row ``i`` of each tensor in ``feats`` under ``keys[i]`` (CPU copies, detached)."""
        for i, k in enumerate(keys):
            if int(k) in self.store:
                continue
            with torch.inference_mode(False):  # validation runs in inference mode; store normal tensors
                rows = [f[i].detach().to("cpu", copy=True) for f in feats]
            size = sum(r.numel() * r.element_size() for r in rows)
            if self.bytes + size > self.max_bytes:
                self.full = True
                return
            self.store[int(k)] = rows
            self.bytes += size

    def fetch(
        self,
        keys: Sequence[int],
        compute: Callable[[list[int]], Sequence[Tensor]],
        device: torch.device | str,
    ) -> list[Tensor]:
        """The batch's features, one ``(len(keys), ...)`` tensor per feature, on ``device``.

        ``compute(positions)`` encodes the chips at those positions of ``keys`` (the ones
        not cached) and returns one tensor per feature with a row per position; its rows
        are cached (until the budget is spent) and merged with the cached ones in order.
        """
        cached = self.get(keys)
        missing = [i for i, c in enumerate(cached) if c is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = list(compute(missing))
            self.put([int(keys[i]) for i in missing], fresh)
            if len(missing) == len(keys):
                return fresh
            for j, i in enumerate(missing):
                cached[i] = [f[j] for f in fresh]
        rows: list[list[Tensor]] = cached  # type: ignore[assignment]  # every entry filled above
        return [
            torch.stack([row[j].to(device, non_blocking=True) for row in rows]) for j in range(len(rows[0]))
        ]


__all__ = ["FeatureCache"]
