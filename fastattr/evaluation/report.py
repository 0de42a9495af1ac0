"""eval's output files: table.md / table.csv (statistic and 95% interval per cell), per_image.csv
(one row per image and variant), curves.png (mean insertion/deletion curves), maps.png (a
sample of images). Every file is a pure function of the stored per-image values (no timings),
so a resumed or distributed eval writes the same bytes as one uninterrupted process."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from fastattr.evaluation.summary import COLUMNS, Cell
from fastattr.evaluation.variants import Variant
from fastattr.runner.shards import write_atomic

PER_IMAGE_METRICS = ("insertion", "deletion", "sic_pair", "aic_pair", "loc_auc", "loc_f1", "loc_mae", "loc_auc_abs")


def _fmt(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _num(v) -> str:
    """A CSV number: repr (round-trips), empty for None/NaN."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def table_markdown(rows: list[tuple[Variant, dict[str, Cell], dict]], metrics: list[str], header: str) -> str:
    """Markdown table: 'value [low, high]' per cell, the best value per column in bold."""
    cols = [c for m in metrics for c in COLUMNS[m]]
    best = {}
    for _, key, hi in cols:
        vals = [c[key].value for _, c, _ in rows if key in c and not math.isnan(c[key].value)]
        if vals:
            best[key] = max(vals) if hi else min(vals)
    lines = [header, "", "| Method | " + " | ".join(c[0] for c in cols) + " | images | grad evals / image |",
             "|---|" + "---:|" * (len(cols) + 2)]
    for v, c, info in rows:
        cells = []
        for _, key, _ in cols:
            cell = c.get(key, Cell(float("nan")))
            txt = _fmt(cell.value)
            if key in best and cell.value == best[key]:
                txt = f"**{txt}**"
            if not math.isnan(cell.low):
                txt += f" [{cell.low:.3f}, {cell.high:.3f}]"
            cells.append(txt)
        lines.append(f"| {v.label} | " + " | ".join(cells) + f" | {info['images']} | {_fmt_evals(info['grad_evals'])} |")
    return "\n".join(lines) + "\n"


def _fmt_evals(v) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def table_csv(rows: list[tuple[Variant, dict[str, Cell], dict]], metrics: list[str]) -> str:
    """CSV: one row per variant; per metric key the statistic and its interval (key_low, key_high)."""
    keys = [k for m in metrics for _, k, _ in COLUMNS[m]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "idgi", "backward", "label", "images", "grad_evals_per_image"]
               + [x for k in keys for x in (k, f"{k}_low", f"{k}_high")])
    for v, c, info in rows:
        vals = []
        for k in keys:
            cell = c.get(k, Cell(float("nan")))
            vals += [_num(cell.value), _num(cell.low), _num(cell.high)]
        w.writerow([v.method, v.idgi, v.backward, v.label, info["images"], _num(info["grad_evals"])] + vals)
    return buf.getvalue()


PER_IMAGE_COLUMNS = ["image", "index", "status", "error", "label", "target", "method", "idgi", "backward",
                     "grad_evals", *PER_IMAGE_METRICS, "sic_pair_skip", "aic_pair_skip", "mask"]


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def per_image_header() -> str:
    """The first line of per_image.csv."""
    return _csv([PER_IMAGE_COLUMNS])


def per_image_rows(records: list[dict], variants: list[Variant]) -> str:
    """per_image.csv lines of some image records: one row per image and variant (a failed image:
    one row with status 'failed' and the error)."""
    rows = []
    for rec in records:
        base = [rec["image"], rec["index"], rec["status"], rec["error"] or "",
                "" if rec.get("label") is None else rec["label"]]
        if rec["status"] != "ok":
            rows.append(base + [""] * (len(PER_IMAGE_COLUMNS) - len(base)))
            continue
        for v in variants:
            r = rec["results"][v.key]
            rows.append(base + [r["target"], v.method, v.idgi, v.backward, _num(r.get("grad_evals"))]
                        + [_num(r.get(k)) for k in PER_IMAGE_METRICS]
                        + [r.get("sic_pair_skip") or "", r.get("aic_pair_skip") or "", rec.get("mask") or ""])
    return _csv(rows)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def _png_bytes(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from PIL import Image

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    # re-encoded as RGB (matplotlib writes RGBA) without metadata: the bytes depend on the
    # pixels only (no software version)
    out = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(out, format="PNG", optimize=True)
    return out.getvalue()


def plot_curves(path: Path, curves: dict[str, dict[str, np.ndarray]], variants: list[Variant]) -> bool:
    """curves.png: mean insertion and deletion curve over images of every variant; curves[kind][key]
    is (n, steps + 1). Returns False (no file) when neither metric was measured."""
    from matplotlib.figure import Figure

    kinds = [k for k in ("insertion", "deletion") if curves.get(k)]
    if not kinds:
        return False
    import matplotlib

    fig = Figure(figsize=(5.5 * len(kinds), 4.2), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    # One colour pair per method (tab20: dark = standard backward, light = guided), dashed = IDGI:
    # 14 variants with the default 10-colour cycle gave two methods the same line.
    methods = list(dict.fromkeys(v.method for v in variants))
    pairs = matplotlib.colormaps["tab20"].colors
    for ax, kind in zip(axes, kinds):
        for v in variants:
            y = curves[kind].get(v.key)
            if y is not None and len(y):
                y = np.nanmean(y, axis=0)
                colour = pairs[(2 * methods.index(v.method) + (v.backward == "guided")) % len(pairs)]
                ax.plot(np.linspace(0, 1, len(y)), y, label=v.label, linestyle="--" if v.idgi else "-",
                        color=colour)
        ax.set_xlabel("fraction of pixels " + ("inserted" if kind == "insertion" else "deleted"))
        ax.set_ylabel("p(class), mean over images")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    write_atomic(path, _png_bytes(fig))
    return True


def plot_maps(path: Path, images: list, maps: dict[str, list], names: list[str]) -> None:
    """maps.png: the sample images (rows) with every variant's map (columns), viz.save_grid."""
    from fastattr.viz import save_grid

    from PIL import Image

    tmp = path.with_name(path.name + ".tmp-grid")
    save_grid(tmp, images, maps, row_titles=names)
    data = tmp.read_bytes()
    tmp.unlink()
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "RGB":  # matplotlib writes RGBA: an opaque figure needs no alpha channel
            out = io.BytesIO()
            im.convert("RGB").save(out, format="PNG", optimize=True)
            data = out.getvalue()
    write_atomic(path, data)
