"""captum 0.9's argument conventions (inputs, baselines, targets, additional_forward_args, n_steps,
method) as checked, normalised values, with captum's exception types.

captum checks its arguments with `assert`; code written against captum catches AssertionError (or
IndexError / RuntimeError where captum's indexing raises those). fastattr.captum raises classes
that are both that captum type and a ValueError / TypeError whose message names the parameter, so
`except AssertionError` and `except ValueError` both keep working.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

RIEMANN = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
SUPPORTED_METHODS = RIEMANN + ("gausslegendre",)


class CaptumValueError(ValueError, AssertionError):
    """A bad value captum rejects with an assertion."""


class CaptumTypeError(TypeError, AssertionError):
    """A value of the wrong type captum rejects with an assertion."""


class CaptumIndexError(ValueError, IndexError):
    """A target index outside the model output (captum: IndexError from tensor indexing)."""


class CaptumRuntimeError(ValueError, RuntimeError):
    """A per-example target outside the model output (captum: RuntimeError from torch.gather)."""


class CaptumZeroDivisionError(ValueError, ZeroDivisionError):
    """A sample count of 0 (captum: ZeroDivisionError from its batching arithmetic)."""


def format_inputs(inputs) -> tuple[tuple[torch.Tensor, ...], bool]:
    """captum's _format_tensor_into_tuples: a tensor or a tuple of tensors -> (tuple, was_tuple)."""
    is_tuple = isinstance(inputs, tuple)
    xs = inputs if is_tuple else (inputs,)
    if not is_tuple and not isinstance(inputs, torch.Tensor):
        raise CaptumTypeError(f"inputs: expected a torch.Tensor or a tuple of tensors, got {type(inputs).__name__}")
    if len(xs) == 0:
        raise CaptumValueError("inputs: the tuple of inputs is empty")
    for j, x in enumerate(xs):
        if not isinstance(x, torch.Tensor):
            raise CaptumTypeError(f"inputs: element {j} is a {type(x).__name__}, expected a torch.Tensor")
        if x.dim() == 0:
            raise CaptumValueError(f"inputs: element {j} is 0-dimensional; dimension 0 must index examples")
    n = xs[0].shape[0]
    if any(x.shape[0] != n for x in xs):
        raise CaptumValueError(f"inputs: every tensor must have the same number of examples (dimension 0), "
                               f"got {[x.shape[0] for x in xs]}")
    return tuple(xs), is_tuple


def format_baselines(baselines, inputs: tuple[torch.Tensor, ...], *, from_distribution: bool = False):
    """captum's _format_baseline + _validate_input: None (zeros), a number, a tensor, or a tuple of
    them, one per input -> tuple of numbers / tensors (not broadcast)."""
    if baselines is None:
        return tuple(False if x.dtype is torch.bool else 0 for x in inputs)
    bs = baselines if isinstance(baselines, tuple) else (baselines,)
    for b in bs:
        if not isinstance(b, (torch.Tensor, int, float)):
            raise CaptumTypeError(f"baselines: expected a tensor or a number per input, got {type(b).__name__}")
    if len(bs) != len(inputs):
        raise CaptumValueError(f"baselines: {len(bs)} baselines for {len(inputs)} inputs")
    for j, (x, b) in enumerate(zip(inputs, bs)):
        if not isinstance(b, torch.Tensor):
            continue
        if b.dim() == 0:
            raise CaptumValueError(f"baselines: element {j} is a 0-dimensional tensor; give a number or a tensor "
                                   f"with an example dimension")
        ok = b.shape[1:] == x.shape[1:] if from_distribution else (b.shape == x.shape or b.shape[0] == 1)
        if not ok:
            want = "(*, " + ", ".join(map(str, x.shape[1:])) + ")" if from_distribution else \
                f"{tuple(x.shape)} or (1, ...)"
            raise CaptumValueError(f"baselines: element {j} has shape {tuple(b.shape)}, expected {want} "
                                   f"for inputs of shape {tuple(x.shape)}")
    return bs


