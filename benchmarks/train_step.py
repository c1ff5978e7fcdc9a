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

On a GPU (``--device cuda``) the GPU path's switches apply as in training: AdamW ``fused``
(``--fused``, as ``optim.fused``; ``auto`` fuses on CUDA), channels-last convolutions
(``--channels-last``, as ``trainer.channels_last``; ``auto``: on CUDA) and, with ``--compile``,
every configuration is measured twice, eager and with the student's forward (and the
teacher's) compiled by ``torch.compile`` (as ``trainer.compile``; rows marked ``+compile``,
compilation in the warm-up, FLOPs counted on the eager step). The steps are timed with
``torch.cuda.synchronize`` around them; the matmul peak uses GEMMs up to 8192.
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
from hyperkd.training.optim import decay_groups, fused_devices, fused_flag
from hyperkd.training.parts import SpeedUps, build_losses, compile_methods, to_channels_last
from hyperkd.training.pretrain import MAEModule

KINDS = ("pretrain", "distill cold", "distill cached", "cached, ssim all")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    dtype: torch.dtype, reps: int = 5, budget_s: float = 0.2, device: torch.device | None = None
) -> float:
    """Measured FLOP/s of a square GEMM in ``dtype`` (best of ``reps``); the size grows from
    256 to at most 2048 (8192 on a GPU) while one product takes under ``budget_s`` (bf16
    without hardware support is slow)."""
    device = device or torch.device("cpu")
    n, best, largest = 256, 0.0, 8192 if device.type == "cuda" else 2048
    while True:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        a @ b
        sync(device)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / min(times))
        if n >= largest or min(times) > budget_s:
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


def make_step(
    kind: str, size: int, prec: str, args: argparse.Namespace, compiled: bool = False
) -> tuple[Callable[[], None], float]:
    """A closure running one training step, and the FLOPs of one step (counted eagerly, before
    ``compiled`` compiles the student's and teacher's forward)."""
    device = torch.device(args.device)
    module: Any = build_module(kind, size, args).to(device)
    module.train()
    if SpeedUps(channels_last=args.channels_last).wants_channels_last(device):
        to_channels_last(module)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=fused_flag(params, args.fused))
    b = args.batch
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": (0.05 + 0.4 * torch.rand(b, module.student.in_chans, size, size, generator=gen)).to(device),
        "valid": torch.ones(b, size, size, dtype=torch.bool, device=device),
        "index": torch.arange(b, device=device),
    }
    cold = kind == "distill cold"

    def step() -> None:
        if cold:
            module.cache = TeacherCache()
        ctx = (
            torch.autocast(device.type, dtype=torch.bfloat16) if prec == "bf16" else contextlib.nullcontext()
        )
        with ctx:
            loss = module.shared_step(batch)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # allocations, first-call overheads; fills the teacher cache
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    if compiled:
        compile_methods(module, args.compile_mode)
        for _ in range(max(args.warmup, 2)):  # compilation, then its first run
            step()
    sync(device)
    return step, float(counter.get_total_flops())


