"""`fastattr eval`: every registered method (with and without IDGI for path methods, standard and
guided backward where registered) over the bundled evaluation set, scored with the papers'
metrics, written as a paper-style table (markdown + CSV) with curve and map-grid plots."""
from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

METRICS = ("insertion", "deletion", "pic_pair", "pic_entropy", "pic_msssim", "localization")
# table columns per metric: (column title, key in a row's scores, higher is better)
COLUMNS = {
    "insertion": [("Insertion ↑", "insertion", True)],
    "deletion": [("Deletion ↓", "deletion", False)],
    "pic_pair": [("SIC pair ↑", "sic_pair", True), ("AIC pair ↑", "aic_pair", True)],
    "pic_entropy": [("SIC ent ↑", "sic_entropy", True), ("AIC ent ↑", "aic_entropy", True)],
    "pic_msssim": [("SIC MS-SSIM ↑", "sic_msssim", True), ("AIC MS-SSIM ↑", "aic_msssim", True)],
    "localization": [("Loc AUC ↑", "loc_auc", True), ("Loc F1 ↑", "loc_f1", True), ("Loc MAE ↓", "loc_mae", False),
                     ("Loc AUC abs ↑", "loc_auc_abs", True)],
}


@dataclass
class Variant:
    """One table row: a method with its IDGI flag and backward mode."""

    method: str
    idgi: bool = False
    backward: str = "standard"

    @property
    def label(self) -> str:
        return self.method + (" + IDGI" if self.idgi else "") + (" (guided bwd)" if self.backward == "guided" else "")


@dataclass
class RowResult:
    variant: Variant
    scores: dict = field(default_factory=dict)
    seconds_per_image: float = float("nan")
    grad_evals_per_image: float = float("nan")
    error: str | None = None
    maps: torch.Tensor | None = None
    curves: dict = field(default_factory=dict)


def variants(methods: list[str] | None = None) -> list[Variant]:
    """Rows for `methods` (None: all of fastattr.methods.METHODS now): path methods with and
    without IDGI; path methods also with the guided backward when 'guided' is registered."""
    from fastattr.backward import BACKWARDS
    from fastattr.methods import METHODS

    names = sorted(METHODS) if not methods else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; registered: {sorted(METHODS)}")
    # the guided non-linearity is defined for IG-style path methods (SPEC.md "GNL")
    backwards = ["standard"] + (["guided"] if "guided" in BACKWARDS else [])
    rows = []
    for b in backwards:
        for m in names:
            spec = METHODS[m]
            if b != "standard" and not spec.path:
                continue
            rows.append(Variant(m, False, b))
            if spec.path:
                rows.append(Variant(m, True, b))
    return rows


def _check_metrics(metrics: list[str] | None) -> list[str]:
    if not metrics:
        return list(METRICS)
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"metrics: unknown {bad}; choose from {list(METRICS)}")
    return list(metrics)


def _attribute(model, es, v: Variant, steps: int):
    from fastattr.api import explain
    from fastattr.methods import METHODS

    kw = {"steps": steps} if METHODS[v.method].path else {}
    t0 = time.perf_counter()
    ex = explain(model, es.images, es.labels, method=v.method, idgi=v.idgi, backward=v.backward, **kw)
    return ex.attributions, (time.perf_counter() - t0) / len(es), ex.grad_evals / len(es)


def _score(model, es, maps, metrics: list[str], min_pred: float) -> tuple[dict, dict]:
    from fastattr import metrics as M

    s, curves = {}, {}
    if "insertion" in metrics:
        sc, curves["insertion"] = M.insertion(model, es.images, maps, es.labels, return_curves=True)
        s["insertion"] = float(sc.mean())
    if "deletion" in metrics:
        sc, curves["deletion"] = M.deletion(model, es.images, maps, es.labels, return_curves=True)
        s["deletion"] = float(sc.mean())
    if "pic_pair" in metrics:
        r = M.pic(model, es.images, maps, es.labels, random_masks=es.random_masks, min_pred=min_pred)
        s["sic_pair"], s["aic_pair"] = r.sic, r.aic
        s["pic_pair_kept"] = sum(x is None for x in r.per_image["sic_skip"])
    for info in ("entropy", "msssim"):
        if f"pic_{info}" in metrics:
            r = M.pic(model, es.images, maps, es.labels, variant="idgi", info=info)
            s[f"sic_{info}"], s[f"aic_{info}"] = r.sic, r.aic
    if "localization" in metrics and bool(es.has_mask.any()):
        k = es.has_mask
        loc = M.localization(maps[k], es.masks[k])
        s["loc_auc"], s["loc_f1"], s["loc_mae"] = (float(loc[x].nanmean()) for x in ("auc", "f1", "mae"))
        # also on |A|: signed maps of the plain path methods cancel within objects (SPEC ranks by
        # the signed channel sum; many papers show |A|), so both views are reported
        s["loc_auc_abs"] = float(M.localization(maps[k], es.masks[k], absolute=True)["auc"].nanmean())
    return s, curves


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def write_tables(rows: list[RowResult], metrics: list[str], out: Path, header: str) -> Path:
    """table.md (best value per column in bold) and table.csv; returns the markdown path."""
    cols = [c for m in metrics for c in COLUMNS[m]]
    best = {}
    for _, key, hi in cols:
        vals = [r.scores.get(key) for r in rows if r.error is None and r.scores.get(key) is not None
                and not math.isnan(r.scores.get(key))]
        if vals:
            best[key] = max(vals) if hi else min(vals)
    lines = [header, "", "| Method | " + " | ".join(c[0] for c in cols) + " | s / image | grad evals / image |",
             "|---|" + "---:|" * (len(cols) + 2)]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.variant.label} | " + " | ".join("—" for _ in cols) + f" | error: {r.error} | |")
            continue
        cells = []
        for _, key, _ in cols:
            v = r.scores.get(key)
            txt = _fmt(v)
            cells.append(f"**{txt}**" if key in best and v == best[key] else txt)
        lines.append(f"| {r.variant.label} | " + " | ".join(cells)
                     + f" | {r.seconds_per_image:.2f} | {r.grad_evals_per_image:.0f} |")
    md = out / "table.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(out / "table.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "idgi", "backward"] + [k for _, k, _ in cols]
                   + ["seconds_per_image", "grad_evals_per_image", "error"])
        for r in rows:
            w.writerow([r.variant.method, r.variant.idgi, r.variant.backward]
                       + [r.scores.get(k, "") for _, k, _ in cols]
                       + [r.seconds_per_image, r.grad_evals_per_image, r.error or ""])
    return md


