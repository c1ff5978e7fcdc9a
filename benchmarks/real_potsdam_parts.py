"""The parts of ``benchmarks/real_potsdam.py`` that train no network: split lists, labelled pixels,
the scikit-learn baselines, seed aggregation, the generated page and the maps figure.

:func:`render_markdown` turns a results dict (the benchmark's ``results.json``) into
``docs/real-data.md``; :func:`aggregate` is
:func:`hyperkd.evaluation.compare.compare` over the runs (mean ± std over seeds, and the
"exceeds the seed spread" rule: |Δ mean| > std + std of the reference), and
:func:`verdicts` turns it into plain sentences.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("miou", "overall_accuracy", "macro_f1")
METRIC_TITLES = {"miou": "mIoU", "overall_accuracy": "accuracy", "macro_f1": "macro-F1"}


def aggregate(runs: Sequence[Mapping[str, Any]], reference: str | None = None) -> Any:
    """Mean ± std over seeds per row (:func:`hyperkd.evaluation.compare.compare`), verdicts vs ``reference``."""
    from hyperkd.evaluation.compare import compare

    order = list(dict.fromkeys(r["row"] for r in runs))
    records = [{"row": r["row"], "seed": r["seed"], "metrics": r["metrics"]} for r in runs]
    return compare(records, metrics=list(METRICS), reference=reference or order[0], order=order)


def per_class_means(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Row -> class -> IoU averaged over seeds (seeds where a class has no IoU are left out)."""
    acc: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for c, v in (r.get("per_class_iou") or {}).items():
            if v is not None:
                acc.setdefault(r["row"], {}).setdefault(c, []).append(float(v))
    return {row: {c: float(np.mean(v)) for c, v in cls.items()} for row, cls in acc.items()}


def comparison_sentence(name: str, ref: str, table: Any, metric: str = "miou") -> str:
    """``name`` against ``ref`` on ``metric``: beats / trails / within the seed spread, with the numbers.

    The rule is :mod:`hyperkd.evaluation.compare`'s: a difference counts when it exceeds the
    sum of the two rows' standard deviations over seeds.
    """
    a, b = table.rows[name][metric], table.rows[ref][metric]
    delta, spread = a.mean - b.mean, a.std + b.std
    title = METRIC_TITLES.get(metric, metric)
    if abs(delta) > spread:
        verb = "beats" if delta > 0 else "trails"
        ratio = (
            f"{abs(delta) / spread:.1f} x the seed spread {spread:.3f}" if spread > 0 else "no seed spread"
        )
        return f"{name} {verb} {ref} on {title} by {abs(delta):.3f} ({ratio})."
    return f"{name} and {ref} are within the seed spread on {title} (difference {delta:+.3f}, spread {spread:.3f})."


def _beyond(a: Any, b: Any) -> int:
    """+1 / -1 / 0: ``a`` above / below ``b`` beyond the seed spread (|Δ mean| > std_a + std_b), or not."""
    d = a.mean - b.mean
    return 0 if abs(d) <= a.std + b.std else (1 if d > 0 else -1)


