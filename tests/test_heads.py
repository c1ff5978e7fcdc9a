"""Pixel-resolution heads (fused, upernet), their raw-spectra controls, and the segmentation losses."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hyperkd.core.errors import HyperKDError
from hyperkd.core.sensors import get_sensor
from hyperkd.evaluation.tasks import RegressionTask, SegmentationTask
from hyperkd.models.heads import FusedHead, PixelCNNHead, TokenCNNHead, UPerNetHead
from hyperkd.models.mae import build_student
from hyperkd.models.pixel import PROTOCOLS, PixelModel, default_layers
from hyperkd.training.finetune import (
    FinetuneModule,
    class_weights_from_counts,
    segmentation_loss,
)

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture

TASK = SegmentationTask(label="landcover", name="landcover", classes=("a", "b", "c"))
_ALL = get_sensor("enmap", "all")
SENSOR = _ALL.select(_ALL.band_names[::28])  # 8 bands: small and fast
TINY = dict(embed_dim=32, depth=4, num_heads=2, decoder_embed_dim=16, decoder_depth=1, spectral_dim=8)


def _student(patch: int = 4, size: int = 16):
    torch.manual_seed(0)
    return build_student("mae-tiny", sensor=SENSOR, img_size=size, patch_size=patch, **TINY)


def _x(b: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, SENSOR.num_bands, size, size, generator=g) * 0.4


def test_default_layers_spread_over_the_depth_and_token_protocols_read_the_last():
    assert default_layers("fused", 4) == (0, 1, 2, 3) and default_layers("upernet", 12) == (2, 5, 8, 11)
    assert default_layers("fused", 2) == (0, 1) and default_layers("frozen", 12) == (-1,)
    model = PixelModel.build(TASK, encoder=_student(), protocol="fused")
    assert model.layers == (0, 1, 2, 3) and model.config["layers"] == [0, 1, 2, 3]


@pytest.mark.parametrize("protocol", ["fused", "upernet", "fused-full"])
def test_pixel_heads_see_single_pixels_through_the_spectra_not_only_patches(protocol):
    """Changing one pixel's spectrum (encoder features held fixed) changes the outputs only in a
    small window around it: the head works at pixel resolution. A token head cannot do this."""
    model = PixelModel.build(TASK, encoder=_student(patch=8), protocol=protocol).eval()
    x = _x()
    feats = model.features(x)
    y = x.clone()
    y[:, :, 8, 8] += 0.3
    diff = (model.head_forward(feats, y) - model.head_forward(feats, x)).abs().amax((0, 1))
    assert diff[8, 8] > 0
    far = diff.clone()
    far[5:12, 5:12] = 0  # upernet's pyramid pooling spreads a little everywhere; the rest is local
    assert far.max() < diff[8, 8] * (0.2 if protocol == "upernet" else 1e-6)
    with pytest.raises(HyperKDError, match="pass the image too"):
        model.head_forward(feats)


def test_the_raw_control_is_the_same_head_without_encoder_features():
    enc = PixelModel.build(TASK, encoder=_student(), protocol="fused")
    raw = PixelModel.build(TASK, sensor=SENSOR, img_size=16, protocol="fused")
    assert isinstance(enc.head, FusedHead) and isinstance(raw.head, FusedHead)
    assert enc.head.features is not None and raw.head.features is None and raw.features(_x()) is None
    # every weight of the raw head has a twin of the same shape in the encoder's head but the fusion input
    enc_shapes = {k: v.shape for k, v in enc.head.state_dict().items()}
    for k, v in raw.head.state_dict().items():
        assert k in enc_shapes and (enc_shapes[k] == v.shape or k == "fuse.0.weight"), k
    up = PixelModel.build(TASK, sensor=SENSOR, img_size=16, protocol="upernet")
    assert isinstance(up.head, UPerNetHead) and up.head.levels == 0 and up(_x()).shape == (2, 3, 16, 16)
    # the token protocols keep their heads, raw control included (saved models stay loadable)
    assert isinstance(
        PixelModel.build(TASK, sensor=SENSOR, img_size=16, protocol="frozen").head, PixelCNNHead
    )
    assert isinstance(PixelModel.build(TASK, encoder=_student(), protocol="frozen").head, TokenCNNHead)


@pytest.mark.parametrize("patch,layers", [(4, None), (8, None), (4, (3, 0)), (8, (-1,))])
def test_upernet_levels_go_shallow_to_deep_at_finer_to_coarser_strides(patch, layers):
    model = PixelModel.build(TASK, encoder=_student(patch=patch), protocol="upernet", layers=layers)
    assert list(model.layers) == sorted(model.layers, key=lambda i: i % 4)
    head = model.head
    strides = [head._stride(j) for j in range(head.levels)]
    assert strides[-1] == patch and strides == sorted(strides) and min(strides) >= 1
    assert model(_x()).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("protocol", ["fused", "upernet", "fused-full"])
def test_new_protocols_save_reload_and_freeze_or_train_the_encoder(protocol, tmp_path):
    model = PixelModel.build(TASK, encoder=_student(), protocol=protocol).eval()
    trains = protocol == "fused-full"
    assert model.encoder_frozen is not trains
    assert all(p.requires_grad is trains for p in model.encoder.parameters())
    model.save(tmp_path / "m")
    again = PixelModel.load(tmp_path / "m").eval()
    assert again.protocol == protocol and again.layers == model.layers
    torch.testing.assert_close(again(_x()), model(_x()))


def test_a_model_saved_before_the_pixel_heads_still_loads(tmp_path):
    """config.json of the token protocols, without ``layers`` (the oldest form): same head, same keys."""
    model = PixelModel.build(TASK, encoder=_student(), protocol="frozen").eval()
    model.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["layers"]
    cfg_path.write_text(json.dumps(cfg))
    again = PixelModel.load(tmp_path / "old").eval()
    assert again.protocol == "frozen" and again.layers == (-1,) and isinstance(again.head, TokenCNNHead)
    assert "head.body.0.weight" in again.state_dict()
    torch.testing.assert_close(again(_x()), model(_x()))
    with pytest.raises(HyperKDError, match="protocol must be one of fused"):
        PixelModel({**cfg, "protocol": "probe"})
    assert PROTOCOLS[0] == "fused"


def test_class_weights_are_inverse_sqrt_frequency_with_unit_pixel_mean_and_clipped():
    w = class_weights_from_counts([900, 100, 0])
    f = torch.tensor([0.9, 0.1])
    expect = f.rsqrt() / (f * f.rsqrt()).sum()
    torch.testing.assert_close(w[:2], expect)
    assert w[2] == 10.0  # a class absent from training: the clip value (never in the loss)
    assert class_weights_from_counts([10**6, 1])[1] == 10.0  # a rare class is clipped
    with pytest.raises(HyperKDError, match="no labelled training pixel"):
        class_weights_from_counts([0, 0])


def test_losses_ignore_unlabelled_pixels_and_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.randint(0, 3, (2, 4, 4), generator=g)
    t[0, 0] = -1
    w = torch.tensor([0.5, 1.0, 2.0])
    for loss in ("ce", "weighted", "focal"):
        a = segmentation_loss(out, t, -1, loss, w)
        changed = out.clone()
        changed[0, :, 0] = 100.0  # logits at ignored pixels do not matter
        torch.testing.assert_close(segmentation_loss(changed, t, -1, loss, w), a)
    keep = t != -1
    logp = F.log_softmax(out, 1).permute(0, 2, 3, 1)[keep]
    lt = logp.gather(1, t[keep][:, None])[:, 0]
    torch.testing.assert_close(segmentation_loss(out, t, -1, "ce"), -lt.mean())
    wt = w[t[keep]]
    torch.testing.assert_close(segmentation_loss(out, t, -1, "weighted", w), -(wt * lt).sum() / wt.sum())
    torch.testing.assert_close(segmentation_loss(out, t, -1, "focal"), -((1 - lt.exp()) ** 2 * lt).mean())
    empty = torch.full_like(t, -1)
    assert segmentation_loss(out.requires_grad_(), empty, -1, "focal").item() == 0.0


def test_loss_choices_are_checked_against_the_task():
    with pytest.raises(HyperKDError, match="loss must be one of auto, ce, weighted, focal"):
        FinetuneModule(task=TASK, sensor=SENSOR, img_size=16, loss="dice")
    reg = RegressionTask(label="soc", name="soc", unit="g/kg")
    with pytest.raises(HyperKDError, match="is for segmentation tasks"):
        FinetuneModule(task=reg, sensor=SENSOR, img_size=16, loss="focal")
    with pytest.raises(HyperKDError, match="class_weights has 2 values"):
        FinetuneModule(task=TASK, sensor=SENSOR, img_size=16, loss="weighted", class_weights=[1.0, 2.0])


def test_the_cache_keeps_encoder_features_and_the_head_still_reads_each_batchs_spectra():
    module = FinetuneModule(task=TASK, encoder=_student(), protocol="fused")
    module.model.eval()
    x = _x(3)
    batch = {"image": x, "index": torch.tensor([4, 5, 6])}
    first = module.forward_batch(batch)
    assert module.cache is not None and module.cache.misses == 3
    torch.testing.assert_close(first, module.model(x))
    y = x.clone()
    y[:, :, 3, 3] += 0.5  # same chip ids: the cached tokens are reused, the new spectra are read
    again = module.forward_batch({"image": y, "index": torch.tensor([4, 5, 6])})
    assert module.cache.hits == 3 and not torch.equal(again, first)
    full = FinetuneModule(task=TASK, encoder=_student(), protocol="fused-full")
    assert full.cache is None and full.model.trainable_groups()[1]


def test_weighted_loss_counts_the_training_labels_when_fitting_starts(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(4):
        t = torch.zeros(16, 16, dtype=torch.long)
        t[:2] = 1  # class 1: 1/8 of the pixels, class 2 absent, some unlabelled
        t[-1] = -1
        data.append({"image": torch.rand(SENSOR.num_bands, 16, 16, generator=g), "target": t, "index": i})
    module = FinetuneModule(task=TASK, sensor=SENSOR, img_size=16, loss="weighted", hidden=64)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=2))
    counts = torch.tensor([4 * 16 * 13, 4 * 16 * 2, 0])
    torch.testing.assert_close(torch.tensor(module.class_weights), class_weights_from_counts(counts))
    assert module.hparams["class_weights"] == module.class_weights


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")
@pytest.mark.parametrize("protocol", ["fused", "upernet"])
def test_predict_maps_a_scene_with_the_pixel_resolution_protocols(protocol, tmp_path):
    """A fine-tuned fused / upernet model (saved, reloaded from its folder) maps a whole L2A scene:
    on the scene's grid, class codes only where there is data, the same map whatever the block size."""
    import importlib.util
    from pathlib import Path

    import numpy as np
    import rasterio

    from hyperkd.evaluation.predict import predict

    spec = importlib.util.spec_from_file_location("enmap_fx", Path(__file__).parent / "data/enmap/data.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)  # type: ignore[union-attr]
    scene = fx.write_l2a_product(tmp_path / "scenes")
    task = SegmentationTask(label="landcover", name="landcover", classes=("w", "g", "r"), codes=(1, 2, 3))
    torch.manual_seed(0)
    student = build_student("mae-tiny", sensor=get_sensor("enmap", "all"), img_size=16, patch_size=4, **TINY)
    PixelModel.build(task, encoder=student, protocol=protocol).eval().save(tmp_path / "model")
    a = predict(tmp_path / "model", [scene], tmp_path / "a", overlap=4, progress=False)[0]
    b = predict(tmp_path / "model", [scene], tmp_path / "b", overlap=4, block=10, progress=False)[0]
    image = next(scene.glob("*SPECTRAL_IMAGE.TIF"))
    with rasterio.open(image) as src, rasterio.open(a.path) as out, rasterio.open(b.path) as other:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        ids = out.read(1)
        np.testing.assert_array_equal(ids, other.read(1))
    missing = fx.footprint_mask(40, 48, 12)
    assert (ids[missing] == 255).all() and set(np.unique(ids[~missing])) <= {1, 2, 3}


def test_the_residual_fused_head_starts_as_the_raw_spectra_head_and_its_features_can_move_it():
    """fusion=residual: the correction's last layer starts at zero, so with the raw head's spectra-path
    weights the encoder model predicts exactly what raw spectra do; the correction still gets gradient."""
    enc = PixelModel.build(TASK, encoder=_student(), protocol="fused")
    raw = PixelModel.build(TASK, sensor=SENSOR, img_size=16, protocol="fused")
    head = enc.head
    assert isinstance(head, FusedHead) and head.fusion == "residual" and enc.config["fusion"] == "residual"
    assert head.correction is not None and any(isinstance(m, torch.nn.Dropout2d) for m in head.features)
    missing = head.load_state_dict(raw.head.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("features.", "correction.")) for k in missing)
    x = _x()
    enc.eval(), raw.eval()
    # the same standardised spectra on both sides (the raw model has the sensor's own statistics)
    s = enc.spectra(x)
    torch.testing.assert_close(head(s, enc.features(x), (16, 16)), raw.head(s, None, (16, 16)))
    enc.train()
    F.cross_entropy(enc(x), torch.randint(0, 3, (2, 16, 16))).backward()
    last = head.correction[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.encoder.parameters())  # the encoder stays fixed


