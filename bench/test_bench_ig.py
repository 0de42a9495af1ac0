"""pytest-benchmark cases for IG/IDGI vs the floor and the peers (run: pytest bench/test_bench_ig.py).

Not part of the test suite (testpaths=tests); performance claims live here, not in unit tests."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn  # noqa: E402
from peers import captum_ig, pair_ig  # noqa: E402

import fastattr  # noqa: E402

STEPS, BATCH = 32, 8


@pytest.fixture(scope="module")
def setup():
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    torch.set_num_threads(2)
    return load_default_model(), bundled_images()["chelsea"]


def test_floor(benchmark, setup):
    model, image = setup
    benchmark.pedantic(floor_fn(model, image, STEPS, BATCH), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("idgi", [False, True], ids=["ig", "idgi"])
def test_fastattr(benchmark, setup, idgi):
    model, image = setup
    benchmark.pedantic(lambda: fastattr.attribute(model, image[None], 285, steps=STEPS, idgi=idgi, batch_size=BATCH),
                       rounds=3, warmup_rounds=1)


def test_captum(benchmark, setup):
    model, image = setup
    benchmark.pedantic(lambda: captum_ig(model, image[None], 285, STEPS, internal_batch_size=BATCH),
                       rounds=3, warmup_rounds=1)


def test_pair(benchmark, setup):
    model, image = setup
    benchmark.pedantic(lambda: pair_ig(model, image, 285, STEPS, batch_size=8), rounds=3, warmup_rounds=1)
