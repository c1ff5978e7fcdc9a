"""Streaming a chip store through WebDataset shards: export, split by rank and worker, DDP.

Needs the ``stream`` extra (webdataset); skipped with that reason where it is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

pytest.importorskip("webdataset", reason="needs the stream extra: pip install 'hyperkd[stream]'")

from hyperkd.cli import main
from hyperkd.core.errors import DataError
from hyperkd.data.streaming import StreamingChipDataModule, StreamingChipDataset, export_webdataset

from .helpers.toy import toy_store

N = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("toy") / "store", chips=N, size=16)


@pytest.fixture(scope="module")
def export(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds") / "export"
    export_webdataset(store, out, shards=4, seed=1)
    return out


def test_export_round_trips_every_chip_and_keeps_the_band_table(store, export):
    ds = StreamingChipDataset(export, shuffle=False)
    got = {int(x["index"]): x for x in ds}
    assert sorted(got) == list(range(N)) and len(ds) == N
    for i, x in got.items():
        ref = store[i]
        assert torch.equal(x["image"], torch.from_numpy(ref["image"]))
        assert torch.equal(x["valid"], torch.from_numpy(ref["valid"]))
        assert torch.equal(x["lc"], torch.from_numpy(ref["lc"].astype(np.int64)))
    assert ds.sensor.band_names == store.sensor.band_names and ds.sensor.means == store.sensor.means
    index = json.loads((export / "hyperkd-stream.json").read_text())
    assert [e["count"] for e in index["shards"]] == [4, 4, 4, 4]


def test_ranks_and_workers_read_disjoint_shards_and_every_chip_once_per_epoch(export):
    ranks = [StreamingChipDataset(export, rank=r, world_size=2, seed=3) for r in range(2)]
    orders = []
    for _ in range(3):  # three epochs
        seen = [[int(x["index"]) for x in ds] for ds in ranks]
        assert len(seen[0]) == len(seen[1]) == N // 2 == len(ranks[0])
        assert sorted(seen[0] + seen[1]) == list(range(N))
        orders.append(seen[0])
    assert orders[0] != orders[1] or orders[1] != orders[2]  # reshuffled per epoch
    loader = torch.utils.data.DataLoader(StreamingChipDataset(export, seed=3), batch_size=3, num_workers=2)
    idx = torch.cat([b["index"] for b in loader]).tolist()
    assert sorted(idx) == list(range(N))


def test_uneven_shards_are_equalised_with_a_warning(store, tmp_path, caplog):
    export_webdataset(store, tmp_path / "odd", shards=3)  # 6 + 5 + 5 chips
    ranks = [StreamingChipDataset(tmp_path / "odd", rank=r, world_size=2) for r in range(2)]
    with caplog.at_level(logging.WARNING):
        counts = [len(list(ds)) for ds in ranks]
    assert counts[0] == counts[1] and any("do not split evenly" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="3 shard\\(s\\) for 4 ranks"):
        list(StreamingChipDataset(tmp_path / "odd", rank=0, world_size=4))


def test_repeats_give_several_random_crops_per_loaded_chip(export):
    ds = StreamingChipDataset(export, repeats=3, crop=8, augment=True, seed=0)
    items = list(ds)
    assert len(items) == 3 * N and all(x["image"].shape[-2:] == (8, 8) for x in items)
    first = [x for x in items if x["index"] == items[0]["index"]]
    assert [x["repeat"] for x in first] == [0, 1, 2]
    assert not (
        torch.equal(first[0]["image"], first[1]["image"])
        and torch.equal(first[1]["image"], first[2]["image"])
    )
    with pytest.raises(DataError, match="crop must be between 1 and the chip size 16"):
        StreamingChipDataset(export, crop=32)


def test_cli_export_and_its_errors(store, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "export", str(store.root), "--out", str(out), "--shards", "2"]) == 0
    assert "16 chips in 2 WebDataset shard(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "chips-00000.tar",
        "chips-00001.tar",
        "hyperkd-stream.json",
    ]
    assert main(["data", "export", str(store.root), "--out", str(out)]) == 1
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert main(["data", "export", str(store.root), "--out", str(tmp_path / "x"), "--format", "litdata"]) == 1
    assert "use --format webdataset" in capsys.readouterr().err
    with pytest.raises(DataError, match="not a hyperkd WebDataset export"):
        StreamingChipDataset(store.root)


class Recorder(L.Callback):
    """Writes the chip indices each rank trained on, per epoch."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    def on_train_end(self, trainer, pl_module):
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def test_two_process_ddp_reads_disjoint_shards_and_every_chip_once_per_epoch(export, tmp_path):
    from hyperkd.training.pretrain import MAEModule

    student = {"name": "enmap-mae-tiny", "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1,
               "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
               "spectral_dim": 8}  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",  # gloo on CPU; forked, so no re-import
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Recorder(tmp_path)],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(
        MAEModule(student, optim={"lr": 1e-3}), datamodule=StreamingChipDataModule(export, batch_size=4)
    )
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == N // 2 and sorted(a + b) == list(range(N))
