"""Layer IG on transformer text classifiers (random weights, no download): fastattr against the
model-only floor and captum's LayerIntegratedGradients, interleaved in one process.

    python bench/bench_text.py [--repeats 3] [--only base|mixed] [--threads N] [--small]

base:  a BERT-base-shaped model (12 layers, hidden 768), 4 sentences of 64 tokens, 32 steps.
       floor = the same 128 forward+backward passes of the model with its embedding output replaced
       by the path points (a minimal hook), in fastattr's chunk size; fastattr IG and captum LIG
       (riemann_left, internal_batch_size = that chunk size) as ratios to it.
mixed: 24 sentences with lengths spread evenly from 12 to 96 tokens, padded to 96, a 4-layer model
       of hidden size 192, 16 steps: fastattr (padding trimmed: the default), fastattr with
       trim_padding=False, and captum LIG on the padded batch (internal_batch_size None: one batch,
       captum's default; and fastattr's chunk size). The maps are checked equal (1e-5 relative to
       the map's largest entry; padding exactly 0 in fastattr's) before timing.
Both: fastattr.captum.LayerIntegratedGradients (the drop-in class: captum's computation on the
       padded batch, no trimming) with the same steps and internal_batch_size as captum's, its map
       checked equal to captum's, and its time / captum's printed.
--threads: torch threads (default: torch's); on a machine shared with other jobs 1 thread gives
       steadier figures (spinning OpenMP threads of concurrent processes slow each other down).
--small: tiny sizes, to check that the script runs (no figures).
Maps explain the logit of class 1 (output="logit"), baseline [CLS] pad... pad [SEP].
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import frozen, interleaved, report  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402

CLS, SEP, PAD, VOCAB = 101, 102, 0, 30522


def bert(layers: int, hidden: int, heads: int, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, num_labels=2, initializer_range=0.05)
    return BertForSequenceClassification(cfg).eval()


def batch(lengths, tokens: int, seed: int = 0):
    """Right-padded ids (N, T), attention_mask and the [CLS] pad [SEP] baseline."""
    g = torch.Generator().manual_seed(seed)
    n = len(lengths)
    ids = torch.full((n, tokens), PAD, dtype=torch.long)
    mask = torch.zeros(n, tokens, dtype=torch.long)
    base = torch.full((n, tokens), PAD, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, :length] = torch.randint(1000, VOCAB, (length,), generator=g)
        ids[i, 0], ids[i, length - 1] = CLS, SEP
        mask[i, :length] = 1
        base[i, 0], base[i, length - 1] = CLS, SEP
    return ids, mask, base


def floor_fn(model, ids, mask, steps: int, chunk: int):
    """steps points per sentence through the model with the embedding output replaced, forward +
    backward w.r.t. the points, chunks of `chunk`, parameters frozen: nothing but the model."""
    emb = model.bert.embeddings
    with torch.no_grad():
        h = emb(ids)  # (N, T, H)
    n = ids.shape[0]
    point_row = torch.arange(n).repeat_interleave(steps)
    held = {}

    def hook(module, args, out):
        return held["p"]

    def run():
        handle = emb.register_forward_hook(hook)
        try:
            with frozen(model):
                for s in range(0, n * steps, chunk):
                    rows = point_row[s:s + chunk]
                    p = h.index_select(0, rows).requires_grad_(True)
                    held["p"] = p
                    y = model(ids.index_select(0, rows), attention_mask=mask.index_select(0, rows)).logits[:, 1]
                    torch.autograd.grad(y.sum(), p)
        finally:
            handle.remove()

    return run


def fastattr_ig(model, ids, mask, base, steps, **kw):
    return fastattr.attribute(model, ids, 1, layer="bert.embeddings", baseline=base, steps=steps, output="logit",
                              model_kwargs={"attention_mask": mask}, **kw)


def captum_lig(model, ids, mask, base, steps, internal_batch_size=None):
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings)
    return lig.attribute(ids, base, target=1, additional_forward_args=(mask,), n_steps=steps,
                         method="riemann_left", internal_batch_size=internal_batch_size)


def fastattr_captum_lig(model, ids, mask, base, steps, internal_batch_size=None):
    import fastattr.captum

    lig = fastattr.captum.LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits,
                                                   model.bert.embeddings)
    return lig.attribute(ids, base, target=1, additional_forward_args=(mask,), n_steps=steps,
                         method="riemann_left", internal_batch_size=internal_batch_size)


def drop_in_ratio(times, ours: str, theirs: str) -> None:
    """fastattr.captum's LayerIntegratedGradients time / captum's (medians of the same run)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"fastattr.captum / captum LayerIntegratedGradients ({theirs.split('(')[-1].rstrip(')')}): "
          f"{med[ours] / med[theirs]:.3f} (captum {med[theirs] / med[ours]:.2f}x its time)")


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def bench_base(args) -> None:
    layers, hidden, heads, n, tokens, steps = (2, 64, 2, 2, 16, 4) if args.small else (12, 768, 12, 4, 64, 32)
    model = bert(layers, hidden, heads)
    ids, mask, base = batch([tokens] * n, tokens)
    chunk = default_batch_size(torch.device("cpu"), tokens * hidden)  # fastattr's chunk for these points
    err = relative_error(fastattr_ig(model, ids, mask, base, steps),
                         captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk))
    drop_err = relative_error(fastattr_captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk),
                              captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk))
    print(f"base: {layers} layers, hidden {hidden}, {n} x {tokens} tokens, {steps} steps, chunk {chunk}; "
          f"fastattr vs captum max error {err:.2e}, fastattr.captum LIG vs captum {drop_err:.2e} (relative to "
          "the map's max)")
    captum_name = f"captum LayerIntegratedGradients (internal_batch_size={chunk})"
    drop_name = f"fastattr.captum LayerIntegratedGradients (internal_batch_size={chunk})"
    cands = {
        "floor": floor_fn(model, ids, mask, steps, chunk),
        "fastattr layer IG": lambda: fastattr_ig(model, ids, mask, base, steps),
        captum_name: lambda: captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk),
        drop_name: lambda: fastattr_captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk),
    }
    times = interleaved(cands, repeats=args.repeats)
    print(report(times, title=f"BERT-base-shaped ({layers} layers, hidden {hidden}), {n} sentences of {tokens} "
                              f"tokens, {steps} steps, {torch.get_num_threads()} threads"))
    drop_in_ratio(times, drop_name, captum_name)