def bools_as_floats(xs: tuple, bs: tuple) -> tuple[tuple, tuple]:
    """Bool inputs and their baselines as 0/1 in the default float dtype (captum's `input - baseline`
    raises for bool tensors; fastattr explains them as the numbers they stand for). Other inputs and
    baselines unchanged (integer ones are made floating by the path arithmetic, as in captum)."""
    if not any(x.dtype == torch.bool for x in xs):
        return xs, bs
    fl = torch.get_default_dtype()
    xs2 = tuple(x.to(fl) if x.dtype == torch.bool else x for x in xs)
    bs2 = tuple((b.to(fl) if isinstance(b, torch.Tensor) and b.dtype == torch.bool else float(b)
                 if isinstance(b, bool) else b) if x.dtype == torch.bool else b for x, b in zip(xs, bs))
    return xs2, bs2


def check_steps_and_method(n_steps, method) -> None:
    """captum's _validate_input and approximation_parameters checks of n_steps and method."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise CaptumTypeError(f"n_steps: expected an integer, got {type(n_steps).__name__}")
    if method not in SUPPORTED_METHODS:
        raise CaptumValueError(f"method: unknown approximation method {method!r}; "
                               f"choose from {list(SUPPORTED_METHODS)}")
    least = 1 if method == "gausslegendre" else 2  # captum asserts n > 0 / n > 1
    if n_steps < least:
        raise CaptumValueError(f"n_steps: method {method!r} needs n_steps >= {least}, got {n_steps}")


def approximation(method: str, n: int) -> tuple[list[float], list[float]]:
    """(step_sizes, alphas) as Python floats, computed exactly as captum's approximation_methods:
    Riemann nodes from torch.linspace in the default dtype, Gauss-Legendre from numpy in float64."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    kind = method.split("_")[-1]
    steps = [1 / n] * n
    if kind == "trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        return steps, torch.linspace(0, 1, n).tolist()
    if kind == "left":
        return steps, torch.linspace(0, 1 - 1 / n, n).tolist()
    if kind == "middle":
        return steps, torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n).tolist()
    return steps, torch.linspace(1 / n, 1, n).tolist()


@dataclass(frozen=True)
class Target:
    """captum's target for N examples, as one of: 'none' (the output is the score), 'index' (one
    index tuple for every example), 'column' (an (N,) int64 class per example; 2-D outputs), or
    'tuples' (an (N, d) int64 index tuple per example)."""

    kind: str
    index: tuple = ()
    per_example: torch.Tensor | None = None

    def pick(self, out: torch.Tensor, rows: torch.Tensor, check: bool = True) -> torch.Tensor:
        """captum's _select_targets for output rows of examples rows (B,): out (B, ...) -> (B, ...).
        check=False skips the range checks (done once per output shape: they sync the device)."""
        b = out.shape[0]
        if self.kind == "index":
            if not check:
                return out[(slice(None), *self.index)]
            if len(self.index) > out.dim() - 1:
                raise CaptumValueError(f"target: {self.index} has more indices than the output of shape "
                                       f"{tuple(out.shape)} has dimensions after the example dimension")
            for d, t in enumerate(self.index):
                size = out.shape[d + 1]
                if not -size <= t < size:
                    raise CaptumIndexError(f"target: index {t} is out of range for output dimension {d + 1} "
                                           f"of size {size} (output shape {tuple(out.shape)})")
            return out[(slice(None), *self.index)]
        if self.kind == "column":
            if out.dim() != 2:
                raise CaptumValueError(f"target: a class per example needs a 2-D output, got shape {tuple(out.shape)}")
            t = self.per_example.to(out.device)
            if check and ((t < 0).any() or (t >= out.shape[1]).any()):
                raise CaptumRuntimeError(f"target: class indices must lie in [0, {out.shape[1]}), got {t.tolist()}")
            return out.gather(1, t.index_select(0, rows.to(out.device))[:, None]).squeeze(-1)
        if self.kind == "tuples":
            idx = self.per_example.to(out.device)
            if idx.shape[1] > out.dim() - 1:
                raise CaptumIndexError(f"target: index tuples of length {idx.shape[1]} for an output of shape "
                                       f"{tuple(out.shape)}")
            sizes = torch.tensor(out.shape[1:1 + idx.shape[1]], device=out.device)
            if check and ((idx < -sizes) | (idx >= sizes)).any():
                raise CaptumIndexError(f"target: index tuples out of range for output shape {tuple(out.shape)}")
            idx = torch.where(idx < 0, idx + sizes, idx).index_select(0, rows.to(out.device))
            return out[(torch.arange(b, device=out.device), *idx.unbind(1))]
        return out

    def select(self, out: torch.Tensor, rows: torch.Tensor, check: bool = True) -> torch.Tensor:
        """The explained score per output row: pick() and captum's one-score-per-example check
        (it takes the gradient of each example's single selected value). -> (B, 1)."""
        b = out.shape[0]
        out = self.pick(out, rows, check)
        if out.reshape(b, -1).shape[1] != 1:
            raise CaptumValueError(
                f"target: the selected output has {out[0].numel()} values per example (output shape "
                f"{tuple(out.shape)}); give a target that selects one score per example (captum: 'Target not "
                "provided when necessary, cannot take gradient with respect to multiple outputs')")
        return out.reshape(b, 1)


