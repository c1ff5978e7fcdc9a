"""One table over several runs and seeds, with the controls as first-class rows.

A HyperKD claim needs controls (the paper's table has none):

* ``no-KD``        the same student, same budget, plain MAE (the reference row);
* ``random-teacher KD``  distillation from a frozen *random-init* teacher of the same
  architecture — separates knowledge transfer from the regularisation any extra loss gives;
* ``untrained encoder``  the student architecture with random weights — what the
  architecture alone gives a downstream head;
* ``raw spectra``  a head on the pixel spectra, no encoder at all.

For every metric the table shows mean ± standard deviation over seeds and, for each row,
whether its difference from the reference row *exceeds the seed spread*: here that means
the two rows' mean ± std intervals do not overlap (|Δ| > std_row + std_ref). That is a
deliberately simple, conservative rule of thumb, not a significance test; with 2-3 seeds
nothing stronger is honest.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperkd.core.errors import HyperKDError

HEADLINE: tuple[str, ...] = ("overall_accuracy", "miou", "macro_f1", "rmse", "mae", "r2", "bias")
"""The downstream metrics a comparison table reports, and the only ones a fine-tune's
``scalars`` / ``metrics.json`` summary / CLI line show (classes first, then values); the
rest (per-class scores, confusion matrix...) stays in the full ``metrics``."""


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`HEADLINE` metrics present in ``metrics`` as floats (absent or ``None`` ones left out)."""
    return {k: float(metrics[k]) for k in HEADLINE if isinstance(metrics.get(k), (int, float))}


HIGHER_IS_BETTER = {
    "accuracy": True,
    "miou": True,
    "macro_f1": True,
    "psnr": True,
    "ssim": True,
    "r2": True,
    "rmse": False,
    "mae": False,
    "mse": False,
    "sam_deg": False,
    "loss": False,
}


def better_direction(metric: str) -> bool:
    """True when larger values of ``metric`` are better (by its last name part)."""
    key = metric.split("/")[-1].lower()
    for name, up in HIGHER_IS_BETTER.items():
        if key == name or key.endswith(name):
            return up
    return True


@dataclass
class Cell:
    """Mean, standard deviation and count of one metric of one row."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class Comparison:
    """The comparison table: ``rows[row][metric] -> Cell`` plus the verdicts vs ``reference``."""

    rows: dict[str, dict[str, Cell]]
    metrics: list[str]
    reference: str
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rule": "a difference 'exceeds the seed spread' when |mean - mean_ref| > std + std_ref",
            "metrics": self.metrics,
            "rows": {
                r: {
                    m: {
                        "mean": c.mean,
                        "std": c.std,
                        "n": c.n,
                        "values": c.values,
                        "vs_reference": self.verdicts.get(r, {}).get(m, ""),
                    }
                    for m, c in cells.items()
                }
                for r, cells in self.rows.items()
            },
        }

    def markdown(self, digits: int = 3) -> str:
        """A Markdown table: ``mean ± std`` per cell, with ``↑``/``↓`` where a row beats /
        trails the reference by more than the seed spread (``≈`` otherwise)."""
        head = "| row | " + " | ".join(self.metrics) + " |"
        lines = [head, "|---|" + "---|" * len(self.metrics)]
        for r, cells in self.rows.items():
            parts = []
            for m in self.metrics:
                c = cells.get(m)
                if c is None or not c.values:
                    parts.append("")
                    continue
                mark = {"better": " ↑", "worse": " ↓", "within spread": " ≈"}.get(
                    self.verdicts.get(r, {}).get(m, ""), ""
                )
                parts.append(f"{c.mean:.{digits}g} ± {c.std:.{digits - 1}g}{mark}")
            lines.append(
                f"| {r} (n={max((c.n for c in cells.values()), default=0)}) | " + " | ".join(parts) + " |"
            )
        return "\n".join(lines)


def compare(
    results: Iterable[Mapping[str, Any]],
    *,
    metrics: Sequence[str] | None = None,
    reference: str = "no-KD",
    order: Sequence[str] | None = None,
) -> Comparison:
    """Build the table from result records ``{"row": name, "seed": s, "metrics": {...}}``."""
    rows: dict[str, dict[str, Cell]] = {}
    seen_metrics: list[str] = []
    for rec in results:
        try:
            row, values = str(rec["row"]), rec["metrics"]
        except KeyError as exc:
            raise HyperKDError(f"comparison record lacks {exc.args[0]!r}: {dict(rec)!r:.120}") from None
        for m, v in values.items():
            if v is None or (isinstance(v, float) and math.isnan(v)) or not isinstance(v, (int, float)):
                continue
            rows.setdefault(row, {}).setdefault(m, Cell([])).values.append(float(v))
            if m not in seen_metrics:
                seen_metrics.append(m)
    if not rows:
        raise HyperKDError("nothing to compare: no result records with numeric metrics")
    chosen = list(metrics) if metrics else seen_metrics
    ordered = [r for r in (order or []) if r in rows] + [r for r in rows if r not in (order or [])]
    table = Comparison(rows={r: rows[r] for r in ordered}, metrics=chosen, reference=reference)
    ref = rows.get(reference)
    if ref is not None:
        for r, cells in table.rows.items():
            if r == reference:
                continue
            for m in chosen:
                a, b = cells.get(m), ref.get(m)
                if a is None or b is None or not a.values or not b.values:
                    continue
                delta = a.mean - b.mean
                if abs(delta) > a.std + b.std:
                    good = (delta > 0) == better_direction(m)
                    table.verdicts.setdefault(r, {})[m] = "better" if good else "worse"
                else:
                    table.verdicts.setdefault(r, {})[m] = "within spread"
    return table


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Result records from JSON files (one record, or a list of records, per file)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HyperKDError(f"{p}: cannot read result record ({exc})") from None
        out.extend(data if isinstance(data, list) else [data])
    return out