def test_a_fused_model_saved_before_the_residual_fusion_loads_as_concat(tmp_path):
    model = PixelModel.build(TASK, encoder=_student(), protocol="fused", fusion="concat").eval()
    assert model.head.correction is None and model.head.fusion == "concat"
    model.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["fusion"]  # configs written before the key existed
    cfg_path.write_text(json.dumps(cfg))
    again = PixelModel.load(tmp_path / "old").eval()
    assert again.head.fusion == "concat"
    torch.testing.assert_close(again(_x()), model(_x()))
    with pytest.raises(HyperKDError, match="fusion must be one of residual, concat"):
        PixelModel.build(TASK, encoder=_student(), fusion="sum")


def test_the_default_loss_is_weighted_for_segmentation_and_mse_for_regression_and_epochs_reach_120_steps():
    from hyperkd.training.finetune import DEFAULT_LOSS, MIN_STEPS, default_epochs, resolve_loss

    reg = RegressionTask(label="soc", name="soc")
    assert (
        DEFAULT_LOSS == "auto"
        and resolve_loss("auto", TASK) == "weighted"
        and resolve_loss("auto", reg) == "ce"
    )
    assert resolve_loss("focal", TASK) == "focal"
    with pytest.raises(HyperKDError, match="is for segmentation tasks"):
        resolve_loss("weighted", reg)
    assert default_epochs(2) == 60 and default_epochs(1) == MIN_STEPS and default_epochs(100) == 20
    assert default_epochs(5) * 5 >= MIN_STEPS > (default_epochs(5) - 1) * 5 and default_epochs(7) == 20
    assert FinetuneModule(task=TASK, sensor=SENSOR, img_size=16).loss_name == "weighted"


