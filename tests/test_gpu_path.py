"""The GPU path's switches, tested on CPU: fused AdamW (optim.fused), torch.compile
(trainer.compile) and channels-last convolutions (trainer.channels_last).

No GPU here: the device choices are tested through the decision functions (a ``cuda`` device
object needs no GPU; a device type without a fused kernel is simulated by ``meta`` tensors
or a patched kernel list), and compile runs with the ``aot_eager`` backend (dynamo + AOT
autograd, no C++ build); inductor itself is tested only with ``HYPERKD_TEST_INDUCTOR=1``
(its C++ build of a tiny student takes minutes of CPU).
"""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

from hyperkd import recipes
from hyperkd.core.errors import HyperKDError, RecipeError
from hyperkd.core.plugins import load_plugins
from hyperkd.training import optim as optim_mod
from hyperkd.training import parts
from hyperkd.training.optim import configure_optimizers, fused_flag
from hyperkd.training.parts import SpeedUps, compile_methods, to_channels_last, uncompile_methods
from hyperkd.training.pretrain import MAEModule
from tests.helpers.toy import TINY_STUDENT, logged, toy_store


def tiny_module(seed: int = 0) -> MAEModule:
    torch.manual_seed(seed)
    return MAEModule({"name": "enmap-mae-tiny", "img_size": 16})


def tiny_batch(module: MAEModule, b: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    c = module.student.in_chans
    return {
        "image": 0.05 + 0.4 * torch.rand(b, c, 16, 16, generator=gen),
        "valid": torch.ones(b, 16, 16, dtype=torch.bool),
    }


def loss_and_grads(module: MAEModule, batch: dict[str, torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    loss = module.shared_step(batch, torch.Generator().manual_seed(3))[0]
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in module.parameters() if p.grad is not None]


# -- optim.fused ------------------------------------------------------------------------------
def test_fused_auto_is_the_default_loop_on_cpu_and_fused_on_a_supported_accelerator(monkeypatch):
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert fused_flag(cpu, "auto") is None  # CPU: torch's default implementation
    opt = configure_optimizers(tiny_module(), {}, 10)["optimizer"]
    assert not opt.defaults["fused"]
    # an accelerator type with a kernel (simulated: meta tensors, meta in the kernel list) -> fused
    monkeypatch.setattr(optim_mod, "fused_devices", lambda: {"cuda", "meta", "cpu"})
    meta = [{"params": [torch.nn.Parameter(torch.zeros(3, device="meta"))]}]
    assert fused_flag(meta, "auto") is True
    assert fused_flag(meta, False) is None
    assert fused_flag(cpu, "auto") is None  # CPU stays unfused under auto even with a kernel


def test_fused_true_where_the_kernel_is_missing_is_one_line_naming_the_key(monkeypatch):
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # no fused kernel for meta
    with pytest.raises(RecipeError, match=r"optim\.fused is true.*meta.*optim\.fused=auto") as err:
        fused_flag(meta, True)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(optim_mod, "fused_devices", lambda: {"cuda"})  # a torch without the CPU kernel
    with pytest.raises(RecipeError, match=r"parameters on cpu"):
        configure_optimizers(tiny_module(), {"fused": True}, 10)


@pytest.mark.skipif("cpu" not in optim_mod.fused_devices(), reason="this torch has no fused CPU AdamW")
def test_fused_true_on_a_cpu_kernel_steps_like_the_default():
    results = []
    start = torch.cat([p.detach().flatten() for p in tiny_module().parameters()])
    for fused in (False, True):
        module = tiny_module()
        opt = configure_optimizers(module, {"fused": fused, "lr": 1e-2}, 10)["optimizer"]
        assert bool(opt.defaults["fused"]) is fused
        for _ in range(2):
            loss_and_grads(module, tiny_batch(module))
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in module.parameters()]))
    assert (results[0] - start).abs().max() > 1e-2  # both moved by ~2 lr ...
    assert torch.allclose(results[0], results[1], atol=1e-4)  # ... the same way (rounding differs)


def test_speed_keys_are_validated_in_one_line():
    base = recipes.resolve(
        "mae", ["optim.fused=true", "trainer.compile=max-autotune", "trainer.channels_last=false"]
    )
    assert base["optim"]["fused"] is True and base["trainer"]["compile"] == "max-autotune"
    for setting, named in (
        ("optim.fused=yes please", "optim.fused"),
        ("trainer.compile=fast", "trainer.compile"),
        ("trainer.channels_last=1", "trainer.channels_last"),
    ):
        with pytest.raises(RecipeError, match=rf"recipe key {named} is .*use one of") as err:
            recipes.resolve("mae", [setting])
        assert "\n" not in str(err.value)
    with pytest.raises(RecipeError, match=r"optim\.fused"):
        optim_mod.OptimConfig.from_mapping({"fused": "sometimes"})