def bench_mixed(args) -> None:
    layers, hidden, heads, n, lo, hi, steps = (2, 32, 2, 6, 4, 16, 4) if args.small else (4, 192, 4, 24, 12, 96, 16)
    model = bert(layers, hidden, heads, seed=1)
    lengths = [round(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    ids, mask, base = batch(lengths, hi, seed=1)
    chunk = default_batch_size(torch.device("cpu"), hi * hidden)
    ours = fastattr_ig(model, ids, mask, base, steps)
    full = fastattr_ig(model, ids, mask, base, steps, trim_padding=False)
    ref = captum_lig(model, ids, mask, base, steps)
    real = mask.bool()
    err = relative_error(ours[real], ref[real])
    print(f"mixed: lengths {lengths[0]}..{lengths[-1]} padded to {hi}; fastattr (trimmed) vs captum max error "
          f"{err:.2e}, untrimmed vs captum {relative_error(full, ref):.2e}; padding exactly 0: "
          f"{bool((ours[~real] == 0).all())}; real tokens {int(real.sum())} of {real.numel()}")
    drop_err = relative_error(fastattr_captum_lig(model, ids, mask, base, steps), ref)
    print(f"fastattr.captum LIG (padded, its default chunks) vs captum (one batch) max error {drop_err:.2e}")
    assert err <= 1e-5 and drop_err <= 1e-5 and bool((ours[~real] == 0).all()), "maps differ"
    cands = {
        "fastattr layer IG (trimmed)": lambda: fastattr_ig(model, ids, mask, base, steps),
        "fastattr layer IG (trim_padding=False)": lambda: fastattr_ig(model, ids, mask, base, steps,
                                                                      trim_padding=False),
        "captum LayerIntegratedGradients (one batch)": lambda: captum_lig(model, ids, mask, base, steps),
        f"captum LayerIntegratedGradients (internal_batch_size={chunk})":
            lambda: captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk),
        "fastattr.captum LayerIntegratedGradients (internal_batch_size=None)":
            lambda: fastattr_captum_lig(model, ids, mask, base, steps),
        f"fastattr.captum LayerIntegratedGradients (internal_batch_size={chunk})":
            lambda: fastattr_captum_lig(model, ids, mask, base, steps, internal_batch_size=chunk),
    }
    times = interleaved(cands, repeats=args.repeats)
    print(report(times, floor="fastattr layer IG (trimmed)",
                 title=f"{n} sentences of {lengths[0]}-{lengths[-1]} tokens padded to {hi}, {layers} layers, hidden "
                       f"{hidden}, {steps} steps, {torch.get_num_threads()} threads (x = time / fastattr trimmed)"))
    med = {k: statistics.median(v) for k, v in times.items()}
    best_captum = min(v for k, v in med.items() if k.startswith("captum"))
    print(f"fastattr (trimmed) is {best_captum / med['fastattr layer IG (trimmed)']:.2f}x faster than captum's "
          "faster variant")
    drop_in_ratio(times, f"fastattr.captum LayerIntegratedGradients (internal_batch_size={chunk})",
                  f"captum LayerIntegratedGradients (internal_batch_size={chunk})")
    print("fastattr.captum LayerIntegratedGradients (internal_batch_size=None, fastattr's chunks) / captum (one "
          "batch, its default): "
          f"{med['fastattr.captum LayerIntegratedGradients (internal_batch_size=None)'] / med['captum LayerIntegratedGradients (one batch)']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("base", "mixed"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--small", action="store_true", help="tiny sizes: check that the script runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only in (None, "base"):
        bench_base(args)
    if args.only in (None, "mixed"):
        bench_mixed(args)


if __name__ == "__main__":
    main()
