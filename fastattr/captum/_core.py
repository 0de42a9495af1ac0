"""The engine walks behind fastattr.captum: IG (captum's rules, or IDGI) and input gradients for
R rows (examples, or noisy copies of examples), every row's points packed into the engine's chunks.

Rows map to the user's examples through `source` (R,) (targets and additional_forward_args follow
the example). Points are built per input exactly as captum builds them (baseline + alpha * (input -
baseline) in the input's dtype, alpha rounded as captum's Python float is), so the model sees the
same numbers captum gives it; gradients are summed by the fused fastattr::path_accumulate_ with
captum's step sizes (rounded to float32, as captum's `torch.tensor(step_sizes).float()`).
"""
from __future__ import annotations

import torch

from fastattr.captum._forward import CallableModel, InputLayout
from fastattr.engine import Engine
from fastattr.methods.base import MethodContext
from fastattr.ops.path_accumulate import path_accumulate_
from fastattr.paths import IdgiSum, from_path_start, walk_path


def make_engine(model: CallableModel, batch_size: int | None, backward: str) -> Engine:
    """An engine over the adapter: it calls the model in chunks of `batch_size` points (None: the
    engine's default for the point size), parameters of the found modules frozen. The model dtype
    is the inputs' (captum hands forward_func the caller's dtype; the points are built in it), and
    the memory format is the adapter's business (it knows which tensors are images)."""
    engine = Engine(model, output="logit", batch_size=batch_size, backward=backward, channels_last=False,
                    model_dtype=model.layout.dtype)
    engine.fit_batch(max(1, int(torch.Size(model.layout.point_shape).numel())))
    return engine


def _context(engine: Engine, rows: int, steps: int, device) -> MethodContext:
    """The MethodContext walk_path reads: row count, per-point targets (column 0 of the adapter's
    (B, 1) output) and the engine."""
    zeros = torch.zeros(rows, dtype=torch.long, device=device)
    like = torch.empty(rows, 0, device=device)
    return MethodContext(engine=engine, inputs=like, baseline=like, targets=zeros, scores=zeros.float(),
                         steps=steps, rule="left", idgi=False)


def _rows(t, i: torch.Tensor):
    """Rows i of a per-row tensor; numbers and one-row tensors broadcast."""
    if not isinstance(t, torch.Tensor) or t.shape[0] == 1:
        return t
    return t.index_select(0, i)