def plot_curves(rows: list[RowResult], out: Path) -> Path | None:
    """curves.png: mean insertion and deletion curves (over images) of every row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = [k for k in ("insertion", "deletion") if any(k in r.curves for r in rows)]
    if not kinds:
        return None
    fig = Figure(figsize=(5.5 * len(kinds), 4.2), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    for ax, kind in zip(axes, kinds):
        for r in rows:
            if kind in r.curves:
                y = r.curves[kind].double().mean(0).numpy()
                ax.plot(np.linspace(0, 1, len(y)), y, label=r.variant.label,
                        linestyle="--" if r.variant.idgi else "-")
        ax.set_xlabel("fraction of pixels " + ("inserted" if kind == "insertion" else "deleted"))
        ax.set_ylabel("p(class), mean over images")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    path = out / "curves.png"
    FigureCanvasAgg(fig)  # a line plot: full-colour PNG, no size cap needed (tens of KB)
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path


def run_eval(methods: list[str] | None, metrics: list[str] | None, steps: int, out_dir: str,
             progress: bool = True, max_images: int | None = None, rows: list[Variant] | None = None) -> Path:
    """Evaluate every variant (or the given rows) on the bundled evaluation set with
    EfficientNet-Lite0; writes table.md, table.csv, curves.png and maps.png into out_dir;
    returns the table.md path."""
    from tqdm.auto import tqdm

    from fastattr.evalset import MIN_PROB, load_evalset
    from fastattr.models import load_default_model
    from fastattr.viz import save_grid

    metrics = _check_metrics(metrics)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images: expected a positive int, got {max_images!r}")
    rows = [RowResult(v) for v in (rows if rows is not None else variants(methods))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # methods that sample (NeFLAG) draw from the global generator when given none
    model = load_default_model()
    es = load_evalset()
    if max_images is not None:
        es = es.subset(max_images)
    t_start = time.perf_counter()
    bar = tqdm(total=2 * len(rows), disable=not progress, desc="fastattr eval")
    for r in rows:
        bar.set_postfix_str(r.variant.label + ": maps")
        try:
            r.maps, r.seconds_per_image, r.grad_evals_per_image = _attribute(model, es, r.variant, steps)
        except Exception as exc:  # one broken method must not lose the whole table
            r.error = f"{type(exc).__name__}: {exc}".replace("|", "/")[:120]
        bar.update(1)
        bar.set_postfix_str(r.variant.label + ": metrics")
        if r.error is None:
            r.scores, r.curves = _score(model, es, r.maps, metrics, MIN_PROB)
        bar.update(1)
    bar.close()
    n_loc = int(es.has_mask.sum())
    header = (f"# fastattr eval: EfficientNet-Lite0, {len(es)} images ({n_loc} composites with object masks), "
              f"steps={steps} for path methods, {time.perf_counter() - t_start:.0f} s\n\n"
              "Insertion/deletion: black base, probability curve, 21 points, mean AUC over images. "
              "SIC/AIC pair: PAIR's compute_pic_metric with min_pred=" f"{MIN_PROB} (the set's own bar; "
              "PAIR's default 0.8 would drop the composites), median (SIC) / mean (AIC) curve. "
              "SIC/AIC ent, MS-SSIM: IDGI-paper variant, 25 bokeh thresholds, 100 bins. "
              "Localization on the composites: ROC-AUC, best F1, best MAE of the signed channel sum, and ROC-AUC of |A|. "
              "Best per column in bold.")
    md = write_tables(rows, metrics, out, header)
    plot_curves(rows, out)
    ok = [r for r in rows if r.maps is not None]
    if ok:
        save_grid(out / "maps.png", list(es.images), {r.variant.label: list(r.maps) for r in ok},
                  row_titles=es.names)
    return md


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fastattr eval`."""
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods to evaluate (default: every registered method)")
    parser.add_argument("--metrics", nargs="+", default=None, choices=METRICS,
                        help="metrics to compute (default: all)")
    parser.add_argument("--steps", type=int, default=16, help="steps of path methods (default: 16)")
    parser.add_argument("--out", default="fastattr_eval", help="output folder (default: fastattr_eval)")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images of the set")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_eval(args) -> int:
    """`fastattr eval`: run the evaluation and print the markdown table."""
    md = run_eval(args.methods, args.metrics, args.steps, args.out, progress=not args.no_progress,
                  max_images=args.max_images)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md}, {md.with_suffix('.csv')}, {md.parent / 'curves.png'}, {md.parent / 'maps.png'}")
    return 0
