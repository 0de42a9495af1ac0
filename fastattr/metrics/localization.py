"""Weakly supervised localization (IDGI paper 4.6): how well a saliency map separates an
annotated object mask from the rest, as ROC-AUC, best F1 and best MAE over thresholds."""
from __future__ import annotations

import torch

from fastattr.metrics._common import check_flag, check_masks, pixel_saliency


def _normalise(s: torch.Tensor) -> torch.Tensor:
    """Per image (s - min) / (max - min); a constant map becomes all zeros."""
    lo = s.amin(1, keepdim=True)
    span = s.amax(1, keepdim=True) - lo
    return torch.where(span > 0, (s - lo) / span.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))


def _roc_auc(s: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mann-Whitney ROC-AUC with tied scores given their average rank. s (D,), pos (D,) bool -> ()."""
    n_pos = pos.sum().double()
    n_neg = pos.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    sv, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks = avg_rank[inverse]
    rank_sum = ranks[pos[order]].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _best_f1_mae(s: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best F1 and lowest MAE of the binarised map (s >= t) against pos, over every threshold t
    at which the binarisation changes, plus the empty prediction. s (D,), pos (D,) -> ((), ())."""
    sv, order = torch.sort(s, descending=True)
    tp = torch.cumsum(pos[order].double(), 0)
    _, counts = torch.unique_consecutive(sv, return_counts=True)
    ends = torch.cumsum(counts, 0) - 1  # last index of each tie group: s >= t keeps whole groups
    tp = torch.cat([tp.new_zeros(1), tp[ends]])
    k = torch.cat([tp.new_zeros(1), (ends + 1).double()])  # predicted positives
    p = pos.sum().double()
    f1 = torch.where(k + p > 0, 2 * tp / (k + p).clamp_min(1), torch.zeros_like(tp))
    mae = (k - tp + p - tp) / s.numel()
    return f1.max(), mae.min()


def localization(attributions: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> dict[str, torch.Tensor]:
    """{'auc', 'f1', 'mae'} -> (N,) float64 each, for maps (N, C, H, W) or (N, H, W) against binary
    masks (N, H, W) (True = object). Saliency normalised to [0, 1] per image; all three are NaN
    when a mask is all True or all False (no object to find, or nothing else: an empty mask
    would score F1 = 0 and MAE = the map's own positives, numbers that mean nothing and that a
    mean over images would silently absorb)."""
    absolute = check_flag(absolute, "absolute")
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise ValueError(f"masks: expected an (N, H, W) tensor, got "
                         f"{tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__}")
    if masks.shape[0] == 0:
        raise ValueError("masks: the batch is empty (N = 0)")
    sal = pixel_saliency(attributions, tuple(masks.shape), absolute).cpu()
    m = check_masks(masks, tuple(masks.shape))
    n = sal.shape[0]
    s = _normalise(sal.reshape(n, -1))
    m = m.reshape(n, -1)
    auc, f1, mae = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    for i in range(n):  # per image: a sort of H*W values, no model call
        auc[i] = _roc_auc(s[i], m[i])
        f1[i], mae[i] = _best_f1_mae(s[i], m[i]) if bool(auc[i].isfinite()) else (auc[i], auc[i])
    return {"auc": auc, "f1": f1, "mae": mae}