def _op_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch computes `python_float * tensor` in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def path_points(xs, bs, ds, layout: InputLayout, alphas: torch.Tensor):
    """point(i, k) = join_j(b_j + alpha_k * (x_j - b_j)) for rows i, steps k, per input in its own
    dtype as captum computes it (integer inputs: in the default float dtype, as `alpha * int_tensor`).
    ds[j] = x_j - b_j (R, ...); alphas (steps,) float64."""
    a_by_dtype = {}

    def point(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        parts = []
        for x, b, d in zip(xs, bs, ds):
            out = d.dtype if d.is_floating_point() else torch.get_default_dtype()
            op = _op_dtype(out)
            a = a_by_dtype.get(op)
            if a is None:
                a = a_by_dtype[op] = alphas.to(d.device, op)
            ak = a[k].view(-1, *([1] * (d.dim() - 1)))
            scaled = (_rows(d, i).to(op) * ak).to(out)
            parts.append(_rows(b, i) + scaled)
        return layout.join(parts)

    return point


def integrate(model: CallableModel, engine: Engine, xs, bs, source: torch.Tensor, alphas: list[float],
              step_sizes: list[float], idgi: bool) -> tuple[torch.Tensor, ...]:
    """Per input, sum_k step_k * grad at the k-th path point (captum's total_grads), or the IDGI map.
    xs tuple of (R, ...) rows, bs their baselines (numbers or 1/R-row tensors) -> tuple of (R, ...)."""
    r = xs[0].shape[0]
    device = xs[0].device
    layout = model.layout
    ds = tuple(x - b for x, b in zip(xs, bs))  # captum's (input - baseline), in the input dtype
    alpha_t = torch.tensor(alphas, dtype=torch.float64)
    width = int(torch.Size(layout.point_shape).numel())
    acc_dtype = torch.float64 if layout.dtype == torch.float64 else torch.float32

    if idgi:
        keep = alpha_t < 1.0  # the rule's point at alpha = 1 is the input: its output is the end score
        alpha_t = alpha_t[keep]
        steps = len(alpha_t)
        if steps == 0:
            return tuple(torch.zeros_like(x, dtype=acc_dtype) for x in xs)
        rows, zeros = torch.arange(r, device=device), torch.zeros(r, dtype=torch.long, device=device)
        with engine.session():
            model.feed(source)
            end = engine.value(layout.join(xs), zeros)
            if alpha_t[0] > 0:  # f_c(b): the segment [b, p_0] goes with the first span (SPEC.md)
                model.feed(source)
                start = engine.value(path_points(xs, bs, ds, layout, torch.zeros(1, dtype=torch.float64))(rows, zeros),
                                     zeros)
        acc = IdgiSum(torch.empty(r, width, dtype=acc_dtype, device=device), steps, end)
        consume = acc if alpha_t[0] == 0 else from_path_start(acc, start)
    else:
        steps = len(alpha_t)
        acc = _Riemann(r, width, acc_dtype, device, step_sizes)
        consume = acc

    build = path_points(xs, bs, ds, layout, alpha_t)

    def point(i, k):
        model.feed(source.index_select(0, i))
        return build(i, k)

    walk_path(_context(engine, r, steps, device), steps, point, consume, desc="IG")
    # captum's total_grads: grads times float32 step sizes, so float32 unless the input is float64
    return tuple(t.to(torch.promote_types(d, torch.float32))
                 for t, d in zip(split_rows(acc.acc.view(r, width), layout), layout.dtypes))


class _Riemann:
    """acc[i] += step_k * g for every evaluated point (i, k), by the fused accumulate op."""

    def __init__(self, rows: int, width: int, dtype: torch.dtype, device, step_sizes: list[float]):
        self.acc = torch.zeros(rows, width, dtype=dtype, device=device)
        # captum multiplies by torch.tensor(step_sizes).float(): the float32-rounded sizes, exactly.
        self.coef = torch.tensor(step_sizes).float().to(device, torch.float64)

    def __call__(self, i, k, y, g) -> None:
        path_accumulate_(self.acc, g.reshape(g.shape[0], -1), self.coef[k], i, False)


def walk_rows(model: CallableModel, engine: Engine, source: torch.Tensor, point, consume, desc: str) -> None:
    """One gradient per row r = 0..R-1, rows packed into the engine's chunks in order: point(i) builds
    the points of rows i (B, *point_shape), consume(i, g) receives their gradients (B, D) in the point
    dtype. source (R,): the user example of each row (its target and additional_forward_args)."""

    def row_point(i, k):
        model.feed(source.index_select(0, i))
        return point(i)

    def keep(i, k, y, g):
        consume(i, g.reshape(g.shape[0], -1))

    walk_path(_context(engine, source.shape[0], 1, source.device), 1, row_point, keep, desc=desc)


def gradients(model: CallableModel, engine: Engine, xs, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """d score / d input at each row, per input in the input's dtype -> tuple of (R, ...)."""
    layout = model.layout
    width = int(torch.Size(layout.point_shape).numel())
    grads = torch.empty(xs[0].shape[0], width, dtype=layout.dtype, device=xs[0].device)

    def keep(i, g):
        grads[i] = g.to(grads.dtype)

    walk_rows(model, engine, source, lambda i: layout.join([x.index_select(0, i) for x in xs]), keep, "gradient")
    return tuple(g.to(d) for g, d in zip(split_rows(grads, layout), layout.dtypes))


def split_rows(flat: torch.Tensor, layout: InputLayout) -> tuple[torch.Tensor, ...]:
    """(R, D) in point space -> per input (R, *shape) views."""
    r = flat.shape[0]
    if not layout.flat:
        return (flat.view(r, *layout.shapes[0]),)
    return tuple(p.reshape(r, *s) for p, s in zip(flat.split(layout.sizes, dim=1), layout.shapes))
