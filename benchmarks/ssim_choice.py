"""Which structural term: speed of each SSIM variant and its agreement with per-band SSIM.

The ``ssim`` loss (``hyperkd.components.losses.SSIMLoss``) can score every band (``bands=all``,
the reference), every n-th band in wavelength order (``bands=subset``, ``band_stride``; by default
the start band rotates each training step) or ``K`` band-group means (``bands=groups``).
``subset 8, 8 steps`` is the mean of the rotating subset over 8 consecutive calls (each band
scored once): what the default term amounts to over 8 training steps.
This script prints, side by side in one run:

1. **agreement** with the reference on real reconstructions: a small student is trained
   (MSE, AdamW) on the chips of a store and, at several training stages plus at several noise
   levels around the truth, every chip is reconstructed under fixed masks; for each variant,
   the Pearson and Spearman correlation of its loss value with the reference's over all
   (chip, mask, stage) samples, the mean absolute difference, and the median cosine between
   its gradient and the reference's gradient with respect to the prediction;
2. **speed**: forward + backward of the loss term alone on a synthetic batch at training
   size (interleaved rounds, best kept), as a ratio to the reference.

    python benchmarks/ssim_choice.py --store /tmp/pd/S_train      # real EnMAP chips
    python benchmarks/ssim_choice.py --quick                      # synthetic toy chips, seconds
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from hyperkd import create, get_sensor
from hyperkd.components.metrics import masked_mse
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import MAEOutput, build_student

VARIANTS: dict[str, dict[str, Any]] = {
    "all (reference)": {"bands": "all"},
    "all, band_stride 8": {"bands": "all", "band_stride": 8},
    "subset 4": {"bands": "subset", "band_stride": 4, "rotate": False},
    "subset 8": {"bands": "subset", "band_stride": 8, "rotate": False},
    "subset 16": {"bands": "subset", "band_stride": 16, "rotate": False},
    "subset 8, 8 steps": {"bands": "subset", "band_stride": 8},
    "groups 16": {"bands": "groups", "groups": 16},
    "groups 32": {"bands": "groups", "groups": 32},
}
REF = "all (reference)"


class OverStarts:
    """The mean of a rotating-subset term over ``band_stride`` consecutive calls (every band once)."""

    def __init__(self, term: Any) -> None:
        self.term = term

    def __call__(self, out: Any, ctx: dict[str, Any]) -> torch.Tensor:
        return torch.stack([self.term(out, ctx) for _ in range(self.term.band_stride)]).mean()


def chips(args: argparse.Namespace) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Sensor, images ``(N, C, H, W)`` and valid masks ``(N, H, W)`` of the store (or toy chips)."""
    from hyperkd.data.store import ChipStore

    if not args.store:  # smooth random fields, for the smoke test
        gen = torch.Generator().manual_seed(args.seed)
        sensor = get_sensor("enmap")
        noise = torch.rand(6, sensor.num_bands, 20, 20, generator=gen)
        image = 0.05 + 0.4 * torch.nn.functional.avg_pool2d(noise, 5, stride=1)
        return sensor, image, torch.ones(6, 16, 16, dtype=torch.bool)
    store = ChipStore(args.store)
    rows = [store[i] for i in range(len(store))]
    image = torch.as_tensor(np.stack([r["image"] for r in rows])).float()
    valid = torch.as_tensor(np.stack([r["valid"] for r in rows])).bool()
    return store.sensor, image, valid