def verdicts(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Plain sentences: each hyperkd row vs the random forest and raw spectra, KD vs its controls."""
    table = aggregate(runs)
    have = set(table.rows)
    kinds = {r["name"]: r["kind"] for r in rows if r["name"] in have}
    raw = next((n for n, k in kinds.items() if k == "raw"), None)
    rf = next((r["name"] for r in rows if r.get("recipe") == "rf" and r["name"] in have), None)
    out: list[str] = []
    ours = [n for n, k in kinds.items() if k != "sklearn"]
    if ours and rf is not None:
        best = max(ours, key=lambda n: table.rows[n]["miou"].mean)
        a, b = table.rows[best]["miou"], table.rows[rf]["miou"]
        beyond = abs(a.mean - b.mean) > a.std + b.std
        verdict = (
            ("beats" if a.mean > b.mean else "does not beat")
            if beyond
            else "is level with (within the seed spread of)"
        )
        encoders = [n for n in ours if kinds[n] != "raw"]
        adds = (
            [n for n in encoders if _beyond(table.rows[n]["miou"], table.rows[raw]["miou"]) > 0]
            if raw is not None
            else []
        )
        versus_raw = (
            f" Against {raw} (mIoU {table.rows[raw]['miou'].mean:.3f} ± {table.rows[raw]['miou'].std:.3f}), "
            f"{len(adds)} of {len(encoders)} encoder rows add to the spectra beyond the seed spread"
            + (f" ({', '.join(adds)})" if adds else "")
            + "."
            if raw is not None and encoders
            else ""
        )
        out.append(
            f"**In short: hyperkd's best row here, {best} (mIoU {a.mean:.3f} ± {a.std:.3f}), {verdict} "
            f"the {rf} (mIoU {b.mean:.3f} ± {b.std:.3f}).{versus_raw}**"
        )
    tuning = {r["name"]: dict(r.get("finetune") or {}) for r in rows}
    raws = [n for n, k in kinds.items() if k == "raw"]

    def raw_for(name: str) -> str | None:
        """The raw-spectra row fine-tuned exactly as ``name`` (same loss, epochs...), else the first."""
        same = [n for n in raws if tuning.get(n) == tuning.get(name)]
        return same[0] if same else raw

    for name in ours:
        kind = kinds[name]
        ref_raw = raw if kind == "raw" else raw_for(name)
        parts = [comparison_sentence(name, ref, table) for ref in (rf, ref_raw) if ref and ref != name]
        if kind != "raw" and ref_raw is not None:
            a, b = table.rows[name]["miou"], table.rows[ref_raw]["miou"]
            if a.mean - b.mean < -(a.std + b.std):
                same = "" if ref_raw == raw else f" fine-tuned the same way ({ref_raw})"
                parts.append(f"This encoder loses to raw spectra{same}: it is not yet useful for this task.")
            elif a.mean - b.mean <= a.std + b.std:
                parts.append("It adds nothing to the spectra beyond the seed spread.")
            else:
                parts.append("Here the encoder adds to the spectra.")
        if parts:
            out.append(" ".join(parts))
    kd = [
        r["name"]
        for r in rows
        if r["kind"] == "distill" and r.get("teacher") == "trained" and r["name"] in have
    ]
    ctrl = [
        r["name"]
        for r in rows
        if r["kind"] == "distill" and r.get("teacher") == "random" and r["name"] in have
    ]
    mae = [r["name"] for r in rows if r["kind"] == "pretrain" and r["name"] in have]
    for k in kd:
        for c in ctrl + mae:
            out.append("Knowledge transfer check: " + comparison_sentence(k, c, table))
    return out


def curve_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The label-scarce curve as markdown: one line per row, mIoU mean ± std at each fraction of the
    labelled training pixels (100 %: the row's main run)."""
    scarce = [r for r in runs if r.get("fraction") is not None]
    bases = list(dict.fromkeys(r["base"] for r in scarce))
    fractions = sorted({float(r["fraction"]) for r in scarce})
    cell: dict[tuple[str, float], list[float]] = {}
    for r in runs:
        base = r.get("base", r["row"])
        f = 1.0 if r.get("fraction") is None else float(r["fraction"])
        if base in bases:
            cell.setdefault((base, f), []).append(float(r["metrics"]["miou"]))
    cols = [*fractions, 1.0]
    lines = [
        "| row | " + " | ".join(f"{f:.0%} labels" for f in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for b in bases:
        vals = [cell.get((b, f)) for f in cols]
        lines.append(
            f"| {b} | "
            + " | ".join(
                f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}" if v else "" for v in vals
            )
            + " |"
        )
    return "\n".join(lines)


def curve_verdicts(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """At each fraction of the labels: every encoder row against raw spectra and the random forest."""
    kinds = {r["name"]: r["kind"] for r in rows}
    out: list[str] = []
    for f in sorted({float(r["fraction"]) for r in runs if r.get("fraction") is not None}):
        at = [r for r in runs if r.get("fraction") is not None and float(r["fraction"]) == f]
        table = aggregate(at)
        by_base = {r["base"]: r["row"] for r in at}
        raw = next((n for b, n in by_base.items() if kinds.get(b) == "raw"), None)
        rf = next((n for b, n in by_base.items() if kinds.get(b) == "sklearn"), None)
        for b, name in by_base.items():
            if kinds.get(b) in ("raw", "sklearn"):
                continue
            out += [comparison_sentence(name, ref, table) for ref in (raw, rf) if ref]
        if raw and rf:
            out.append(comparison_sentence(raw, rf, table))
    return out


def finetune_text(budget: Mapping[str, Any], prov: Mapping[str, Any]) -> str:
    """The fine-tuning settings in words (the benchmark's epochs if it set them, else the defaults)."""
    d = dict(prov.get("finetune_defaults") or {})
    if budget.get("finetune_epochs"):
        epochs = f"{budget['finetune_epochs']} epochs"
    elif d.get("min_steps") and d.get("batch_size") and prov.get("train_tiles"):
        batches = math.ceil(len(prov["train_tiles"]) / d["batch_size"])
        n = max(d["min_epochs"], math.ceil(d["min_steps"] / batches))
        epochs = f"at least {d['min_epochs']} epochs and {d['min_steps']} steps: {n} epochs of {batches} batches here"
    else:
        epochs = "its default epochs"
    extra = ", ".join(f"{k} `{d[k]}`" for k in ("loss", "fusion") if d.get(k))
    return epochs + (f", {extra}" if extra else "")


def render_markdown(results: Mapping[str, Any], figure: str | None = None) -> str:
    """The page ``docs/real-data.md`` from a results dict (``OUT/results.json``); ``figure``: its path from the page."""
    prov = results["provenance"]
    all_runs, rows = results["runs"], results["rows"]
    runs = [r for r in all_runs if r.get("fraction") is None]  # the main tables: all the labels
    ran = {r["row"] for r in runs}
    ref = next((r["name"] for r in rows if r["kind"] == "raw" and r["name"] in ran), None)
    table = aggregate(runs, reference=ref)
    seeds = ", ".join(str(s) for s in prov["seeds"])
    budget = prov["budget"]
    lines = [
        f"<!-- generated by `{prov['command']}`; do not edit by hand -->",
        "",
        "# hyperkd on real EnMAP tiles (Potsdam)",
        "",
        "Real EnMAP L2A imagery, not synthetic: the EnMAP-Box project's Potsdam tiles "
        f"({len(prov['train_tiles']) + len(prov['val_tiles'])} tiles of {prov['chip_size']} x "
        f"{prov['chip_size']} px, {prov['file_bands']} bands as exported by the EnMAP-Box; labels 0 = no label, "
        "1-6 = land cover; see `../shared/data/enmap-potsdam/SOURCE.md`). The tiles are prepared as they are "
        f"(`hyperkd.prepare`, {prov['bands']} usable bands; {prov['dropped']}) and split as the EnMAP-Box split them: "
        f"{len(prov['train_tiles'])} training tiles ({prov['pixels']['train']} labelled pixels), "
        f"{len(prov['val_tiles'])} validation tiles ({prov['pixels']['val']} labelled pixels, "
        f"on which every row is scored: {', '.join(prov['val_tiles'])}).",
        "",
        "## How this page was made",
        "",
        f"- command: `{prov['command']}` ({prov['date']}, {prov['elapsed_s']:.0f} s"
        + (f"; the runs took {prov['runs_time_s']:.0f} s in all" if prov.get("runs_time_s") else "")
        + "; the machine was shared, so times are upper bounds)",
        f"- machine: {prov['machine']}",
        f"- seeds: {seeds} (each row is trained once per seed; the data split is fixed)",
        *(
            [
                f"- {prov['reused']} of {len(all_runs)} runs were reused from an earlier invocation with the same settings"
            ]
            if prov.get("reused")
            else []
        ),
        f"- budget: pretraining and distillation {budget['pretrain_steps']} steps of {budget['batch_size']} chips; "
        f"fine-tuning on all training tiles with `hyperkd finetune`'s defaults unless a row says otherwise "
        f"({finetune_text(budget, prov)}; protocol: "
        f"{prov.get('protocol') or 'its default'}); random forest {budget['rf_trees']} trees",
        f"- teacher: {prov['teacher']['description']}",
        "",
        "## Results on the validation tiles",
        "",
        f"Mean ± std over seeds; ↑ / ↓ / ≈: better / worse than *{table.reference}* beyond the seed spread / "
        "within it (a difference exceeds the seed spread when |Δ mean| > std + std of the reference).",
        "",
        table.markdown(digits=3).replace(
            " | miou | overall_accuracy | macro_f1 |", " | mIoU | accuracy | macro-F1 |"
        ),
        "",
        "| row | what it is |",
        "|---|---|",
        *[f"| {r['name']} | {r['description']} |" for r in rows if r["name"] in table.rows],
        "",
        "## Per-class IoU (mean over seeds)",
        "",
    ]
    pcm = per_class_means(runs)
    classes = sorted({c for v in pcm.values() for c in v}, key=lambda c: float(c.split()[-1]))
    support = prov.get("val_support") or {}
    lines += [
        "| row | " + " | ".join(f"{c} ({support[c]} px)" if c in support else c for c in classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for row in table.rows:
        vals = pcm.get(row, {})
        lines.append(
            f"| {row} | " + " | ".join(f"{vals[c]:.3f}" if c in vals else "" for c in classes) + " |"
        )
    lines += ["", "## What the numbers say", ""]
    lines += [f"- {s}" for s in verdicts(runs, rows)]
    if any(r.get("fraction") is not None for r in all_runs):
        lines += [
            "",
            "## Label-scarce curve",
            "",
            "The same rows fine-tuned on a fraction of the labelled training pixels (validation mIoU, mean ± std "
            "over seeds). The subsets are nested (1 % inside 5 % inside 25 %), keep at least one pixel of every "
            "class, and are the same for every row and seed (`hyperkd finetune --label-fraction F`, subset seed 0); "
            "the random forest is trained on exactly the same pixels. This is where pretraining is supposed to matter.",
            "",
            curve_table(all_runs),
            "",
        ]
        lines += [f"- {s}" for s in curve_verdicts(all_runs, rows)]
    if figure:
        lines += [
            "",
            "## Maps of the validation tiles",
            "",
            f"{results.get('figure_caption', '')}",
            "",
            f"![maps of the validation tiles]({figure})",
        ]
    lines += [
        "",
        "Reproduce: `pip install -e '.[bench]'`, then "
        f"`{prov['command']}`; every run's metrics are in "
        "`runs/real_potsdam/results.json`.",
        "",
    ]
    return "\n".join(lines)


def maps_figure(
    titles: Sequence[str], rgbs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]], codes: Sequence[int], path: Path,
) -> Path:  # fmt: skip
    """One row per tile: false colour, labels, then each model's map (same class colours; grey = none)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from hyperkd.viz.maps import class_colors

    rgb = [(r / 255, g / 255, b / 255) for r, g, b in class_colors(len(codes))]
    cmap = ListedColormap(rgb).with_extremes(bad="lightgrey")
    lo, hi = min(codes) - 0.5, max(codes) + 0.5
    ncol = 2 + len(columns)
    fig = Figure(figsize=(2.3 * ncol, 2.7 * len(titles) + 0.7))
    axes = fig.subplots(len(titles), ncol, squeeze=False)
    for r, title in enumerate(titles):
        panels = [("false colour", rgbs[r]), ("labels", labels[r]), *((k, v[r]) for k, v in columns.items())]
        for c, (name, img) in enumerate(panels):
            ax = axes[r, c]
            if img.ndim == 3:
                ax.imshow(img)
            else:
                ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{title}\n{name}" if c == 0 else name, fontsize=8)
            ax.set_axis_off()
    fig.legend(
        handles=[Patch(color=rgb[i], label=f"class {c}") for i, c in enumerate(codes)]
        + [Patch(color="lightgrey", label="no label / no data")],
        loc="lower center",
        ncol=len(codes) + 1,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def dropped_text(store: Any) -> str:
    """The bands ``prepare`` dropped, in one phrase."""
    dropped = (store.manifest.get("attrs") or {}).get("dropped_bands") or {}
    if not dropped:
        return "no band dropped"
    reasons = sorted({r for d in dropped.values() for r in d.get("reasons", [])})
    nm = [d.get("center_nm") for d in dropped.values() if d.get("center_nm") is not None]
    span = f", {min(nm):.0f}-{max(nm):.0f} nm" if nm else ""
    return f"{len(dropped)} bands dropped by `prepare` ({', '.join(dropped)}{span}: {'; '.join(reasons)})"


def split_files(data: Path, name: str) -> list[Path]:
    """The image files a split CSV (``image,mask`` header, paths relative to ``data``) lists."""
    path = data / name
    if not path.exists():
        raise SystemExit(
            f"{path} does not exist: {data} should hold train_files.csv and validation_files.csv"
        )
    with path.open(newline="") as fh:
        files = [data / rec["image"] for rec in csv.DictReader(fh)]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"{path} lists {missing[0]}, which does not exist")
    return files


def pixels(store: Any, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled pixels of every chip: ``(X (n, bands) reflectance, y (n,) codes, chip index (n,))``.

    A pixel counts where the chip holds data and the label is not the ignore value (NaN in
    ``values``, as :func:`hyperkd.data.labels.align_labels` returns them): the pixels a
    hyperkd head trains or is scored on.
    """
    xs, ys, idx = [], [], []
    for i in range(len(store)):
        item = store[i]
        keep = item["valid"] & np.isfinite(values[i])
        xs.append(item["image"][:, keep].T)
        ys.append(values[i][keep])
        idx.append(np.full(int(keep.sum()), i))
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64), np.concatenate(idx)


def paste(arr: np.ndarray, tile: np.ndarray, row: int, col: int) -> np.ndarray:
    """``tile`` written into ``arr`` at (``row``, ``col``), growing ``arr`` (NaN) if needed."""
    if arr.shape[0] < row + tile.shape[0] or arr.shape[1] < col + tile.shape[1]:
        grown = np.full(
            (max(arr.shape[0], row + tile.shape[0]), max(arr.shape[1], col + tile.shape[1])), np.nan
        )
        grown[: arr.shape[0], : arr.shape[1]] = arr
        arr = grown
    arr[row : row + tile.shape[0], col : col + tile.shape[1]] = tile
    return arr


def sklearn_model(kind: str, seed: int, trees: int = 500) -> Any:
    """``rf``: random forest on reflectance; ``svm``: RBF SVM on standardised reflectance."""
    try:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC
    except ImportError:
        raise SystemExit(
            "the random forest and SVM rows need scikit-learn: pip install -e '.[bench]'"
        ) from None
    if kind == "rf":
        return RandomForestClassifier(n_estimators=trees, n_jobs=-1, random_state=seed)
    if kind == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale"))
    raise ValueError(f"unknown scikit-learn baseline {kind!r}; known: rf, svm")


def baseline_metrics(
    kind: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int,
    trees: int = 500,
) -> tuple[dict[str, Any], np.ndarray, Any]:
    """Fit a baseline on ``train`` pixels ``(X, codes)`` and score it on ``test``.

    Classes are the codes present in the training pixels (as hyperkd names them:
    ``class <code>``); metrics come from :func:`hyperkd.evaluation.metrics.classification_metrics`,
    exactly as for the hyperkd rows. Returns ``(metrics, predicted codes of test, model)``.
    """
    from hyperkd.evaluation.metrics import classification_metrics, confusion_matrix

    (xtr, ytr), (xte, yte) = train, test
    codes = np.unique(ytr)
    model = sklearn_model(kind, seed, trees).fit(xtr, ytr)
    pred = model.predict(xte)
    lookup = {int(c): i for i, c in enumerate(codes)}
    t = np.array([lookup.get(int(c), -1) for c in yte])
    p = np.array([lookup[int(c)] for c in pred])
    cm = confusion_matrix(p[t >= 0], t[t >= 0], len(codes))
    return classification_metrics(cm, [f"class {c:g}" for c in codes]), pred, model


# ----------------------------------------------------------------------------------------------
def write_generated(path: Path, block: str, begin: str, end: str) -> None:
    """Replace ``path``'s generated section (from the ``begin`` to the ``end`` marker) by ``block``,
    or append ``block`` when the page has none yet."""
    text = path.read_text()
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    """CPU, cores, load and versions, in one line."""
    import torch

    import hyperkd

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at start), {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, hyperkd {hyperkd.__version__}"
    )
