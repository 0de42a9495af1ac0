"""fastattr::path_accumulate_: the C++ CPU op and the Triton kernel (TRITON_INTERPRET=1, in a
subprocess) against the pure-torch reference, a numpy oracle of the IDGI authors' function, and
torch.library.opcheck."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastattr  # noqa: F401  (registers torch.ops.fastattr.*)
from fastattr.kernels.path_accumulate import path_accumulate_ref
from fastattr.ops._library import HAS_C, HAS_TRITON

OP = torch.ops.fastattr.path_accumulate_
needs_c = pytest.mark.skipif(not HAS_C, reason="fastattr._C not built: the CPU op is the reference itself")


def idgi_oracle(gradients, predictions):
    """The IDGI authors' function: lists of gradients and predictions of equal length N."""
    A = np.zeros_like(gradients[0])
    for i in range(len(gradients) - 1):
        g = gradients[i]
        d = predictions[i + 1] - predictions[i]
        A += g * g * d / np.sum(g * g)
    return A


def make_case(S, D, grad_dtype, seed=0, zero_step=True):
    """grads (S, D) with step 1 all zero, coef (S,) float64, index (S,) with repeated rows."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(S, D, generator=gen).to(grad_dtype)
    if zero_step and S > 1:
        grads[1] = 0
    coef = torch.randn(S, generator=gen, dtype=torch.float64)
    index = torch.tensor([0, 0, 2, 0, 2][:S] + [1] * max(0, S - 5), dtype=torch.int64)
    return grads, coef, index


@needs_c
@pytest.mark.parametrize("idgi", [False, True], ids=["riemann", "idgi"])
@pytest.mark.parametrize("acc_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [1, 7, 150_529])
def test_cpp_op_matches_reference(idgi, acc_dtype, grad_dtype, D):
    grads, coef, index = make_case(5, D, grad_dtype)
    start = torch.randn(3, D, generator=torch.Generator().manual_seed(9), dtype=acc_dtype)
    want, got = start.clone(), start.clone()
    path_accumulate_ref(want, grads, coef, index, idgi)
    OP(got, grads, coef, index, idgi)
    # The reference rounds each term once (float64 math, one cast); the op rounds in acc dtype
    # per add, so agreement is to a few ulps of acc's dtype.
    tol = 1e-5 if acc_dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert not torch.equal(got, start)  # something was accumulated (the test can fail)


@needs_c
@pytest.mark.parametrize("idgi", [False, True], ids=["riemann", "idgi"])
def test_cpp_op_all_zero_step_adds_nothing(idgi):
    grads = torch.zeros(3, 11)
    grads[2] = torch.arange(11.0)
    acc = torch.ones(2, 11)
    OP(acc, grads, torch.tensor([0.7, -0.3, 0.5]), torch.tensor([0, 0, 1]), idgi)
    assert torch.isfinite(acc).all()
    torch.testing.assert_close(acc[0], torch.ones(11), rtol=0, atol=0)  # only zero steps hit row 0
    expect = grads[2] ** 2 * 0.5 / (grads[2] ** 2).sum() if idgi else grads[2] * 0.5
    torch.testing.assert_close(acc[1], 1 + expect)


@pytest.mark.parametrize("impl", ["op", "ref"])
def test_idgi_tiny_gradients_stay_finite_and_complete(impl):
    # Probability gradients of a confident model can be ~1e-25: their squares underflow float32.
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(4, 1000, generator=gen) * 1e-25
    coef = torch.tensor([0.1, 0.2, 0.3, -0.05], dtype=torch.float64)
    acc = torch.zeros(2, 1000)
    (OP if impl == "op" else path_accumulate_ref)(acc, grads, coef, torch.tensor([0, 1, 1, 0]), True)
    assert torch.isfinite(acc).all()
    torch.testing.assert_close(acc.double().sum(1), torch.tensor([0.05, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("D", [1, 7, 150_529])
def test_op_equals_authors_idgi_function(D):
    m = 6
    gen = torch.Generator().manual_seed(D)
    grads = torch.randn(m + 1, D, generator=gen, dtype=torch.float64)  # the last one is never used
    preds = torch.rand(m + 1, generator=gen, dtype=torch.float64)
    want = idgi_oracle(list(grads.numpy()), list(preds.numpy()))
    acc = torch.zeros(1, D, dtype=torch.float64)
    OP(acc, grads[:m], preds[1:] - preds[:-1], torch.zeros(m, dtype=torch.int64), True)
    np.testing.assert_allclose(acc[0].numpy(), want, rtol=1e-12, atol=1e-15)
    # completeness: the map sums to the output change along the path
    assert acc.sum().item() == pytest.approx((preds[-1] - preds[0]).item(), rel=1e-12, abs=1e-15)


@needs_c
def test_cpp_op_errors_name_the_parameter():
    acc, g = torch.zeros(2, 4), torch.ones(3, 4)
    c = torch.ones(3)
    with pytest.raises(RuntimeError, match="index 2 out of range"):
        OP(acc, g, c, torch.tensor([0, 1, 2]), True)
    with pytest.raises(RuntimeError, match="index must be int64"):
        OP(acc, g, c, torch.tensor([0, 1, 1], dtype=torch.int32), True)
    with pytest.raises(RuntimeError, match="differ in D"):
        OP(acc, torch.ones(3, 5), c, torch.tensor([0, 1, 1]), True)
    with pytest.raises(RuntimeError, match="acc must be float32 or float64"):
        OP(acc.half(), g, c, torch.tensor([0, 1, 1]), True)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
@pytest.mark.parametrize("idgi", [False, True], ids=["riemann", "idgi"])
def test_4d_grads_are_read_in_memory_order(idgi, impl):
    """grads (S, C, H, W): a contiguous tensor is read as its flattened rows, a channels-last one in
    memory order (H, W, C), as the 2-D calls on the same rows give them, bit for bit."""
    if impl == "cpp" and not HAS_C:
        pytest.skip("fastattr._C not built")
    op = OP if impl == "cpp" else path_accumulate_ref
    g = torch.randn(5, 3, 4, 6, generator=torch.Generator().manual_seed(3))
    coef = torch.rand(5, dtype=torch.float64) + 0.1
    index = torch.tensor([0, 1, 0, 2, 1])
    for grads, rows in ((g, g.reshape(5, -1)),
                        (g.contiguous(memory_format=torch.channels_last), g.permute(0, 2, 3, 1).reshape(5, -1)),
                        (g.transpose(2, 3), g.transpose(2, 3).reshape(5, -1))):  # strided: logical order
        acc, expected = torch.zeros(3, 72), torch.zeros(3, 72)
        op(acc, grads, coef, index, idgi)
        op(expected, rows.contiguous(), coef, index, idgi)
        assert torch.equal(acc, expected)


@pytest.mark.parametrize("idgi", [False, True], ids=["riemann", "idgi"])
def test_opcheck(idgi):
    grads, coef, index = make_case(5, 37, torch.float32)
    acc = torch.zeros(3, 37)
    # A mutating op returning nothing: schema (declared mutation of acc only), fake tensor and
    # autograd registration checks apply; the AOT dispatch check needs an output to differentiate.
    torch.library.opcheck(OP, (acc, grads, coef, index, idgi),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


# --- Triton kernel under the interpreter (subprocess: TRITON_INTERPRET must be set before the
# kernel module is imported, and this process has imported it already). -------------------------

_TRITON_SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import fastattr.kernels.path_accumulate as pa
    sys.path.insert(0, sys.argv[1])
    from test_path_accumulate_op import make_case
    assert type(pa._idgi_kernel).__name__ == "InterpretedFunction"
    out = {}
    for forced_split in (False, True):
        if forced_split:  # many programs per step: exercises the atomic adds across program shares
            pa._programs_target = lambda device: 64
        for idgi in (False, True):
            for D in (1, 7, 1500, 5003):
                for gdt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                    for adt in (torch.float32, torch.float64):
                        if (gdt == torch.float64) != (adt == torch.float64) and D != 7:
                            continue
                        grads, coef, index = make_case(5 if not forced_split else 2, D, gdt, seed=D)
                        start = torch.randn(3, D, dtype=adt)
                        want, got = start.clone(), start.clone()
                        pa.path_accumulate_ref(want, grads, coef, index, idgi)
                        pa.path_accumulate_triton(got, grads, coef, index, idgi)
                        key = f"split={forced_split}-idgi={idgi}-D={D}-{gdt}-{adt}".replace("torch.", "")
                        err = ((got.double() - want.double()).abs() / (1 + want.double().abs())).max().item()
                        out[key] = [err, bool(torch.isfinite(got).all()), not torch.equal(got, start)]
    g = torch.randn(4, 300) * 1e-25  # squares underflow fp32: the max-rescaled reduction keeps them
    acc = torch.zeros(2, 300)
    pa.path_accumulate_triton(acc, g, torch.tensor([0.1, 0.2, 0.3, -0.05]), torch.tensor([0, 1, 1, 0]), True)
    out["tiny"] = [abs(acc.double().sum(1) - torch.tensor([0.05, 0.5], dtype=torch.float64)).max().item(),
                   bool(torch.isfinite(acc).all()), True]
    acc = torch.ones(2, 9)
    pa.path_accumulate_triton(acc, torch.zeros(0, 9), torch.zeros(0), torch.zeros(0, dtype=torch.long), True)
    out["empty"] = [(acc - 1).abs().max().item(), True, True]
    try:
        pa.path_accumulate_triton(torch.zeros(2, 9), torch.ones(3, 9), torch.ones(3), torch.ones(3, dtype=torch.int32), True)
        out["error"] = "no error"
    except ValueError as e:
        out["error"] = str(e)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def triton_results():
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT, os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_triton_kernel_matches_reference(triton_results):
    cases = {k: v for k, v in triton_results.items() if k.startswith("split=")}
    assert len(cases) >= 40
    bad = {k: v for k, v in cases.items() if not (v[0] < 2e-6 and v[1] and v[2])}
    assert not bad, f"Triton != reference (max rel err, finite, changed): {bad}"
    # float64 accumulators (float64 models) keep float64 precision on CUDA: the reference computes them
    f64 = {k: v for k, v in cases.items() if k.endswith("-float64")}
    assert f64 and all(v[0] < 1e-13 for v in f64.values()), f64


def test_triton_kernel_edge_cases(triton_results):
    err, finite, _ = triton_results["tiny"]
    assert finite and err < 1e-6, triton_results["tiny"]
    assert triton_results["empty"][0] == 0.0
    assert "index must be int64" in triton_results["error"]