# -- trainer.compile --------------------------------------------------------------------------
@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile without inductor's C++ build (seconds, not minutes)."""
    torch._dynamo.reset()
    monkeypatch.setattr(parts, "COMPILE_BACKEND", "aot_eager")
    yield
    torch._dynamo.reset()


def test_compiled_student_gives_the_eager_loss_and_gradients_and_keeps_its_state_dict(aot_eager):
    module = tiny_module()
    batch = tiny_batch(module)
    keys = list(module.state_dict())
    loss, grads = loss_and_grads(module, batch)
    assert compile_methods(module, True) == ["student.forward"]
    assert isinstance(vars(module.student)["forward"], parts.EagerFallback)
    loss_c, grads_c = loss_and_grads(module, batch)
    assert not module.student.forward.failed
    assert loss_c == pytest.approx(loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, grads_c, strict=True))
    assert list(module.state_dict()) == keys
    with pytest.raises(HyperKDError, match="expects"):  # the model's own errors pass through
        module.student(torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, dtype=torch.bool))
    assert not module.student.forward.failed
    uncompile_methods(module)
    assert "forward" not in vars(module.student)


def test_failed_compilation_warns_once_and_runs_eagerly(caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C compiler here")

    module = tiny_module()
    batch = tiny_batch(module)
    loss, _ = loss_and_grads(module, batch)
    torch._dynamo.reset()
    try:
        compile_methods(module, True, backend=broken_backend)
        with caplog.at_level(logging.WARNING, logger="hyperkd.training.parts"):
            loss_c, _ = loss_and_grads(module, batch)
            loss_c2, _ = loss_and_grads(module, batch)
    finally:
        torch._dynamo.reset()
    warned = [r for r in caplog.records if "torch.compile of student.forward failed" in r.getMessage()]
    assert len(warned) == 1 and "no C compiler here" in warned[0].getMessage()
    assert module.student.forward.failed
    assert loss_c == loss_c2 == pytest.approx(loss, rel=1e-6)


def test_distillation_compiles_the_teacher_too(aot_eager):
    from hyperkd import create
    from hyperkd.models.mae import build_student
    from hyperkd.training.distill import DistillModule
    from hyperkd.training.parts import build_losses

    load_plugins()
    torch.manual_seed(0)
    student = build_student("enmap-mae-tiny", img_size=32)
    teacher = create("teacher", "prithvi-eo-tiny", weights=None)
    aligner = create("aligner", "spectral-range", source=student.sensor, target=teacher.sensor)
    rec = recipes.resolve("hyperkd")
    module = DistillModule(
        student,
        teacher,
        aligner,
        create("masker", "random"),
        build_losses({k: v for k, v in rec["losses"].items() if k != "ssim"}),  # ssim rotates per call
        cache_teacher=False,
    )
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": 0.05 + 0.4 * torch.rand(2, student.in_chans, 32, 32, generator=gen),
        "index": torch.arange(2),
    }
    assert "kld" in module.loss_terms  # a term that reads the teacher's features
    eager, grads = loss_and_grads(module, batch)  # type: ignore[arg-type]
    assert compile_methods(module, True) == ["student.forward", "teacher.forward_features"]
    compiled, grads_c = loss_and_grads(module, batch)  # type: ignore[arg-type]
    assert not module.teacher.forward_features.failed and module.teacher_chips == 4
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, grads_c, strict=True))


@pytest.mark.skipif(
    os.environ.get("HYPERKD_TEST_INDUCTOR") != "1",
    reason="inductor's C++ build of a tiny student takes minutes of CPU; set HYPERKD_TEST_INDUCTOR=1",
)
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for inductor")
def test_inductor_compiled_student_gives_the_eager_loss():
    module = tiny_module()
    batch = tiny_batch(module)
    loss, grads = loss_and_grads(module, batch)
    torch._dynamo.reset()
    compile_methods(module, True)
    loss_c, grads_c = loss_and_grads(module, batch)
    assert not module.student.forward.failed
    assert loss_c == pytest.approx(loss, rel=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(grads, grads_c, strict=True))


