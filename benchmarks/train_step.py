"""Training throughput of the student: plain vs factorised patch embedding, fp32 vs bf16.

Prints, for each configuration measured side by side in one run: chips/s for a full
training step (forward + backward + AdamW), the model's matmul FLOPs per step, and the
fraction of this machine's matmul peak (measured in the same run with a large GEMM, per
dtype) that a step reaches. Ratios are what to compare; absolute numbers depend on the
machine and on whatever else runs on it.

    python benchmarks/train_step.py            # 64 px chips, tiny student (CPU-sized)
    python benchmarks/train_step.py --size 224 --student small --batch 4 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from hyperkd.components.maskers import RandomMasker
from hyperkd.components.metrics import masked_mse
from hyperkd.models.mae import build_student, flops_per_chip


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Measured GFLOP/s of an n x n GEMM in ``dtype`` (best of ``reps``)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def make_step(embedding: str, precision: str, args: argparse.Namespace):
    """A closure running one training step, and the model it trains."""
    torch.manual_seed(0)
    model = build_student(
        f"enmap-mae-{args.student}", img_size=args.size, embedding=embedding, patch_size=args.patch
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch, model.in_chans, args.size, args.size) * 0.5
    masker = RandomMasker()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def step() -> None:
        mask = masker(x, model.grid, 0.75)
        with ctx:
            out = model(x, mask)
            loss = masked_mse(out.pred.float(), out.target.float(), out.weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    return step, model


def timed(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def summarize(model, dt: float, args: argparse.Namespace) -> dict[str, float]:
    flops = 3 * flops_per_chip(model) * args.batch  # forward + backward ~ 3x forward
    return {
        "chips_per_s": args.batch / dt,
        "step_s": dt,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / dt / 1e9,
        "params_m": model.num_parameters() / 1e6,
        "embed_params_m": model.num_parameters("embedding") / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="steps per timing round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; student {args.student}, "
        f"{args.size} px chips, patch {args.patch}, batch {args.batch}, 202 EnMAP bands"
    )
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"measured matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    configs = [(e, q) for e in ("plain", "factorized") for q in ("fp32", "bf16")]
    steps = {c: make_step(*c, args) for c in configs}
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(args.rounds):  # interleaved, so background load hits every config alike
        for c in configs:
            best[c] = min(best[c], timed(steps[c][0], args.steps))
    rows = {}
    for c in configs:
        r = summarize(steps[c][1], best[c], args)
        r["peak_fraction"] = r["achieved_gflops"] / peaks[c[1]]
        rows[c] = r
    print(
        f"{'embedding':<11} {'prec':<5} {'params(M)':>9} {'embed(M)':>8} {'GFLOP/step':>10} "
        f"{'step(s)':>8} {'chips/s':>8} {'of peak':>8}"
    )
    for (emb, prec), r in rows.items():
        print(
            f"{emb:<11} {prec:<5} {r['params_m']:>9.2f} {r['embed_params_m']:>8.2f} {r['gflop_per_step']:>10.2f} "
            f"{r['step_s']:>8.3f} {r['chips_per_s']:>8.1f} {r['peak_fraction']:>8.1%}"
        )
    base = rows[("plain", "fp32")]["chips_per_s"]
    print(
        "throughput relative to plain fp32: "
        + ", ".join(f"{e}/{p} {r['chips_per_s'] / base:.2f}x" for (e, p), r in rows.items())
    )


if __name__ == "__main__":
    main()
