"""SIC / AIC (Performance Information Curves, XRAI paper; IDGI paper 4.4/4.5): how fast the
model's belief returns as the most salient pixels are revealed, against the information revealed.
Two variants (SPEC.md "Metrics"): `pair` (exactly `saliency.metrics.pic`) and `idgi`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fastattr.metrics import pic_idgi, pic_pair
from fastattr.metrics._common import (as_engine, check_choice, check_count, check_flag, check_images,
                                      check_finite_scores, check_masks, check_number, check_target, pixel_saliency, target_argument,
                                      top_masks)

VARIANTS = ("pair", "idgi")


@dataclass
class PicResult:
    """SIC and AIC of one saliency method over N images (aggregate AUCs and per-image detail)."""

    variant: str
    info: str  # 'entropy' or 'msssim'
    sic: float  # AUC of the aggregate SIC curve (pair: median curve; idgi: binned medians)
    aic: float  # AUC of the aggregate AIC curve (pair: mean curve; idgi: binned means)
    curve_x: torch.Tensor  # (P,) information level of the aggregate curves
    sic_curve: torch.Tensor  # (P,)
    aic_curve: torch.Tensor  # (P,)
    targets: torch.Tensor  # (N,)
    # pair: 'sic_auc', 'aic_auc' (N,) NaN where skipped, 'sic_curves', 'aic_curves' (N, 1001),
    # 'sic_skip', 'aic_skip' (lists of None or PAIR's reason), 'entropies', 'sic_preds', 'aic_preds'
    # (N, 2 + T: original, fully blurred, thresholds; NaN where skipped);
    # idgi: 'levels', 'ratios', 'correct' (N, 25)
    per_image: dict = field(default_factory=dict)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 (PAIR takes uint8 images)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _from_uint8(a: np.ndarray, device) -> torch.Tensor:
    """(P, H, W, 3) uint8 -> (P, 3, H, W) float32 / 255: what the model sees of a uint8 image."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(0, 3, 1, 2).float().div(255.0)


def random_masks_like(n: int, h: int, w: int, fraction: float = 0.01, seed: int = 0) -> torch.Tensor:
    """(n, h, w) bool masks with int(h*w*fraction) random pixels each (PAIR's generate_random_mask), seeded."""
    g = torch.Generator().manual_seed(int(seed))
    k = int(h * w * fraction)
    out = torch.zeros(n, h * w, dtype=torch.bool)
    for i in range(n):
        out[i, torch.randperm(h * w, generator=g)[:k]] = True
    return out.reshape(n, h, w)


def _logits_u8(engine, stack: np.ndarray, device, owners: torch.Tensor) -> torch.Tensor:
    """Model scores of (P, H, W, 3) uint8 images seen as float / 255, one engine chunk at a time
    (only one chunk of float images in memory) -> (P, K) float64; owners (P,): the image each row
    was made from (named in a non-finite-score error)."""
    out = [engine.logits(_from_uint8(stack[s:e], device)).double() for s, e in engine.chunks(len(stack))]
    out = torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)
    return check_finite_scores(out, owners)


def _probs_and_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """p_c (float64 softmax: no extra rounding on top of the model's) and 1[argmax = c] per row."""
    p = logits.softmax(1).gather(1, targets[:, None].to(logits.device)).squeeze(1)
    return p.cpu().numpy(), (logits.argmax(1).cpu() == targets.cpu()).double().numpy()


def _aggregate(curves: list[np.ndarray], how: str, num_points: int) -> tuple[np.ndarray, float]:
    """PAIR's aggregate_individual_pic_results: median or mean curve over images and its AUC."""
    x = np.append(np.linspace(0.0, 1.0, num=num_points, endpoint=False), 1.0)
    if not curves:
        return np.full_like(x, np.nan), float("nan")
    y = np.median(np.asarray(curves), axis=0) if how == "median" else np.mean(np.asarray(curves), axis=0)
    return y, float(np.trapezoid(y, x))