def adamw_times(args: argparse.Namespace, rounds: int = 5) -> tuple[dict[str, float], int]:
    """Seconds of one AdamW step over the student's parameters (random gradients), per
    implementation torch has on this device: ``loop`` (torch's default on CPU; CUDA's default
    is ``foreach``), ``foreach`` and ``fused`` (where this torch has the kernel), measured
    interleaved, best of ``rounds``; and the parameter count."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    student = build_student(f"enmap-mae-{args.student}", img_size=args.sizes[0], embedding=args.embedding)
    student = student.to(device)
    for p in student.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    kinds: dict[str, dict[str, Any]] = {"loop": {"foreach": False}, "foreach": {"foreach": True}}
    if device.type in fused_devices():
        kinds["fused"] = {"fused": True}
    opts = {k: torch.optim.AdamW(decay_groups(student, 0.05), lr=1e-4, **kw) for k, kw in kinds.items()}
    best = dict.fromkeys(opts, float("inf"))
    for _ in range(rounds):
        for k, opt in opts.items():
            opt.step()  # the first call creates the state
            best[k] = min(best[k], timed(opt.step, 2, device)[0])
    return best, sum(p.numel() for p in student.parameters())


def timed(step: Callable[[], None], n: int, device: torch.device | None = None) -> tuple[float, float]:
    """Wall and process CPU seconds per step (CPU time counts only time on a core, so its
    ratios hold better than wall time's on a machine other jobs share; on a GPU read wall time)."""
    device = device or torch.device("cpu")
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


Config = tuple[str, int, str]
"""``(kind, px, precision)``; kind ends in ``+compile`` for a compiled row."""


def measure(args: argparse.Namespace) -> tuple[dict[str, float], dict[Config, dict[str, Any]]]:
    """Peaks and per-configuration results, measured in this process."""
    load_plugins()
    device = torch.device(args.device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {q: matmul_peak(dtypes[q], device=device) for q in args.precisions}
    variants = ["", "+compile"] if args.compile else [""]
    configs = [
        (k + v, s, q) for s in args.sizes for k in args.kinds for v in variants for q in args.precisions
    ]
    if args.compile:  # one compiled entry per module instance: room for every configuration
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(configs))
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 16 * len(configs)
        )
    steps = {
        c: make_step(c[0].removesuffix("+compile"), c[1], c[2], args, c[0].endswith("+compile"))
        for c in configs
    }
    best = dict.fromkeys(configs, float("inf"))
    cpu = dict.fromkeys(configs, float("inf"))
    for _ in range(args.rounds):  # interleaved, so background load hits every config alike
        for c in configs:
            wall, used = timed(steps[c][0], args.steps, device)
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
    p.add_argument("--no-optimizer", action="store_true", help="skip the AdamW implementations line")
    p.add_argument("--quick", action="store_true", help="tiny student and teacher, 32 px, one round")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="also measure every configuration with torch.compile (MODE: default, max-autotune, ...)",
    )
    p.add_argument(
        "--fused", default="auto", choices=["auto", "true", "false"], help="AdamW fused (optim.fused)"
    )
    p.add_argument(
        "--channels-last", default="auto", choices=["auto", "true", "false"], help="as trainer.channels_last"
    )
    args = p.parse_args()
    args.fused, args.channels_last = (
        {"true": True, "false": False}.get(v, v) for v in (args.fused, args.channels_last)
    )
    args.compile_mode = True if args.compile == "default" else args.compile
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to this torch")
    if args.precisions is None:
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else bf16_native()
        args.precisions = ["fp32", "bf16"] if native else ["fp32"]
    if args.quick:
        args.student, args.teacher, args.sizes, args.batch = "tiny", "prithvi-eo-tiny", [32], 2
        args.steps, args.rounds, args.warmup = 1, 1, 1
    peaks, rows = measure(args)
    where = (
        f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    ) + f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, {where}; student enmap-mae-{args.student} "
        f"({args.embedding}), teacher {args.teacher} (random weights), batch {args.batch}, 202 EnMAP bands"
    )
    params = [torch.nn.Parameter(torch.zeros(1, device=device))]
    print(
        f"device {device}: AdamW fused {bool(fused_flag(params, args.fused))}, channels-last "
        f"{SpeedUps(channels_last=args.channels_last).wants_channels_last(device)}, torch.compile "
        f"{args.compile or 'off'}"
    )
    print(
        "measured matmul peak: "
        + ", ".join(f"{q} {v / 1e9:.1f} GFLOP/s" for q, v in peaks.items())
        + (
            ""
            if device.type == "cuda"
            else f"; native bf16 matmuls (oneDNN): {'yes' if bf16_native() else 'no'}"
        )
    )
    print(
        f"{'step':<25} {'px':>4} {'prec':<5} {'GFLOP/step':>10} {'step (s)':>9} {'chips/s':>8} "
        f"{'of peak':>8} {'x pretrain':>10} {'cpu (s)':>8} {'x pretrain':>10}"
    )
    for (kind, size, prec), r in rows.items():
        base = rows.get(("pretrain" + ("+compile" if kind.endswith("+compile") else ""), size, prec))
        rel = f"{r['step_s'] / base['step_s']:>9.2f}x" if base else f"{'-':>10}"
        rel_cpu = f"{r['cpu_s'] / base['cpu_s']:>9.2f}x" if base else f"{'-':>10}"
        print(
            f"{kind:<25} {size:>4} {prec:<5} {r['gflop']:>10.1f} {r['step_s']:>9.3f} "
            f"{args.batch / r['step_s']:>8.2f} {r['peak_share']:>8.1%} {rel} {r['cpu_s']:>8.2f} {rel_cpu}"
        )
    for size in args.sizes if "bf16" in args.precisions and "fp32" in args.precisions else ():
        speedups = [
            f"{k} {rows[(k, size, 'fp32')]['step_s'] / rows[(k, size, 'bf16')]['step_s']:.2f}x"
            for k in args.kinds
        ]
        print(f"bf16 speed-up over fp32 at {size} px: " + ", ".join(speedups))
    if not args.no_optimizer:
        adamw, n = adamw_times(args)
        ref = adamw["loop" if device.type == "cpu" else "foreach"]  # torch's default there
        print(
            f"AdamW step over the student's {n / 1e6:.1f} M parameters: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms ({ref / v:.2f}x)" for k, v in adamw.items())
        )
    for size in args.sizes if args.compile else ():
        gains = [
            f"{k} {q} {rows[(k, size, q)]['step_s'] / rows[(k + '+compile', size, q)]['step_s']:.2f}x"
            for k in args.kinds
            for q in args.precisions
        ]
        print(f"torch.compile speed-up over eager at {size} px: " + ", ".join(gains))


if __name__ == "__main__":
    main()
