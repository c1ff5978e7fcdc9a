"""Training step cost: MAE pretraining vs HyperKD distillation, fp32 vs bf16, 64 and 128 px.

For each configuration, measured side by side in one run (interleaved rounds, the best
kept, so background load hits every configuration alike), one full training step of the
engine's own modules (``MAEModule.shared_step`` / ``DistillModule.shared_step``, backward,
AdamW):

- ``pretrain``: the ``mae`` recipe (random masking, masked MSE);
- ``distill cold``: the ``hyperkd`` recipe (spectral-range aligner, spatial-feature masking,
  MSE + SSIM + KLD), the teacher encodes every chip;
- ``distill cached``: the same with the teacher's features cached (every epoch after the first);
- ``cached, ssim all``: cached, with the per-band SSIM over every band (``losses.ssim.bands=all``,
  the term before the band subset) for comparison.

It prints the step time (wall; and process CPU time, whose ratios hold better on a machine
other jobs share), the FLOPs of one step counted by ``torch.utils.flop_counter``
(forward + backward, every matmul and convolution that runs: the teacher's only when it
runs), and the share of this machine's matmul peak that the step reaches, the peak measured
in the same process with a large GEMM per dtype. bf16 is ``torch.autocast`` around the
forward pass, as Lightning's ``bf16-mixed``; it is measured by default only where oneDNN runs
bf16 matmuls natively (AVX-512 BF16 / AMX; elsewhere they are emulated and slower than
fp32: ``--precisions fp32 bf16`` measures it anyway). The teacher is built with ``weights=None``
(random weights cost the same compute; no download). Ratios are what to compare.

    python benchmarks/train_step.py                  # enmap-mae-small, Prithvi-100M, batch 8
    python benchmarks/train_step.py --quick          # tiny models, 32 px (smoke test, seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from hyperkd import create, recipes
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import build_student
from hyperkd.training.distill import DistillModule, TeacherCache
from hyperkd.training.parts import build_losses
from hyperkd.training.pretrain import MAEModule

KINDS = ("pretrain", "distill cold", "distill cached", "cached, ssim all")


def matmul_peak(dtype: torch.dtype, reps: int = 5, budget_s: float = 0.2) -> float:
    """Measured FLOP/s of a square GEMM in ``dtype`` (best of ``reps``); the size grows from
    256 to at most 2048 while one product takes under ``budget_s`` (bf16 without hardware
    support is slow)."""
    n, best = 256, 0.0
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / min(times))
        if n >= 2048 or min(times) > budget_s:
            return best
        n *= 2


def bf16_native() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def build_module(kind: str, size: int, args: argparse.Namespace) -> torch.nn.Module:
    """The engine module a configuration trains (fresh student, seed 0)."""
    torch.manual_seed(0)
    student = build_student(f"enmap-mae-{args.student}", img_size=size, embedding=args.embedding)
    if kind == "pretrain":
        mae = recipes.resolve("mae")
        return MAEModule(student, create("masker", "random"), build_losses(mae["losses"]))
    sets = ["losses.ssim.bands=all"] if kind == "cached, ssim all" else []
    rec = recipes.resolve("hyperkd", sets)
    teacher = create("teacher", args.teacher, weights=None)
    aligner = create("aligner", "spectral-range", source=student.sensor, target=teacher.sensor)
    masker = create("masker", rec["masker"]["name"])
    return DistillModule(student, teacher, aligner, masker, build_losses(rec["losses"]), cache_teacher=True)


def make_step(kind: str, size: int, prec: str, args: argparse.Namespace) -> tuple[Callable[[], None], float]:
    """A closure running one training step, and the FLOPs of one step."""
    module = build_module(kind, size, args)
    module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    b = args.batch
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": 0.05 + 0.4 * torch.rand(b, module.student.in_chans, size, size, generator=gen),
        "valid": torch.ones(b, size, size, dtype=torch.bool),
        "index": torch.arange(b),
    }
    cold = kind == "distill cold"

    def step() -> None:
        if cold:
            module.cache = TeacherCache()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else contextlib.nullcontext()
        with ctx:
            loss = module.shared_step(batch)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # allocations, first-call overheads; fills the teacher cache
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    return step, float(counter.get_total_flops())


def timed(step: Callable[[], None], n: int) -> tuple[float, float]:
    """Wall and process CPU seconds per step (CPU time counts only time on a core, so its
    ratios hold better than wall time's on a machine other jobs share)."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def measure(args: argparse.Namespace) -> tuple[dict[str, float], dict[tuple[str, int, str], dict[str, Any]]]:
    """Peaks and per-configuration results, measured in this process."""
    load_plugins()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {q: matmul_peak(dtypes[q]) for q in args.precisions}
    configs = [(k, s, q) for s in args.sizes for k in args.kinds for q in args.precisions]
    steps = {c: make_step(*c, args) for c in configs}
    best = dict.fromkeys(configs, float("inf"))
    cpu = dict.fromkeys(configs, float("inf"))
    for _ in range(args.rounds):  # interleaved, so background load hits every config alike
        for c in configs:
            wall, used = timed(steps[c][0], args.steps)
            best[c], cpu[c] = min(best[c], wall), min(cpu[c], used)
    rows = {}
    for c in configs:
        flops = steps[c][1]
        rows[c] = {
            "step_s": best[c],
            "cpu_s": cpu[c],
            "gflop": flops / 1e9,
            "peak_share": flops / best[c] / peaks[c[2]],
        }
    return peaks, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="small", choices=["tiny", "small", "base", "large"])
    p.add_argument("--teacher", default="prithvi", help="registered teacher, built with weights=None")
    p.add_argument("--embedding", default="factorized", choices=["factorized", "plain", "spectral-conv"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="steps per timing round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=None,
        help="default: fp32 and bf16, or fp32 alone on a CPU without native bf16 matmuls",
    )
    p.add_argument("--quick", action="store_true", help="tiny student and teacher, 32 px, one round")
    args = p.parse_args()
    if args.precisions is None:
        args.precisions = ["fp32", "bf16"] if bf16_native() else ["fp32"]
    if args.quick:
        args.student, args.teacher, args.sizes, args.batch = "tiny", "prithvi-eo-tiny", [32], 2
        args.steps, args.rounds, args.warmup = 1, 1, 1
    peaks, rows = measure(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; student enmap-mae-{args.student} "
        f"({args.embedding}), teacher {args.teacher} (random weights), batch {args.batch}, 202 EnMAP bands"
    )
    print(
        "measured matmul peak: "
        + ", ".join(f"{q} {v / 1e9:.1f} GFLOP/s" for q, v in peaks.items())
        + f"; native bf16 matmuls (oneDNN): {'yes' if bf16_native() else 'no'}"
    )
    print(
        f"{'step':<17} {'px':>4} {'prec':<5} {'GFLOP/step':>10} {'step (s)':>9} {'chips/s':>8} "
        f"{'of peak':>8} {'x pretrain':>10} {'cpu (s)':>8} {'x pretrain':>10}"
    )
    for (kind, size, prec), r in rows.items():
        base = rows.get(("pretrain", size, prec))
        rel = f"{r['step_s'] / base['step_s']:>9.2f}x" if base else f"{'-':>10}"
        rel_cpu = f"{r['cpu_s'] / base['cpu_s']:>9.2f}x" if base else f"{'-':>10}"
        print(
            f"{kind:<17} {size:>4} {prec:<5} {r['gflop']:>10.1f} {r['step_s']:>9.3f} "
            f"{args.batch / r['step_s']:>8.2f} {r['peak_share']:>8.1%} {rel} {r['cpu_s']:>8.2f} {rel_cpu}"
        )
    for size in args.sizes if "bf16" in args.precisions and "fp32" in args.precisions else ():
        speedups = [
            f"{k} {rows[(k, size, 'fp32')]['step_s'] / rows[(k, size, 'bf16')]['step_s']:.2f}x"
            for k in args.kinds
        ]
        print(f"bf16 speed-up over fp32 at {size} px: " + ", ".join(speedups))


if __name__ == "__main__":
    main()