def samples(args: argparse.Namespace):
    """Yield ``(label, student, image, valid, pred (requires grad), mask)`` per chip and mask."""
    sensor, image, valid = chips(args)
    torch.manual_seed(args.seed)
    student = build_student(sensor, img_size=image.shape[-1], patch_size=args.patch)
    masker = create("masker", "random")
    masks = [
        masker(image, student.grid, 0.75, torch.Generator().manual_seed(100 + m)) for m in range(args.masks)
    ]
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    done = 0
    for stage in args.stages:
        for _ in range(stage - done):  # train on random masks up to this stage
            idx = torch.randint(0, len(image), (min(8, len(image)),))
            out = student(image[idx], masker(image[idx], student.grid, 0.75), valid[idx])
            loss = masked_mse(out.pred, out.target, out.weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        done = stage
        with torch.no_grad():
            outs = [student(image, m, valid) for m in masks]
        for mi, out in enumerate(outs):
            yield f"step {stage}", student, image, valid, out.pred, out, mi
    with torch.no_grad():
        truth = [student(image, m, valid) for m in masks]
    gen = torch.Generator().manual_seed(args.seed)
    for sigma in args.noise:  # standardised units around the truth
        for mi, out in enumerate(truth):
            pred = out.target + sigma * torch.randn(out.target.shape, generator=gen)
            yield f"noise {sigma}", student, image, valid, pred, out, mi


def agreement(args: argparse.Namespace, terms: dict[str, Any]) -> dict[str, dict[str, float]]:
    values: dict[str, list[float]] = {k: [] for k in terms}
    cosines: dict[str, list[float]] = {k: [] for k in terms}
    n = 0
    for _label, student, image, valid, pred, out, _mi in samples(args):
        for i in range(image.shape[0]):  # one value per chip
            grads = {}
            for name, term in terms.items():
                p = pred[i : i + 1].detach().clone().requires_grad_()
                o = MAEOutput(
                    pred=p,
                    target=out.target[i : i + 1],
                    mask=out.mask[i : i + 1],
                    weight=out.weight[i : i + 1],
                    features=[],
                    ids_keep=None,
                )
                ctx = {"batch": {"image": image[i : i + 1], "valid": valid[i : i + 1]}, "student": student}
                v = term(o, ctx)
                (g,) = torch.autograd.grad(v, p)
                values[name].append(float(v.detach()))
                grads[name] = g.flatten()
            for name, g in grads.items():
                cosines[name].append(float(torch.nn.functional.cosine_similarity(g, grads[REF], dim=0)))
            n += 1
    ref = np.asarray(values[REF])
    res = {}
    for name in terms:
        v = np.asarray(values[name])
        rank = np.argsort(np.argsort(v)), np.argsort(np.argsort(ref))
        res[name] = {
            "pearson": float(np.corrcoef(v, ref)[0, 1]),
            "spearman": float(np.corrcoef(*rank)[0, 1]),
            "mad": float(np.abs(v - ref).mean()),
            "grad_cos": float(np.median(cosines[name])),
            "n": n,
            "ref_range": (float(ref.min()), float(ref.max())),
        }
    return res


def speed(args: argparse.Namespace, terms: dict[str, Any]) -> dict[str, float]:
    """Seconds for forward + backward of each term on a training-size synthetic batch."""
    torch.manual_seed(0)
    student = build_student(f"enmap-mae-{args.student}", img_size=args.size)
    b = args.batch
    image = 0.05 + 0.4 * torch.rand(b, student.in_chans, args.size, args.size)
    mask = create("masker", "random")(image, student.grid, 0.75)
    with torch.no_grad():
        out = student(image, mask)
    ctx = {"batch": {"image": image, "valid": torch.ones(b, args.size, args.size, dtype=torch.bool)}}
    ctx["student"] = student
    pred = (out.pred + 0.3 * torch.randn_like(out.pred)).requires_grad_()
    o = MAEOutput(pred=pred, target=out.target, mask=mask, weight=out.weight, features=[], ids_keep=None)

    def run(term: Any) -> float:
        t = time.perf_counter()
        term(o, ctx).backward()
        pred.grad = None
        return time.perf_counter() - t

    for term in terms.values():
        run(term)
    best = dict.fromkeys(terms, float("inf"))
    for _ in range(args.rounds):  # interleaved: background load hits every variant alike
        for name, term in terms.items():
            best[name] = min(best[name], run(term))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="chip store for the agreement check (default: toy chips)")
    ap.add_argument("--patch", type=int, default=4, help="student patch size for the agreement check")
    ap.add_argument("--masks", type=int, default=3, help="fixed masks per chip")
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 10, 40, 150, 400], help="training steps")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="noise sigmas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--student", default="small", help="student size for the speed check")
    ap.add_argument("--size", type=int, default=128, help="chip size for the speed check")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy chips, tiny sizes (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.store, args.stages, args.noise, args.masks = None, [0, 5], [0.3], 1
        args.student, args.size, args.batch, args.rounds = "tiny", 32, 2, 1
    load_plugins()
    terms = {name: create("loss", "ssim", **kw) for name, kw in VARIANTS.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    agree = agreement(args, {k: OverStarts(t) if k.endswith("steps") else t for k, t in terms.items()})
    first = next(iter(agree.values()))
    print(
        f"agreement: {first['n']} reconstructions ({args.store or 'toy chips'}; training steps "
        f"{args.stages}, noise sigmas {args.noise}, {args.masks} masks per chip); reference "
        f"1-SSIM from {first['ref_range'][0]:.3f} to {first['ref_range'][1]:.3f}"
    )
    secs = speed(args, terms)
    print(
        f"speed: loss forward + backward, enmap-mae-{args.student}, {args.size} px, batch {args.batch}, "
        f"best of {args.rounds} interleaved rounds"
    )
    print(
        f"{'variant':<20} {'pearson':>8} {'spearman':>9} {'mean|diff|':>10} {'grad cos':>9} {'ms':>9} {'speed-up':>9}"
    )
    for name in terms:
        a = agree[name]
        print(
            f"{name:<20} {a['pearson']:>8.4f} {a['spearman']:>9.4f} {a['mad']:>10.4f} {a['grad_cos']:>9.3f} "
            f"{1000 * secs[name]:>9.1f} {secs[REF] / secs[name]:>8.1f}x"
        )


if __name__ == "__main__":
    main()