@pytest.mark.parametrize("fusion,feature_dim", [("residual", 12), ("concat", 12), ("residual", 0)])
def test_a_window_of_the_fused_head_equals_the_whole_chip_inside_its_margin(fusion, feature_dim):
    # training on crops (finetune --train-crop) must train the function used on whole chips
    torch.manual_seed(0)
    head = FusedHead(5, 3, feature_dim, width=8, fusion=fusion)
    for p in head.parameters():  # the correction's last layer starts at zero: make it count
        torch.nn.init.normal_(p, std=0.3)
    head.eval()  # BatchNorm on running statistics: a pixel's output depends on its context only
    size, m = (20, 20), FusedHead.crop_margin
    spectra = torch.randn(2, 5, *size)
    tokens = torch.randn(2, feature_dim, 5, 5) if feature_dim else None
    whole = head(spectra, tokens, size)
    for y0, x0, c in [(6, 7, 6), (0, 0, 8), (12, 11, 8)]:  # inside, at a corner, at the far edges
        r = (max(0, y0 - m), min(20, y0 + c + m), max(0, x0 - m), min(20, x0 + c + m))
        out = head(spectra[..., r[0] : r[1], r[2] : r[3]], tokens, size, r)
        crop = out[..., y0 - r[0] : y0 - r[0] + c, x0 - r[2] : x0 - r[2] + c]
        torch.testing.assert_close(crop, whole[..., y0 : y0 + c, x0 : x0 + c], atol=1e-5, rtol=1e-5)
    # one pixel less of context and the crop's border is wrong: the margin is the real one
    r = (y0 - m + 1, y0 + c, x0 - m + 1, x0 + c)
    out = head(spectra[..., r[0] : r[1], r[2] : r[3]], tokens, (20, 20), r)
    assert not torch.allclose(
        out[..., m - 1, m - 1 : m - 1 + c - 1], whole[..., y0, x0 : x0 + c - 1], atol=1e-4
    )
