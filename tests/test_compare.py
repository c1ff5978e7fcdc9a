"""The comparison table: means, spreads and the seed-spread verdicts."""

from __future__ import annotations

import pytest

from hyperkd.core.errors import HyperKDError
from hyperkd.evaluation.compare import better_direction, compare


def recs(row, values, metric="accuracy"):
    return [{"row": row, "seed": i, "metrics": {metric: v}} for i, v in enumerate(values)]


def test_means_spreads_and_verdicts():
    records = (
        recs("no-KD", [0.70, 0.72, 0.74])
        + recs("HyperKD", [0.80, 0.81, 0.82])
        + recs("random-teacher KD", [0.71, 0.75, 0.79])
        + recs("raw spectra", [0.50, 0.52, 0.54])
    )
    t = compare(records, order=["no-KD", "HyperKD"])
    assert list(t.rows) == ["no-KD", "HyperKD", "random-teacher KD", "raw spectra"]
    cell = t.rows["no-KD"]["accuracy"]
    assert cell.mean == pytest.approx(0.72) and cell.std == pytest.approx(0.02) and cell.n == 3
    assert t.verdicts["HyperKD"]["accuracy"] == "better"  # 0.81-0.72 > 0.01+0.02
    assert t.verdicts["random-teacher KD"]["accuracy"] == "within spread"  # 0.03 < 0.04+0.02
    assert t.verdicts["raw spectra"]["accuracy"] == "worse"
    md = t.markdown()
    assert "| HyperKD (n=3) | 0.81 ± 0.01 ↑ |" in md
    d = t.to_dict()
    assert d["rows"]["raw spectra"]["accuracy"]["vs_reference"] == "worse"


def test_lower_is_better_metrics_flip_the_verdict():
    assert better_direction("val/rmse") is False and better_direction("val/psnr") is True
    t = compare(recs("no-KD", [1.0, 1.1], "rmse") + recs("HyperKD", [0.5, 0.52], "rmse"))
    assert t.verdicts["HyperKD"]["rmse"] == "better"


def test_nan_and_missing_values_are_skipped_and_empty_input_is_an_error():
    t = compare([{"row": "a", "seed": 0, "metrics": {"x": float("nan"), "y": 1.0}}])
    assert "x" not in t.rows["a"] and t.rows["a"]["y"].std == 0.0
    with pytest.raises(HyperKDError, match="nothing to compare"):
        compare([])
    with pytest.raises(HyperKDError, match="lacks 'metrics'"):
        compare([{"row": "a"}])


def test_compare_cli_reads_records_and_quickstart_reports(tmp_path, capsys):
    import json

    from hyperkd.cli import main

    (tmp_path / "a.json").write_text(json.dumps(recs("no-KD", [0.5, 0.6])))
    (tmp_path / "report.json").write_text(json.dumps({"records": recs("HyperKD", [0.9, 0.91])}))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "| HyperKD (n=2) | 0.905 ± 0.0071 ↑ |" in out
    assert main(["compare", str(tmp_path / "missing.json")]) == 1
    assert "cannot read result record" in capsys.readouterr().err


def test_headline_keeps_the_table_metrics_that_are_numbers():
    from hyperkd.evaluation.compare import HEADLINE, headline

    m = {"miou": 0.5, "overall_accuracy": 1, "r2": None, "per_class": {"a": {}}, "pixels": 9, "rmse": 2.5}
    assert headline(m) == {"overall_accuracy": 1.0, "miou": 0.5, "rmse": 2.5}
    assert list(headline(m)) == [k for k in HEADLINE if k in ("overall_accuracy", "miou", "rmse")]
