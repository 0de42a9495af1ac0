"""fastattr.host_checks: the C++ host loops (all_finite, rows_equal, zero_on_host) against torch's
own element-wise answers, on every dtype they take, with NaN/inf in the vectorised blocks and in
the tail, strided score columns, signed zeros; and the torch fallback where the loops do not apply."""
import numpy as np
import pytest
import torch

from fastattr import host_checks
from fastattr.ops._library import HAS_C

needs_c = pytest.mark.skipif(not HAS_C, reason="fastattr._C not built: host checks take the torch ops")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 67])
def test_all_finite_matches_torch(dtype, n):
    assert host_checks.on_host(torch.zeros(n))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for pos in {0, n // 2, n - 1}:  # a full block of 8, the middle, the tail
            t = torch.randn(n).to(dtype)
            assert host_checks.all_finite(t)
            t[pos] = bad
            assert host_checks.all_finite(t) == bool(torch.isfinite(t).all()) is False


@needs_c
def test_all_finite_reads_strided_columns_and_large_finite_values():
    scores = torch.randn(6, 4)
    col = scores[:, 2]  # the engine's f_c: one column of the (B, K) scores, stride 4
    assert not col.is_contiguous() and host_checks.all_finite(col)
    scores[3, 2] = float("nan")
    assert not host_checks.all_finite(col)
    scores[3, 2], scores[4, 1] = 0.0, float("inf")  # outside the column: not read
    assert host_checks.all_finite(col)
    assert host_checks.all_finite(torch.full((9,), 3.0e38))  # finite near float32's maximum
    assert host_checks.all_finite(torch.arange(5))  # integers are always finite


def test_all_finite_falls_back_to_torch_for_strided_tensors():
    t = torch.randn(4, 6)[:, ::2]
    assert not host_checks.on_host(t)
    assert host_checks.all_finite(t)
    t[1, 1] = float("inf")
    assert not host_checks.all_finite(t)


@pytest.mark.parametrize("dtype", DTYPES + [torch.int64])
def test_rows_equal_matches_torch_eq(dtype):
    a = torch.tensor([[0.0, 1.0, 2.0], [-0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]).to(dtype)
    b = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 3.0], [0.0, 0.0, 0.0]]).to(dtype)
    expected = (a == b).flatten(1).all(1).tolist()
    assert host_checks.rows_equal(a, b) == expected == [True, True, False, True]
    nan = torch.full((1, 3), float("nan"))
    assert host_checks.rows_equal(nan, nan.clone()) == [False]  # NaN equals nothing, as torch.eq
    assert host_checks.rows_equal(a[:, ::2], b[:, ::2]) == (a[:, ::2] == b[:, ::2]).all(1).tolist()


@needs_c
@pytest.mark.parametrize("dtype", DTYPES + [torch.int32, torch.bool])
def test_zero_on_host(dtype):
    z = torch.zeros(2, 3, 5, dtype=dtype)
    assert host_checks.zero_on_host(z)
    if dtype.is_floating_point:
        z[1, 2, 4] = -0.0
        assert host_checks.zero_on_host(z)
    z[1, 2, 4] = 1
    assert not host_checks.zero_on_host(z)
    assert not host_checks.zero_on_host(torch.zeros(4, 6)[:, ::2])  # not checked: not a known zero


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_rows_nonzero_finite_matches_torch(dtype, layout):
    """IDGI's fast-chunk test: every row has a non-zero element and all elements are finite, for
    rows shorter and longer than the 16 vector lanes, bad values in a lane block and in the tail."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for c, h, w in ((1, 1, 3), (3, 5, 7), (8, 4, 4)):
        def expected(t):
            rows = t.float().flatten(1)
            return bool((rows.abs().amax(1) > 0).all()) and bool(torch.isfinite(rows).all())

        g = torch.randn(4, c, h, w).to(dtype).contiguous(memory_format=fmt)
        assert host_checks.rows_nonzero_finite(g) is True
        d = c * h * w
        for row, flat in ((0, 0), (2, d - 1), (3, d // 2)):
            for bad in (0.0, float("nan"), float("inf")):
                t = g.clone(memory_format=fmt)
                if bad == 0.0:
                    t[row] = 0  # a whole row of zeros (a step with no gradient)
                else:
                    t[(row, *np.unravel_index(flat, (c, h, w)))] = bad
                assert host_checks.rows_nonzero_finite(t) == expected(t) is False
        one = torch.zeros(4, c, h, w).to(dtype).contiguous(memory_format=fmt)
        one[:, -1, -1, -1] = -1.0  # one non-zero element per row, the last in logical order
        assert host_checks.rows_nonzero_finite(one) is True


def test_rows_nonzero_finite_is_not_asked_of_strided_tensors():
    assert host_checks.rows_nonzero_finite(torch.randn(4, 6)[:, ::2]) is None
