"""Training on several chip stores in one run (``--data A --data B``), band tables alike or not.

Stores of different sensors hold different band tables, so a batch never mixes stores: every
batch is ``batch_size`` chips of ONE store, tagged ``batch["store"]`` (the store's position in
the list), and the student is bound to that store's band table, chip size and per-band
statistics before the step (:class:`StoreBinder`: a sensor-agnostic ``any-mae`` student is
re-bound with ``bind(sensor, img_size)``; a per-sensor student, which reads one band table,
gets the store's mean/std). So each store's chips are standardised with that store's own
statistics.

The order of the batches (:func:`store_schedule`) is a pure function of the seed and the epoch:

* ``mix: proportional`` (default): every training chip of every store once per epoch, each
  store's chips shuffled and cut into batches, and all batches shuffled together, so each
  store contributes in proportion to its size;
* ``mix: round-robin``: the stores take turns, one batch each, every store giving as many
  batches per epoch as the largest (a smaller store's chips are reshuffled and repeated), so
  each store contributes equally whatever its size.

Because the schedule is recomputed from (seed, epoch), a resumed run continues it exactly: when
an epoch's first batch is drawn, the sampler asks how many batches of that epoch were already
trained (Lightning's restored batch progress; 0 in a fresh epoch) and starts after them. (With
``data.num_workers`` > 0 the loader draws its first batches before the checkpoint is restored,
so the rest of an interrupted epoch comes in another order; later epochs are as before.)
``band_dropout`` (an ``any-mae`` student only) drops that fraction of a
training batch's bands at random (seeded by the seed and the step) and binds the student to the
bands kept, so one run also sees random band subsets of each sensor; validation batches keep
every band.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hyperkd.core.errors import RecipeError
from hyperkd.core.sensors import Sensor
from hyperkd.data.loader import ChipDataset
from hyperkd.data.splits import split_store
from hyperkd.data.store import ChipStore

MIXES = ("proportional", "round-robin")
"""How batches of several stores are interleaved (recipe key ``data.mix``)."""
MAX_STORES = 1024
"""Most stores one run mixes (chip keys of a teacher-feature cache are ``index * MAX_STORES + store``)."""


def same_band_table(a: Sensor, b: Sensor) -> bool:
    """Whether two band tables are the same bands in the same order (centres and widths)."""
    return a.num_bands == b.num_bands and all(
        x.center_nm == y.center_nm and x.range == y.range for x, y in zip(a.bands, b.bands, strict=True)
    )


def describe(store: Any) -> str:
    """``PATH (sensor, N bands, S px, G m)``: a store as error messages name it."""
    s = store.sensor
    return f"{store.root} ({s.name}, {s.num_bands} bands, {store.chip_size} px, {s.gsd_m:g} m)"


# -- the batch schedule --------------------------------------------------------------------------
def _cut(perm: list[int], bs: int, drop_last: bool) -> list[list[int]]:
    batches = [perm[i : i + bs] for i in range(0, len(perm), bs)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < bs:
        batches.pop()
    return batches


def store_schedule(
    sizes: Sequence[int], batch_size: int, seed: int, epoch: int, mix: str = "proportional"
) -> list[tuple[int, list[int]]]:
    """One epoch's training batches over stores of ``sizes`` training chips: ``(store, positions)``
    per batch, positions into that store's training chips. Deterministic in ``(seed, epoch)``.

    A store with fewer chips than ``batch_size`` gives batches of all its chips; otherwise a last
    incomplete batch is dropped (as the one-store loader does). ``mix``: see the module docstring.
    """
    if mix not in MIXES:
        raise RecipeError(f"recipe key data.mix is {mix!r}; it must be one of {', '.join(MIXES)}")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    sizes = [int(n) for n in sizes]
    bss = [max(1, min(batch_size, n)) for n in sizes]

    def shuffled(n: int) -> list[int]:
        return [int(i) for i in torch.randperm(n, generator=g)]

    per_store = [_cut(shuffled(n), bs, True) if n else [] for n, bs in zip(sizes, bss, strict=True)]
    if mix == "proportional":
        flat = [(s, b) for s, batches in enumerate(per_store) for b in batches]
        return [flat[i] for i in shuffled(len(flat))]
    most = max((len(b) for b in per_store), default=0)
    for s, batches in enumerate(per_store):
        while batches and len(batches) < most:  # a smaller store: reshuffled and repeated
            batches.extend(_cut(shuffled(sizes[s]), bss[s], True))
        del batches[most:]
    return [(s, per_store[s][k]) for k in range(most) for s in range(len(sizes)) if per_store[s]]


class StoreBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields one epoch of :func:`store_schedule` as lists of ``(store, position)`` pairs.

    Lightning calls ``set_epoch`` on a batch sampler's ``sampler``; this sampler is its own
    ``sampler`` so the epoch reaches it. With ``world_size`` > 1 each rank takes every
    ``world_size``-th batch (all ranks the same number). ``done``: called when an iteration draws
    its first batch, how many batches of this epoch were already trained (a resumed run starts
    after them; ``None``: none).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mix: str = "proportional",
        rank: int = 0,
        world_size: int = 1,
        done: Callable[[], int] | None = None,
    ) -> None:
        self.sizes, self.batch_size, self.seed, self.mix = list(sizes), int(batch_size), int(seed), mix
        self.rank, self.world_size = int(rank), max(1, int(world_size))
        self.epoch = 0
        self.done = done
        self.sampler = self
        store_schedule(self.sizes, self.batch_size, self.seed, 0, mix)  # a bad mix fails here

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration yields (Lightning calls it at each epoch start)."""
        self.epoch = int(epoch)

    def schedule(self) -> list[tuple[int, list[int]]]:
        """This rank's batches of the current epoch."""
        full = store_schedule(self.sizes, self.batch_size, self.seed, self.epoch, self.mix)
        n = len(full) // self.world_size if self.world_size > 1 else len(full)
        return full[self.rank :: self.world_size][:n]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self.schedule()  # (a generator: runs at the first batch, after set_epoch)
        start = min(int(self.done()), len(batches)) if self.done is not None else 0
        for s, positions in batches[start:]:
            yield [(s, p) for p in positions]

    def __len__(self) -> int:
        return len(self.schedule())


