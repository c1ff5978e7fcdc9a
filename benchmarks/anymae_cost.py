"""What the wavelength-conditioned embedding costs: ``any-mae`` against the per-sensor MAE, side by side.

One run prints, for the same student size and band table (EnMAP's default 202 bands):

* parameters of the embedding (``patch_embed``), of the decoder's output layer
  (``decoder_pred``: per-band outputs) and in all;
* measured on this machine's CPU at a small size (``--size tiny``, 64 px chips, batch 2,
  75 % of the patches masked): the median time of one forward + backward pass of the MAE loss
  (the variants interleaved, after warm-up) and the memory that step holds at its peak, counted
  exactly: weights + gradients + the tensors autograd saves for the backward pass (transient
  buffers inside one operation are not counted);
* counted at the issue's size, one 224 px chip at ``tiny`` and ``base``: forward + backward
  FLOPs (``torch.utils.flop_counter``: matmuls, convolutions, einsums; run on the CPU, since the
  masking's index arithmetic cannot run on the meta device) and the same exact memory count.

Variants: ``plain`` (``Conv2d(C, D, p, p)``), ``factorized`` (the per-sensor default: a learned
1x1 ``C -> k`` then ``Conv2d(k, D, p, p)``) and ``any`` (``any-mae``: the 1x1 weights and the
decoder's per-band read-out generated from wavelength and width).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/anymae_cost.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

VARIANTS = ("plain", "factorized", "any")


def build(variant: str, size: str, img_size: int, bands: int = 202) -> Any:
    """The student of ``variant`` for EnMAP's default band table (``bands`` checks it)."""
    import hyperkd

    if variant == "any":
        model = hyperkd.create_model(f"any-mae-{size}", sensor="enmap", img_size=img_size)
    else:
        model = hyperkd.create_model(f"mae-{size}", sensor="enmap", img_size=img_size, embedding=variant)
    assert model.in_chans == bands, model.in_chans
    return model


def mask_for(model: Any, batch: int, ratio: float = 0.75) -> torch.Tensor:
    n = model.num_patches
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    return (ids < round(ratio * n)).to(model.cls_token.device)


def step(model: Any, x: torch.Tensor, mask: torch.Tensor) -> None:
    """One forward + backward pass of the masked-reconstruction loss."""
    from hyperkd.components.metrics import masked_mse

    out = model(x, mask)
    masked_mse(out.pred, out.target, out.weight).backward()


def params(model: Any) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "embedding": count(model.patch_embed),
        "decoder_pred": count(model.decoder_pred),
        "all": count(model),
    }


def training_memory(model: Any, x: torch.Tensor, mask: torch.Tensor) -> float:
    """MiB that one training step holds at its peak, counted exactly: weights + their gradients +
    every tensor autograd saves for the backward pass (each storage once, weights not twice)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(model, x, mask)
    w = sum(p.numel() * p.element_size() for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return (2 * w + sum(saved.values())) / 2**20


def flops_and_memory(variant: str, size: str, img_size: int) -> tuple[float, float, Any]:
    """Forward + backward FLOPs of one chip (``torch.utils.flop_counter``, on the CPU: the
    masking's index arithmetic does not run on the meta device) and :func:`training_memory`."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build(variant, size, img_size)
    x = torch.rand(1, 202, img_size, img_size)
    mask = mask_for(model, 1)
    with FlopCounterMode(display=False) as counter:
        step(model, x, mask)
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops()), training_memory(model, x, mask), model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    import logging

    logging.disable(logging.INFO)
    torch.manual_seed(0)
    models = {v: build(v, args.size, args.img_size) for v in VARIANTS}
    x = torch.rand(args.batch, 202, args.img_size, args.img_size)
    mask = mask_for(models["plain"], args.batch)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats + 2):  # interleaved; the first two rounds warm up
        for v, model in models.items():
            t0 = time.perf_counter()
            step(model, x, mask)
            if r >= 2:
                times[v].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    mem = {v: training_memory(model, x, mask) for v, model in models.items()}
    p = models["plain"].patch_size
    print(
        f"## measured: {args.size}, 202 bands, {args.img_size} px, patch {p}, batch {args.batch}, "
        f"75% masked, CPU threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"median of {args.repeats} interleaved forward+backward passes"
    )
    print(
        "| variant | embedding params | decoder_pred params | all params | fwd+bwd ms | weights+grads+saved MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for v, model in models.items():
        pc = params(model)
        ms = 1000 * statistics.median(times[v])
        print(
            f"| {v} | {pc['embedding']:,} | {pc['decoder_pred']:,} | {pc['all']:,} | {ms:.1f} | {mem[v]:.0f} |"
        )
    t = {v: statistics.median(times[v]) for v in VARIANTS}
    print(
        f"any / plain: time x{t['any'] / t['plain']:.2f}, memory x{mem['any'] / mem['plain']:.2f}; "
        f"any / factorized: time x{t['any'] / t['factorized']:.2f}, memory x{mem['any'] / mem['factorized']:.2f}"
    )
    print()
    print("## counted: 202 bands, 224 px, one chip, 75% masked, forward+backward (torch.utils.flop_counter)")
    print(
        "| size | variant | patch | embedding params | all params | GFLOPs | vs plain | weights+grads+saved MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size in ("tiny", "base"):
        res = {v: flops_and_memory(v, size, 224) for v in VARIANTS}
        for v, (fl, mib, model) in res.items():
            pc = params(model)
            print(
                f"| {size} | {v} | {model.patch_size} | {pc['embedding']:,} | {pc['all']:,} | "
                f"{fl / 1e9:.2f} | x{fl / res['plain'][0]:.2f} | {mib:.0f} |"
            )
        res.clear()


if __name__ == "__main__":
    os.environ.setdefault("HYPERKD_DISABLE_PROGRESS", "1")
    main()