def pair_curves(entropies: np.ndarray, preds: np.ndarray, min_pred: float, num_points: int = 1000):
    """PAIR's per-image curves from raw points (N, 2 + T) (original, fully blurred, thresholds) ->
    (curves (N, num_points + 1) NaN where skipped, AUCs (N,), skip reasons [None or str])."""
    n = len(entropies)
    curves, aucs, skips = np.full((n, num_points + 1), np.nan), np.full(n, np.nan), []
    for i in range(n):
        cy, r = pic_pair.pair_curve(entropies[i, 1:], preds[i, 1:], entropies[i, 0], preds[i, 0], min_pred,
                                    num_points=num_points)
        skips.append(None if cy is not None else r)
        if cy is not None:
            curves[i], aucs[i] = cy, r
    return curves, aucs, skips


def aggregate_pair(curves: np.ndarray, how: str, num_points: int = 1000) -> float:
    """AUC of PAIR's aggregate (how='median' for SIC, 'mean' for AIC) of the non-skipped curves."""
    kept = [c for c in curves if not np.isnan(c[0])]
    return _aggregate(kept, how, num_points)[1]


def _targets_from(logits: torch.Tensor, target, n: int, device) -> torch.Tensor:
    """target None: the class the model predicts on the uint8 image it is shown; else checked."""
    if target is None:
        return logits.argmax(1).to(device)
    return check_target(target, n, logits.shape[1], device)


@dataclass
class PairReference:
    """What PIC 'pair' computes per image before any map is used: the uint8 images (N, H, W, 3),
    WebP lengths (N, 2) of the original and the fully blurred image (random pixels only), and the
    model's scores on both (N, 2, K). The same for every map of the same images and random
    masks, so fastattr eval computes it once per group for all methods (pair_reference)."""

    images: np.ndarray
    random_masks: np.ndarray
    entropies: np.ndarray
    logits: torch.Tensor


def pair_reference(model, images: torch.Tensor, random_masks: torch.Tensor, *, workers: int | None = None,
                   batch_size: int | None = None) -> PairReference:
    """PairReference of images (N, 3, H, W) in [0, 1] with random_masks (N, H, W) bool, to pass as
    pic(..., reference=) for several maps of the same images."""
    engine = as_engine(model, batch_size)
    x = check_images(images, engine)
    n, _, h, w = x.shape
    rm = check_masks(random_masks, (n, h, w), "random_masks")
    workers = pic_pair.default_workers() if workers is None else check_count(workers, "workers", minimum=0)
    with engine.session():
        return _reference(engine, x, rm, workers)


def _reference(engine, x, random_masks, workers) -> PairReference:
    n = x.shape[0]
    imgs = _to_uint8(x)
    rm = random_masks.cpu().numpy()
    done = pic_pair.parallel_map(pic_pair.blur_and_measure,
                                 [t for i in range(n) for t in ((imgs[i], None), (imgs[i], rm[i]))], workers)
    stack = np.stack([imgs[i] if j == 0 else done[2 * i + 1][0] for i in range(n) for j in range(2)])
    logits = _logits_u8(engine, stack, x.device, torch.arange(n).repeat_interleave(2))
    e0 = np.array([d[1] for d in done], dtype=np.float64).reshape(n, 2)
    return PairReference(imgs, rm, e0, logits.reshape(n, 2, -1))