class StoreChips(Dataset):
    """Chips of several stores: item ``(store, position)`` is :class:`ChipDataset` ``position`` of
    store ``store`` with ``"store": store`` added."""

    def __init__(self, datasets: Sequence[ChipDataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        s, i = key
        return {**self.datasets[s][i], "store": s}


class ResumableLoader(DataLoader):
    """A training DataLoader over a :class:`StoreBatchSampler`, which resumes mid-epoch by itself (it
    reads the restored batch progress when an epoch starts), so it tells Lightning it is resumable:
    its ``state_dict`` holds the epoch for the record, and ``load_state_dict`` has nothing to restore."""

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.batch_sampler, "epoch", 0))}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the sampler's schedule is a function of (seed, epoch)."""


class MultiStoreDataModule(L.LightningDataModule):
    """Train/validation loaders over several chip stores, one store per batch.

    Each store is split on its own (``val_fraction``, ``seed``); training batches follow
    :class:`StoreBatchSampler` (``mix``), validation goes store by store, in the order given, so
    the first validation batch is the first store's. ``store``, ``sensor``, ``chip_size`` and
    ``root`` are the first store's (what the student is built for, and bound back to when
    training ends); :attr:`stores` holds them all and :attr:`splits` their ``(train, val)``
    chip indices.
    """

    def __init__(
        self,
        stores: Sequence[ChipStore | str | Path],
        batch_size: int = 8,
        val_fraction: float = 0.125,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
        mix: str = "proportional",
    ) -> None:
        super().__init__()
        if not 2 <= len(stores) <= MAX_STORES:
            raise RecipeError(f"data.store: a list of 2 to {MAX_STORES} chip stores, got {len(stores)}")
        self.stores = [s if isinstance(s, ChipStore) else ChipStore(s) for s in stores]
        roots = [s.root.resolve() for s in self.stores]
        dup = next((r for i, r in enumerate(roots) if r in roots[:i]), None)
        if dup is not None:
            raise RecipeError(f"data.store names {dup} twice; give each chip store once")
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.val_fraction, self.augment, self.mix = float(val_fraction), bool(augment), mix
        store_schedule([1], 1, 0, 0, mix)  # a bad mix fails before any run folder
        self.splits = [
            tuple(split_store(s, self.val_fraction, 0.0, self.seed, strict=False)[:2]) for s in self.stores
        ]
        if not self.splits[0][1] and any(val for _, val in self.splits):
            raise RecipeError(
                f"data.store: the first store {self.stores[0].root} ({len(self.stores[0])} chip) has no "
                "validation chip but the others do (the run's figures and export use the first store); "
                "list a larger store first"
            )

    @property
    def store(self) -> ChipStore:
        """The first store (the student is built for it)."""
        return self.stores[0]

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def sensor(self) -> Sensor:
        return self.store.sensor

    @property
    def chip_size(self) -> int:
        return self.store.chip_size

    def setup(self, stage: str | None = None) -> None:
        """Nothing to do: the stores are opened and split at construction."""

    def _done(self) -> int:
        """Batches of the current epoch already trained (a resumed run's restored progress)."""
        trainer = self.trainer
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed) if trainer else 0

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = StoreBatchSampler(
            [len(tr) for tr, _ in self.splits],
            self.batch_size,
            self.seed,
            self.mix,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            done=self._done,
        )
        chips = StoreChips(
            [
                ChipDataset(s, tr, augment=self.augment)
                for s, (tr, _) in zip(self.stores, self.splits, strict=True)
            ]
        )
        return ResumableLoader(
            chips,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        batches = [
            [(s, p) for p in range(i, min(i + self.batch_size, len(va)))]
            for s, (_, va) in enumerate(self.splits)
            for i in range(0, len(va), self.batch_size)
        ]
        chips = StoreChips([ChipDataset(s, va) for s, (_, va) in zip(self.stores, self.splits, strict=True)])
        return DataLoader(
            chips,
            batch_sampler=batches,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


# -- binding the student to the batch's store ----------------------------------------------------
class StoreBinder:
    """Binds a student to the band table, chip size and statistics of each batch's store.

    ``stores``: the run's chip stores in ``batch["store"]`` order (a batch without that key is
    the first store's), or a callable giving them, read at the first batch (a synthetic store
    only exists, with its statistics, once the data module prepared it). A sensor-agnostic
    student (``sensor_agnostic``, e.g. ``any-mae``) is re-bound with ``bind(store.sensor,
    img_size=store.chip_size)``; another student (one band table, checked before training)
    gets the store's mean/std copied into its ``band_mean`` / ``band_std``. ``band_dropout`` > 0
    (a sensor-agnostic student only): a training batch keeps a random ``1 - band_dropout`` of
    its bands (at least one, in band order; seeded by ``seed`` and the step) and the student is
    bound to them. Binding is skipped when the batch's store and bands are those bound already.
    """

    def __init__(
        self,
        stores: Sequence[ChipStore] | Callable[[], Sequence[ChipStore]],
        band_dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._stores = stores
        self.band_dropout, self.seed = float(band_dropout), int(seed)
        self._bound: tuple[int, tuple[int, ...] | None] | None = None

    @property
    def stores(self) -> list[ChipStore]:
        """The chip stores, in ``batch["store"]`` order."""
        if callable(self._stores):
            self._stores = list(self._stores())
        return list(self._stores)

    def kept_bands(self, num_bands: int, step: int) -> list[int]:
        """The bands a training batch at ``step`` keeps (sorted; deterministic in seed and step)."""
        drop = min(round(self.band_dropout * num_bands), num_bands - 1)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step) + 7)
        return sorted(int(i) for i in torch.randperm(num_bands, generator=g)[: num_bands - drop])

    def __call__(self, student: Any, batch: dict[str, Any], step: int | None = None) -> dict[str, Any]:
        """Bind ``student`` for ``batch``; returns the batch (its image cut to the kept bands when a
        training ``step`` is given and band dropout is on)."""
        stores = torch.as_tensor(batch.get("store", 0)).flatten()
        s = int(stores[0])
        if bool((stores != s).any()):
            raise RecipeError("a batch holds chips of several stores; batches must come from one store")
        keep: tuple[int, ...] | None = None
        if step is not None and self.band_dropout > 0:
            keep = tuple(self.kept_bands(self.stores[s].sensor.num_bands, step))
            batch = {**batch, "image": batch["image"][:, list(keep)]}
        self.bind(student, s, keep)
        return batch

    def bind(self, student: Any, store: int, keep: tuple[int, ...] | None = None) -> None:
        """Bind ``student`` to store ``store`` (its bands ``keep`` only, if given)."""
        if self._bound == (store, keep):
            return
        chips = self.stores[store]
        sensor = chips.sensor
        if getattr(student, "sensor_agnostic", False):
            if keep is not None:
                sensor = sensor.select([sensor.band_names[i] for i in keep])
            student.bind(sensor, img_size=chips.chip_size)
        elif sensor.means is not None and sensor.stds is not None:
            c = sensor.num_bands
            student.band_mean.copy_(torch.tensor(sensor.means).view(1, c, 1, 1))
            student.band_std.copy_(torch.tensor(sensor.stds).view(1, c, 1, 1))
        self._bound = (store, keep)


def check_student_for_stores(
    student: Any, stores: Sequence[Any], *, band_dropout: float = 0.0, distill: bool = False
) -> None:
    """Refuse, before training, a student or run that cannot read every store: a per-sensor
    student over stores of several band tables or chip sizes, band dropout without a
    sensor-agnostic student, and distillation over several band tables, chip sizes or
    GSDs (its aligner, ground matching and token grids are built for one). ``stores``: chip stores, or anything with their
    ``root``, ``sensor`` and ``chip_size`` (a data module)."""
    first = stores[0]
    odd = [
        s for s in stores[1:] if not same_band_table(first.sensor, s.sensor) or s.chip_size != first.chip_size
    ]
    agnostic = bool(getattr(student, "sensor_agnostic", False))
    listed = ", ".join(describe(s) for s in stores) if odd else ""
    if distill:  # the teacher's ground matching is built from one GSD (aligners.GroundMatch)
        odd = odd or [s for s in stores[1:] if s.sensor.gsd_m != first.sensor.gsd_m]
        listed = ", ".join(describe(s) for s in stores) if odd else ""
    if odd and distill:
        raise RecipeError(
            f"distill trains on one band table, chip size and GSD per run (the aligner and the teacher's "
            f"token grid are built for it), but the stores differ: {listed}; pretrain across them with `hyperkd "
            "pretrain --student any-mae-<size> --data A --data B`, or distil one store after another with "
            "--student RUN"
        )
    if odd and not agnostic:
        raise RecipeError(
            f"student {getattr(student.sensor, 'name', '?')} reads one band table and chip size, but the "
            f"stores differ: {listed}; use --student any-mae-<size> (tiny, small, base, large) to train "
            "across band tables, or stores of one band table"
        )
    if band_dropout > 0 and (not agnostic or distill):
        raise RecipeError(
            f"data.band_dropout {band_dropout:g} needs a sensor-agnostic student in `hyperkd pretrain` "
            "(--student any-mae-<size>): a per-sensor student reads every band of its table, and "
            "distillation's aligner reads the full table; set data.band_dropout to 0"
        )


__all__ = [
    "MAX_STORES",
    "MIXES",
    "MultiStoreDataModule",
    "ResumableLoader",
    "StoreBatchSampler",
    "StoreBinder",
    "StoreChips",
    "check_student_for_stores",
    "describe",
    "same_band_table",
    "store_schedule",
]
