"""Length buckets: a batch of sentences padded to the longest, computed at each sentence's own length.

An (N, T) attention_mask (Hugging Face convention: 1 for real tokens, 0 for padding at the end of a
row, or at its start for left padding) gives each row a length. Rows are sorted by length and
grouped greedily into buckets whose padded size (rows x longest) stays within SLACK of their real
size; each bucket is one separate engine walk over its rows cut to the bucket's length (the window
of columns that holds each row's tokens: the first L columns of a right-padded row, the last L of a
left-padded one). A walk never mixes lengths, so the integrators see their usual image-major points.
Rows whose mask is not one run of ones at an end (holes, all zeros) keep all T columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Padded tokens a bucket may compute beyond its rows' real tokens, as a share of them. Fewer, larger
# buckets fill chunks better; every bucket is one walk with its own forward at the inputs.
SLACK = 0.125


@dataclass
class Bucket:
    """Rows (R,) of the call (ascending), each cut to the columns cols (R, L) (None: all T)."""

    rows: torch.Tensor
    cols: torch.Tensor | None
    length: int

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """This bucket's rows of t (N, T, ...), cut to their columns -> (R, L, ...)."""
        if self.cols is None:
            return t.index_select(0, self.rows)
        return t[self.rows[:, None], self.cols]

    def put(self, out: torch.Tensor, values: torch.Tensor) -> None:
        """out[rows, cols] = values (R, L, ...): the inverse of take, into out (N, T, ...)."""
        if self.cols is None:
            out[self.rows] = values
        else:
            out[self.rows[:, None], self.cols] = values


def row_lengths(mask: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Per row of a (N, T) mask: its real length (T for a row that cannot be cut) and whether it is
    left-padded (its tokens end at column T - 1 and padding precedes them)."""
    on = mask != 0
    n, t = on.shape
    count = on.sum(1)
    first = on.int().argmax(1)
    last = t - 1 - on.flip(1).int().argmax(1)
    run = (count > 0) & (last - first + 1 == count)  # one contiguous run of ones
    right = run & (first == 0)
    left = run & (last == t - 1) & ~right
    lengths = torch.where(right | left, count, t)
    return lengths.tolist(), left.tolist()


def has_padding(mask: torch.Tensor) -> bool:
    return not bool((mask != 0).all())


def plan(mask: torch.Tensor | None, n: int, tokens: int) -> list[Bucket]:
    """Buckets for n rows of `tokens` columns: one bucket of every row, uncut, without a mask with
    padding; else rows grouped by length (see the module docstring)."""
    device = mask.device if mask is not None else torch.device("cpu")
    if mask is None or not has_padding(mask):
        return [Bucket(torch.arange(n, device=device), None, tokens)]
    lengths, left = row_lengths(mask)
    order = sorted(range(n), key=lambda i: lengths[i])
    groups, current, real = [], [], 0
    for i in order:
        length = lengths[i]
        if current and (len(current) + 1) * length > (1 + SLACK) * (real + length):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += length
    groups.append(current)
    buckets = []
    for group in groups:
        group.sort()
        length = max(lengths[i] for i in group)
        rows = torch.tensor(group, dtype=torch.long, device=device)
        if length == tokens:
            buckets.append(Bucket(rows, None, tokens))
            continue
        start = torch.tensor([tokens - length if left[i] else 0 for i in group], dtype=torch.long, device=device)
        cols = start[:, None] + torch.arange(length, device=device)
        buckets.append(Bucket(rows, cols, length))
    return buckets
