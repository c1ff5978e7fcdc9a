"""What fine-tuning and evaluation return: metrics, the chips scored, where things were written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperkd.evaluation.compare import headline


@dataclass
class EvalResult:
    """Metrics of one model on one set of chips, and where they were written."""

    metrics: dict[str, Any]
    chips: list[int]
    store: Path
    out: Path | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def scalars(self) -> dict[str, float]:
        """The headline numbers only (accuracy, mIoU, macro F1 / RMSE, MAE, R2, bias)."""
        return headline(self.metrics)


@dataclass
class FinetuneResult:
    """What :func:`~hyperkd.evaluation.finetune.finetune` made: the run folder, the saved
    model and its test metrics."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    settings: dict[str, Any]
    figures: list[Path] = field(default_factory=list)

    @property
    def scalars(self) -> dict[str, float]:
        """The headline test numbers only (for tables over runs and seeds)."""
        return headline(self.metrics)


__all__ = ["EvalResult", "FinetuneResult"]