# -- trainer.channels_last --------------------------------------------------------------------
def test_channels_last_auto_is_cuda_only_and_a_no_op_on_cpu():
    speed = SpeedUps(channels_last="auto")
    assert speed.wants_channels_last(torch.device("cuda", 0))
    assert not speed.wants_channels_last(torch.device("cpu"))
    assert SpeedUps(channels_last=True).wants_channels_last(torch.device("cpu"))
    assert not SpeedUps(channels_last=False).wants_channels_last(torch.device("cuda"))
    module = tiny_module()
    speed.on_fit_start(None, module)  # type: ignore[arg-type]  # the trainer is not read
    assert not speed.handles
    assert all(p.is_contiguous() for p in module.parameters())


def test_forced_channels_last_converts_student_and_teacher_convolutions_and_keeps_the_output():
    from hyperkd import create

    load_plugins()
    module = tiny_module()
    batch = tiny_batch(module)
    loss, grads = loss_and_grads(module, batch)
    handles = to_channels_last(module)
    weight = module.student.patch_embed.proj.weight
    assert len(handles) == 2  # the factorised embedding: 1x1 spectral conv + patch conv
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    loss_cl, grads_cl = loss_and_grads(module, batch)
    assert loss_cl == pytest.approx(loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, grads_cl, strict=True))
    parts.to_contiguous(module, handles)
    assert all(p.is_contiguous() for p in module.parameters())

    teacher = create("teacher", "prithvi-eo-tiny", weights=None)
    x = torch.rand(1, 6, 32, 32)
    ref = teacher.forward_features(x)[0]
    assert len(to_channels_last(teacher)) == 1  # the Conv3d patch embedding
    conv = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(teacher.forward_features(x)[0], ref, atol=1e-5)


class LayoutProbe:
    """Records the patch convolution's memory format at the first training batch."""

    def __init__(self) -> None:
        import lightning as L

        probe = self

        class _Probe(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    w = pl_module.student.patch_embed.proj.weight
                    probe.channels_last = not w.is_contiguous()
                    probe.compiled = "forward" in vars(pl_module.student)

        self.callback = _Probe()
        self.channels_last: bool | None = None
        self.compiled: bool | None = None


def test_a_run_with_compile_and_channels_last_trains_like_an_eager_one(tmp_path, aot_eager):
    from hyperkd import pretrain
    from hyperkd.models.mae import HyperspectralMAE

    store = toy_store(tmp_path / "store", chips=16)
    common = [f"data.store={store.root}", "trainer.max_steps=4", "trainer.figures=false", *TINY_STUDENT]
    losses, probes = [], []
    for speed in (["trainer.channels_last=auto"], ["trainer.compile=true", "trainer.channels_last=true"]):
        probe = LayoutProbe()
        run = tmp_path / f"run{len(losses)}"
        res = pretrain("mae", run, overrides=[*common, *speed], callbacks=[probe.callback])
        losses.append(logged(run, "train/loss"))
        probes.append(probe)
        student = HyperspectralMAE.from_pretrained(res.student_dir)  # exported after the layout is undone
        assert all(p.is_contiguous() for p in student.parameters())
    assert (probes[0].channels_last, probes[0].compiled) == (False, False)  # auto on CPU: no-op
    assert (probes[1].channels_last, probes[1].compiled) == (True, True)
    assert len(losses[0]) == 4
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


# -- item 2: the loss weight without a (B, C, H, W) copy of the valid mask ---------------------
def test_loss_weight_is_the_patchified_band_mask_times_the_patch_mask():
    student = tiny_module().student
    b, c, size = 3, student.in_chans, student.img_size
    gen = torch.Generator().manual_seed(0)
    rank = torch.rand(b, student.num_patches, generator=gen).argsort(1).argsort(1)
    mask = rank < int(0.6 * student.num_patches)  # the same count per sample, as maskers give
    valid = torch.rand(b, size, size, generator=gen) < 0.8
    expected = student.patchify(valid[:, None].float().expand(-1, c, -1, -1)) * mask[..., None].float()
    weight = student.loss_weight(mask, valid, torch.float32)
    assert weight.is_contiguous() and torch.equal(weight, expected)
    everywhere = student.loss_weight(mask, None, torch.float32)
    assert torch.equal(everywhere, mask[..., None].float().expand_as(expected))
    out = student(0.1 + 0.3 * torch.rand(b, c, size, size, generator=gen), mask, valid)
    assert torch.equal(out.weight, expected)
