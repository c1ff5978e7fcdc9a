"""The TerraTorch backbone ``hyperkd_mae`` (hyperkd.integrations.terratorch).

Needs TerraTorch, which the default environment does not have, so this module is skipped there
(the skip names the reason). Run it in its own environment (docs/terratorch.md, "Tests")::

    python3 -m venv /tmp/venv-tt
    /tmp/venv-tt/bin/pip install -c constraints.txt -e '.[dev,terratorch]' terratorch==1.2.11
    /tmp/venv-tt/bin/python -m pytest -q tests/test_terratorch.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("terratorch", reason="TerraTorch is not installed (pip install 'hyperkd[terratorch]')")

import hyperkd.integrations.terratorch as htt
from hyperkd.core.errors import HyperKDError
from hyperkd.models.mae import HyperspectralMAE

from .test_hub import install_folder_in_cache, offline_cache, save_tiny_student  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> tuple[HyperspectralMAE, Path]:
    """A tiny 4-block enmap student and its saved folder."""
    return save_tiny_student(tmp_path_factory.mktemp("tt"), depth=4)


def reflectance(model: HyperspectralMAE, batch: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 0.05 + 0.4 * torch.rand(batch, model.in_chans, size, size, generator=g)


def test_the_registry_builds_a_backbone_of_feature_maps(student):
    from terratorch.registry import BACKBONE_REGISTRY

    model, folder = student
    assert "hyperkd_mae" in BACKBONE_REGISTRY and "terratorch_hyperkd_mae" in BACKBONE_REGISTRY
    backbone = BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder)).eval()
    assert backbone.out_channels == [32, 32, 32, 32] and backbone.patch_size == 4
    x = reflectance(model)
    with torch.no_grad():
        maps = backbone(x)
    assert isinstance(maps, list) and [tuple(m.shape) for m in maps] == [(2, 32, 4, 4)] * 4
    # the same features hyperkd's own heads read (tokens of every block, the last one normed)
    tokens = model.forward_features(x, layers=[0, 1, 2, 3])
    for got, want in zip(maps, tokens, strict=True):
        assert torch.allclose(got, want.transpose(1, 2).reshape(2, 32, 4, 4), atol=1e-6)
    # a subset of blocks, and input the datamodule already standardised
    picked = BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder), out_indices=[1, -1], standardize=False)
    assert picked.out_channels == [32, 32]
    with torch.no_grad():
        again = picked.eval()(model.standardize(x))
    assert torch.allclose(again[0], maps[1], atol=1e-5) and torch.allclose(again[1], maps[3], atol=1e-5)


def test_encoder_decoder_factory_trains_fcn_and_upernet(student):
    from terratorch.models import EncoderDecoderFactory

    model, folder = student
    x = reflectance(model)
    target = torch.randint(0, 6, (2, 16, 16))
    configs = {
        "FCNDecoder": {},
        "UperNetDecoder": {
            "necks": [
                {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
                {"name": "LearnedInterpolateToPyramidal"},
            ]
        },
    }
    for decoder, extra in configs.items():
        seg = EncoderDecoderFactory().build_model(
            task="segmentation",
            backbone="hyperkd_mae",
            backbone_model=str(folder),
            decoder=decoder,
            num_classes=6,
            **extra,
        )
        out = seg(x).output
        assert tuple(out.shape) == (2, 6, 16, 16), decoder
        torch.nn.functional.cross_entropy(out, target).backward()
        grad = seg.encoder.student.blocks[0].attn.qkv.weight.grad
        assert grad is not None and grad.abs().sum() > 0, decoder  # the encoder fine-tunes
        assert (
            not hasattr(seg.encoder.student, "decoder_blocks") or len(seg.encoder.student.decoder_blocks) == 0
        )


def test_other_chip_sizes_and_bad_inputs(student):
    from terratorch.models import EncoderDecoderFactory
    from terratorch.registry import BACKBONE_REGISTRY

    model, folder = student
    backbone = BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder)).eval()
    with torch.no_grad():
        assert tuple(backbone(reflectance(model, size=24))[-1].shape) == (2, 32, 6, 6)
    seg = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="hyperkd_mae",
        backbone_model=str(folder),
        decoder="FCNDecoder",
        num_classes=3,
    )
    with torch.no_grad():  # TerraTorch pads 18 px to 20 (a multiple of the patch) and crops back
        assert tuple(seg.eval()(reflectance(model, size=18)).output.shape) == (2, 3, 18, 18)
    with pytest.raises(HyperKDError, match=r"expects \(B, 202, H, W\) reflectance .* got \(2, 6, 16, 16\)"):
        backbone(torch.zeros(2, 6, 16, 16))
    with pytest.raises(HyperKDError, match="needs model=FOLDER_OR_REPO"):
        BACKBONE_REGISTRY.build("hyperkd_mae")
    # hyperkd's unknown-name error is a KeyError, which TerraTorch's registry would swallow
    with pytest.raises(HyperKDError, match="unknown student 'nope-mae-huge'"):
        BACKBONE_REGISTRY.build("hyperkd_mae", model="nope-mae-huge")
    with pytest.raises(HyperKDError, match="out_indices"):
        BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder), out_indices=[4])


def test_a_hub_repo_and_random_weights(student, offline_cache):  # noqa: F811
    from terratorch.registry import BACKBONE_REGISTRY

    model, folder = student
    install_folder_in_cache(offline_cache, "lab/enmap-mae", folder, revision="v1")
    x = reflectance(model)
    local = BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder)).eval()
    hub = BACKBONE_REGISTRY.build("hyperkd_mae", model="hf-hub:lab/enmap-mae@v1").eval()
    fresh = BACKBONE_REGISTRY.build("hyperkd_mae", model=str(folder), pretrained=False).eval()
    with torch.no_grad():
        assert torch.equal(local(x)[-1], hub(x)[-1])
        assert not torch.allclose(local(x)[-1], fresh(x)[-1])
    assert json.loads((folder / "config.json").read_text())["architecture"] == "mae-tiny"
    assert isinstance(htt.hyperkd_mae(model=str(folder)), htt.HyperKDBackbone)


def test_the_yaml_in_the_docs_fits(student, tmp_path, monkeypatch):
    """The TerraTorch config of docs/terratorch.md, as written there, under ``fit`` (one batch)."""
    import re
    import shutil

    _, folder = student
    doc = (Path(__file__).resolve().parents[1] / "docs" / "terratorch.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 1 and "backbone: hyperkd_mae" in blocks[0]
    (tmp_path / "segmentation.yaml").write_text(blocks[0], encoding="utf-8")
    shutil.copytree(folder, tmp_path / "student")  # backbone_model: student
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["terratorch"])
    cli = htt.main(["fit", "--config", "segmentation.yaml", "--trainer.fast_dev_run=true"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert isinstance(cli.model.model.encoder, htt.HyperKDBackbone)
    assert cli.model.model.encoder.out_channels == [32] * 4 and cli.model.model.encoder.training
