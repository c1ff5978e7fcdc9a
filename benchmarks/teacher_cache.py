"""What caching the teacher's features across epochs saves in HyperKD distillation.

The teacher encodes the whole aligned chip, so its features depend on the chip alone and
can be cached after the first epoch (``distill.cache_teacher``). This script times one
full distillation training step (aligner, masking, student forward + backward + AdamW,
teacher, loss terms of the ``hyperkd`` recipe) per chip with the cache cold (the teacher
runs) and warm (the teacher is skipped), side by side in one run, and the memory the cache
needs per chip. The teacher is built with ``weights=None``: random weights cost exactly the
same compute as the official ones, and no download is needed.

    python benchmarks/teacher_cache.py                       # 224 px, Prithvi-100M, small student
    python benchmarks/teacher_cache.py --student base --batch 4 --steps 3
"""

from __future__ import annotations

import argparse
import time

import torch

from hyperkd import create, recipes
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import build_student
from hyperkd.training.distill import DistillModule, TeacherCache
from hyperkd.training.runner import build_losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="prithvi")
    ap.add_argument("--student", default="small")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--ssim-band-stride", type=int, default=1, help="losses.ssim.band_stride")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_plugins()
    torch.manual_seed(0)
    teacher = create("teacher", args.teacher, weights=None)
    student = build_student(f"enmap-mae-{args.student}", img_size=args.size)
    aligner = create("aligner", "spectral-range", source=student.sensor, target=teacher.sensor)
    recipe = recipes.resolve("hyperkd", [f"losses.ssim.band_stride={args.ssim_band_stride}"])
    module = DistillModule(
        student,
        teacher,
        aligner,
        create("masker", "spatial-feature"),
        build_losses(recipe["losses"]),
        cache_teacher=True,
    )
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    b = args.batch
    batch = {
        "image": 0.05 + 0.4 * torch.rand(b, student.in_chans, args.size, args.size),
        "valid": torch.ones(b, args.size, args.size, dtype=torch.bool),
        "index": torch.arange(b),
    }

    def step() -> None:
        loss = module.shared_step(batch)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def per_chip(cold: bool) -> float:
        times = []
        for _ in range(args.steps):
            if cold:
                module.cache = TeacherCache()
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        return min(times) / b

    step()  # warm-up (allocations, first-call overheads)
    with torch.inference_mode():
        x = module.teacher_input(batch["image"])
        module.teacher.forward_features(x, module.teacher_layers)
        t = time.perf_counter()
        module.teacher.forward_features(x, module.teacher_layers)
        teacher_s = (time.perf_counter() - t) / b
    cold = per_chip(True)
    module.cache = TeacherCache()
    step()  # fills the cache
    warm = per_chip(False)
    cache_bytes = module.cache.bytes / b
    print(
        f"device cpu, threads {torch.get_num_threads()}, {args.size} px chips, batch {b}, "
        f"teacher {args.teacher} ({teacher.embed_dim} wide, {teacher.depth} blocks), "
        f"student enmap-mae-{args.student} ({student.in_chans} bands), ssim band stride {args.ssim_band_stride}"
    )
    print(f"teacher forward alone      : {1000 * teacher_s:8.1f} ms/chip")
    print(f"distillation step, cold    : {1000 * cold:8.1f} ms/chip (teacher runs)")
    print(f"distillation step, cached  : {1000 * warm:8.1f} ms/chip (teacher skipped)")
    print(f"saved per epoch after the first: {100 * (1 - warm / cold):.0f} % of step time")
    print(
        f"cache memory               : {cache_bytes / 2**20:8.2f} MiB/chip "
        f"({cache_bytes * 10000 / 2**30:.1f} GiB per 10k chips)"
    )


if __name__ == "__main__":
    main()