def format_target(target, n: int) -> Target:
    """captum's target forms for n examples: None, an int, an index tuple, a list of ints or index
    tuples (one per example), a tensor with one integer or one per example."""
    if target is None:
        return Target("none")
    if isinstance(target, numbers.Integral):  # captum accepts bool as an int
        return Target("index", (int(target),))
    if isinstance(target, tuple):
        if not all(isinstance(t, numbers.Integral) for t in target):
            raise CaptumTypeError(f"target: an index tuple must hold integers, got {target!r}")
        return Target("index", tuple(int(t) for t in target))
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex():
            raise CaptumTypeError(f"target: expected integer indices, got a {target.dtype} tensor")
        if target.numel() == 1:
            return Target("index", (int(target.item()),))
        if target.dim() != 1 or target.numel() != n:
            raise CaptumValueError(f"target: a tensor of targets must be 1-D with one index per example ({n}), "
                                   f"got shape {tuple(target.shape)}")
        return Target("column", per_example=target.detach().long().cpu())
    if isinstance(target, list):
        if len(target) != n:
            raise CaptumValueError(f"target: the list has {len(target)} entries for {n} examples")
        if isinstance(target[0], numbers.Integral):
            if not all(isinstance(t, numbers.Integral) for t in target):
                raise CaptumTypeError("target: a list of targets must hold only integers or only tuples")
            return Target("column", per_example=torch.tensor([int(t) for t in target], dtype=torch.long))
        if isinstance(target[0], tuple):
            if not all(isinstance(t, tuple) and len(t) == len(target[0]) for t in target):
                raise CaptumValueError("target: a list of index tuples must hold tuples of one length")
            return Target("tuples", per_example=torch.tensor(target, dtype=torch.long).reshape(n, len(target[0])))
        raise CaptumValueError(f"target: list elements must be int or tuple, got {type(target[0]).__name__}")
    raise CaptumValueError(f"target: expected None, an int, a tuple, a list or a tensor, got {type(target).__name__}")


def format_additional_args(args, n: int) -> tuple:
    """captum's additional_forward_args: None, one value, or a tuple of values appended to the
    inputs. A tensor whose dimension 0 has one row per example (n) follows its example; other
    values (0-d tensors included) are passed unchanged to every call."""
    if args is None:
        return ()
    args = args if isinstance(args, tuple) else (args,)
    for j, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] != n:
            raise CaptumValueError(f"additional_forward_args: tensor {j} has {a.shape[0]} rows in dimension 0; "
                                   f"captum repeats such tensors per step, so they need one row per example ({n})")
    return args


def expand_args(args: tuple, rows: torch.Tensor) -> tuple:
    """additional_forward_args for examples rows (B,): per-example tensors gathered, rest unchanged."""
    return tuple(a.index_select(0, rows.to(a.device)) if isinstance(a, torch.Tensor) and a.dim() > 0 else a
                 for a in args)


def format_output(is_tuple: bool, out: tuple):
    """captum's _format_output: a tuple for tuple inputs, else its only tensor."""
    return out if is_tuple else out[0]