def _threshold_points(engine, tasks, owners, targets, workers, device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WebP lengths, p_c and 1[argmax = c] of the threshold images of `tasks` ((image, mask) each;
    owners, targets (len(tasks),): the image index and class of each). The model takes the blurred images in full chunks as the worker
    processes hand them over, so model and image side overlap."""
    ent, logits, buf = [], [], []
    for blurred, length in pic_pair.parallel_imap(pic_pair.blur_and_measure, tasks, workers):
        ent.append(length)
        buf.append(blurred)
        if len(buf) == engine.batch_size:
            logits.append(engine.logits(_from_uint8(np.stack(buf), device)).double())
            buf = []
    if buf:
        logits.append(engine.logits(_from_uint8(np.stack(buf), device)).double())
    logits = check_finite_scores(torch.cat(logits), torch.tensor(owners))
    p, c = _probs_and_correct(logits, targets)
    return np.array(ent, dtype=np.float64), p, c


def _pic_pair(engine, x, sal, target, random_masks, thresholds, min_pred, workers, num_points,
              reference=None) -> PicResult:
    n = x.shape[0]
    # Phase 1, per image: the original and the fully blurred image (random pixels only). They
    # decide PAIR's skips (low prediction, blurred entropy or prediction not lower), so the 13
    # threshold images (most of the cost) are made only for images that SIC or AIC keeps, as
    # PAIR, which raises before its threshold loop.
    ref = reference if reference is not None else _reference(engine, x, random_masks, workers)
    imgs, rm, e0 = ref.images, ref.random_masks, ref.entropies
    targets = _targets_from(ref.logits[:, 0], target, n, x.device)
    p0, c0 = (a.reshape(n, 2) for a in _probs_and_correct(ref.logits.reshape(2 * n, -1),
                                                         targets.repeat_interleave(2)))
    reasons = {"sic": [pic_pair.skip_reason(e0[i, 1], e0[i, 0], p0[i, 1], p0[i, 0], min_pred) for i in range(n)],
               "aic": [pic_pair.skip_reason(e0[i, 1], e0[i, 0], c0[i, 1], c0[i, 0], min_pred) for i in range(n)]}
    todo = [i for i in range(n) if reasons["sic"][i] is None or reasons["aic"][i] is None]
    # Phase 2: the threshold images of the kept images
    sal_np = sal.cpu().numpy()
    t_count = len(thresholds)
    ent = np.full((n, t_count), np.nan)
    p, correct = np.full((n, t_count), np.nan), np.full((n, t_count), np.nan)
    if todo:
        tasks = [(imgs[i], m) for i in todo for m in pic_pair.threshold_masks(sal_np[i], rm[i], thresholds)]
        owners = [i for i in todo for _ in thresholds]
        et, pt, ct = _threshold_points(engine, tasks, owners, targets[todo].repeat_interleave(t_count), workers,
                                       x.device)
        ent[todo], p[todo], correct[todo] = (a.reshape(-1, t_count) for a in (et, pt, ct))

    out = {}
    for name, pred, pred0 in (("sic", p, p0), ("aic", correct, c0)):
        curves, aucs, skips, kept = [], np.full(n, np.nan), [], []
        for i in range(n):
            cy, r = (None, reasons[name][i]) if reasons[name][i] is not None else pic_pair.pair_curve(
                np.append(e0[i, 1], ent[i]), np.append(pred0[i, 1], pred[i]), e0[i, 0], pred0[i, 0], min_pred,
                num_points=num_points)
            curves.append(cy if cy is not None else np.full(num_points + 1, np.nan))
            skips.append(None if cy is not None else r)
            if cy is not None:
                aucs[i] = r
                kept.append(cy)
        agg, auc = _aggregate(kept, "median" if name == "sic" else "mean", num_points)
        out[name] = (agg, auc, torch.from_numpy(aucs), torch.from_numpy(np.stack(curves)), skips)
    cx = torch.from_numpy(np.append(np.linspace(0.0, 1.0, num=num_points, endpoint=False), 1.0))
    per_image = {f"{k}_{f}": out[k][j] for k in ("sic", "aic") for j, f in ((2, "auc"), (3, "curves"), (4, "skip"))}
    # the raw points of every image (original, fully blurred, thresholds; NaN where skipped):
    # enough to redo PAIR's curves and aggregates over any set of images (fastattr eval)
    per_image["entropies"] = torch.from_numpy(np.concatenate([e0, ent], 1))
    per_image["sic_preds"] = torch.from_numpy(np.concatenate([p0, p], 1))
    per_image["aic_preds"] = torch.from_numpy(np.concatenate([c0, correct], 1))
    return PicResult("pair", "entropy", out["sic"][1], out["aic"][1], cx, torch.from_numpy(out["sic"][0]),
                     torch.from_numpy(out["aic"][0]), targets.cpu(), per_image)


def _pic_idgi(engine, x, sal, target, infos, workers) -> dict[str, PicResult]:
    n, _, h, w = x.shape
    imgs = _to_uint8(x)
    bases = np.stack([pic_idgi.pil_blur(im) for im in imgs])
    pct = torch.linspace(0, 100, pic_idgi.N_THRESHOLDS, dtype=torch.float64)
    counts = torch.round(pct / 100 * (h * w)).long()
    masks = top_masks(sal.cpu(), counts).numpy()[..., None]  # (N, T, H, W, 1)
    bokeh = np.where(masks, imgs[:, None], bases[:, None])  # (N, T, H, W, 3) uint8
    t = bokeh.shape[1]
    # The first bokeh image (0% revealed) is the base and the last (100%) the input itself
    # (exactly: top-0 and top-all masks), so neither is encoded or run again: of 27 WebP
    # encodings per image (the bulk of this metric's time) 2 are saved, and the ratio at 100% is
    # exactly 1.
    stack = np.concatenate([imgs, bokeh[:, :-1].reshape(n * (t - 1), h, w, 3)])
    webp_items = list(imgs) + list(bases) + list(bokeh[:, 1:-1].reshape(n * (t - 2), h, w, 3))
    # the WebP encodings start in the worker processes now and run while the model does
    with pic_pair.background_map(pic_pair.webp_length, webp_items if "entropy" in infos else [], workers) as sizes_iter:
        logits = _logits_u8(engine, stack, x.device,
                            torch.cat([torch.arange(n), torch.arange(n).repeat_interleave(t - 1)]))
        sizes = np.array(list(sizes_iter), dtype=np.float64)
    targets = _targets_from(logits[:n], target, n, x.device)
    p, correct = _probs_and_correct(logits, torch.cat([targets, targets.repeat_interleave(t - 1)]))
    p_in, c_in = p[:n, None], correct[:n, None]
    ratios = torch.from_numpy(np.concatenate([p[n:].reshape(n, t - 1), p_in], 1) / np.maximum(p_in, 1e-12))
    correct = torch.from_numpy(np.concatenate([correct[n:].reshape(n, t - 1), c_in], 1))
    out = {}
    for info in infos:  # the bokeh images and their forwards serve every information level
        if info == "entropy":
            inner = sizes[2 * n:].reshape(n, t - 2)
            levels = torch.from_numpy(np.stack([
                pic_idgi.entropy_levels(np.concatenate([[sizes[n + i]], inner[i], [sizes[i]]]), sizes[n + i], sizes[i])
                for i in range(n)]))
        else:
            levels = torch.stack([pic_idgi.msssim_levels(_from_uint8(bokeh[i], "cpu"), _from_uint8(imgs[i:i + 1], "cpu")[0])
                                  for i in range(n)])
        cx, sic_c, aic_c, sic, aic, _ = pic_idgi.binned_curves(levels, ratios, correct)
        out[info] = PicResult("idgi", info, sic, aic, cx, sic_c, aic_c, targets.cpu(),
                              {"levels": levels, "ratios": ratios, "correct": correct})
    return out


def pic_idgi_levels(model, images: torch.Tensor, attributions: torch.Tensor, target=None, *,
                    infos=pic_idgi.INFOS, absolute: bool = False, workers: int | None = None,
                    batch_size: int | None = None) -> dict[str, PicResult]:
    """pic(variant='idgi') for several information levels at once: {info: PicResult}, the same
    results as one pic() call per info, from one set of bokeh images and forwards."""
    infos = [check_choice(i, "infos", pic_idgi.INFOS) for i in infos]
    absolute = check_flag(absolute, "absolute")
    workers = pic_pair.default_workers() if workers is None else check_count(workers, "workers", minimum=0)
    engine = as_engine(model, batch_size)
    x = check_images(images, engine)
    if x.shape[1] != 3:
        raise ValueError(f"images: PIC encodes RGB images, expected 3 channels, got {x.shape[1]}")
    n, _, h, w = x.shape
    sal = pixel_saliency(attributions, (n, h, w), absolute)
    with engine.session():
        return _pic_idgi(engine, x, sal, target, infos, workers)


def _check_thresholds(thresholds) -> list[float]:
    try:
        values = [check_number(t, "thresholds") for t in thresholds]
    except TypeError:
        raise TypeError(f"thresholds: expected a sequence of fractions in (0, 1), got {thresholds!r}") from None
    if not values or any(not 0 < a < 1 for a in values) or values != sorted(values):
        raise ValueError(f"thresholds: expected ascending fractions in (0, 1), got {values}")
    return values


def pic(model, images: torch.Tensor, attributions: torch.Tensor, target=None, *, targets=None,
        variant: str = "pair", info: str = "entropy", random_masks: torch.Tensor | None = None, seed: int = 0,
        thresholds=pic_pair.PAIR_THRESHOLDS, min_pred: float = 0.8, absolute: bool = False,
        workers: int | None = None, batch_size: int | None = None, num_points: int = 1000,
        reference: PairReference | None = None) -> PicResult:
    """SIC and AIC of maps (N, C, H, W) or (N, H, W) on images (N, 3, H, W) in [0, 1] (seen by the
    model as uint8 / 255). variant='pair': PAIR's compute_pic_metric per image (random_masks
    (N, H, W) bool, default seeded 1%) aggregated by median (SIC) / mean (AIC); variant='idgi':
    info='entropy' or 'msssim', 25 bokeh thresholds, 100 bins. workers: processes for the image
    side. target: None (the argmax on the uint8 image), an int or (N,) ints (`targets`: alias).
    reference: pair_reference() of the same images and random masks (shared between maps)."""
    target = target_argument(target, targets)
    check_choice(variant, "variant", VARIANTS)
    check_choice(info, "info", pic_idgi.INFOS)
    if variant == "pair" and info != "entropy":
        raise ValueError("info: variant='pair' measures information by WebP size only (info='entropy')")
    seed = check_count(seed, "seed", minimum=0)
    min_pred = check_number(min_pred, "min_pred")
    absolute = check_flag(absolute, "absolute")
    workers = pic_pair.default_workers() if workers is None else check_count(workers, "workers", minimum=0)
    num_points = check_count(num_points, "num_points", maximum=10 ** 7)  # (N, num_points) curves in memory
    thresholds = _check_thresholds(thresholds)
    engine = as_engine(model, batch_size)
    x = check_images(images, engine)
    if x.shape[1] != 3:
        raise ValueError(f"images: PIC encodes RGB images, expected 3 channels, got {x.shape[1]}")
    n, _, h, w = x.shape
    sal = pixel_saliency(attributions, (n, h, w), absolute)
    with engine.session():
        if variant == "idgi":
            return _pic_idgi(engine, x, sal, target, [info], workers)[info]
        if random_masks is None:
            random_masks = random_masks_like(n, h, w, seed=seed)
        random_masks = check_masks(random_masks, (n, h, w), "random_masks")
        if reference is not None and (not isinstance(reference, PairReference) or reference.images.shape[:3] != (n, h, w)
                                      or not np.array_equal(reference.random_masks, random_masks.numpy())
                                      or not np.array_equal(reference.images, _to_uint8(x))):
            raise ValueError("reference: expected pair_reference() of these images and random_masks")
        return _pic_pair(engine, x, sal, target, random_masks, thresholds, min_pred, workers, num_points,
                         reference)
