"""Writes docs/text_tokens.png, the README's picture of the text view: a real attribution of a
tiny BERT trained here on a synthetic sentiment task (nothing is downloaded).

    python docs/text_tokens.py [--out docs/text_tokens.png] [--steps 400] [--ig-steps 64]

The model: BertForSequenceClassification from a BertConfig (2 layers, hidden 32, random init) with
a WordPiece tokenizer over a 60-word vocabulary (so "unwatchable" becomes un ##watch ##able),
trained for --steps AdamW steps (under a minute on one CPU core) on sentences whose label is
positive when they hold more positive than negative words. The per-token map is Integrated
Gradients at the embedding layer, summed over the hidden axis: `fastattr.explain(model, ids,
layer="bert.embeddings", ...).token_scores` (captum's default rule, Gauss-Legendre), with the
padding baseline that keeps [CLS] and [SEP], target = the predicted class, f_c = its log-odds
(logit minus the other class's logit; the probability saturates at 1.00 on this easy task, and its
integrated gradients would then say little); a sentence's scores sum to its log-odds minus the
log-odds at the baseline (both in its title), up to the printed delta. Sentences of different
lengths are padded to one batch; the attention mask marks the padding (trimmed: each sentence is
computed at its own length), which the picture omits.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastattr.text_view import save_token_png  # noqa: E402

POSITIVE = ["good", "great", "wonderful", "excellent", "brilliant", "enjoyable", "fun", "loved"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "hated", "unwatchable", "mess"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "story", "actors", "music", "ending", "was", "were", "is",
           "and", "but", "with", "really", "quite", "very", "at", "times", "overall", "i", "found", "it", "this",
           "acting", "script", "camera", "work", "felt", ","]
# WordPiece pieces: "wonderful" = wonder ##ful, "enjoyable" = enjoy ##able, "unwatchable" = un ##watch ##able
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + NEUTRAL + ["good", "great", "wonder", "##ful", "excellent",
         "brilliant", "enjoy", "##able", "fun", "loved", "bad", "awful", "boring", "terrible", "dull", "hated", "un",
         "##watch", "mess"])

SHOWN = [
    "overall the acting was brilliant and the music was wonderful",
    "i found the plot boring and the ending was a terrible mess",
    "the camera work was great but the script felt dull and the story was really unwatchable",
    "a fun film",
]


def sentence(rng: random.Random) -> tuple[str, int]:
    """A synthetic review and its label: 1 when it has more positive than negative words; one in
    five has neither, with a coin-flip label (so the model learns log-odds near 0 for no evidence,
    and a baseline without sentiment words sits near 0 too)."""
    if rng.random() < 0.2:
        pos = neg = 0
    else:
        while True:
            pos, neg = rng.randint(0, 3), rng.randint(0, 3)
            if pos != neg:
                break
    words = rng.choices(NEUTRAL, k=rng.randint(3, 10)) + rng.choices(POSITIVE, k=pos) + rng.choices(NEGATIVE, k=neg)
    rng.shuffle(words)
    return " ".join(words), int(pos > neg) if pos != neg else rng.randint(0, 1)


def build():
    """The WordPiece tokenizer over VOCAB and a randomly initialised tiny BERT classifier."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    assert tokenizer.tokenize("unwatchable") == ["un", "##watch", "##able"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return tokenizer, BertForSequenceClassification(config)


def train(model, tokenizer, steps: int) -> float:
    """AdamW on fresh synthetic batches of 32; returns the accuracy on 512 held-out sentences that
    have sentiment words (the others have coin-flip labels)."""
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        texts, labels = zip(*(sentence(rng) for _ in range(32)))
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()
    held_out = random.Random(1)
    texts, labels = zip(*(t for t in (sentence(held_out) for _ in range(640))
                          if any(w in POSITIVE + NEGATIVE for w in t[0].split())))
    with torch.no_grad():
        pred = model(**tokenizer(list(texts), padding=True, return_tensors="pt")).logits.argmax(-1)
    return (pred == torch.tensor(labels)).float().mean().item()


def token_scores(model, tokenizer, texts: list[str], ig_steps: int):
    """Per-token IG scores (N, T) at the embeddings (fastattr's layer=), tokens, mask, predicted
    class, its probability, the log-odds at the inputs and the baseline, and the completeness delta."""
    import fastattr

    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # baseline: [PAD] everywhere except [CLS] and [SEP] (kept, as is usual for BERT)
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    base = torch.where(special, ids, torch.full_like(ids, tokenizer.pad_token_id))

    def log_odds(out):  # (N, 2): each class's log-odds against the other
        return out.logits - out.logits.flip(-1)

    ex = fastattr.explain(model, ids, layer="bert.embeddings", baseline=base, output=log_odds,
                          model_kwargs={"attention_mask": mask}, steps=ig_steps, rule="gausslegendre")
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
    with torch.no_grad():
        p = model(input_ids=ids, attention_mask=mask).logits.softmax(-1).gather(1, ex.target[:, None])[:, 0]
    return ex.token_scores, tokens, mask, ex.target, p, ex.scores, ex.baseline_scores, ex.delta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "text_tokens.png"))
    ap.add_argument("--steps", type=int, default=400, help="training steps (batches of 32)")
    ap.add_argument("--ig-steps", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)  # small matrices: a second thread costs more than it gives
    tokenizer, model = build()
    t0 = time.perf_counter()
    acc = train(model, tokenizer, args.steps)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s; held-out accuracy {acc:.3f}")
    scores, tokens, mask, target, p, z, zb, delta = token_scores(model, tokenizer, SHOWN, args.ig_steps)
    names = ["negative", "positive"]
    titles = [f"predicted {names[int(c)]} (p = {float(q):.2f}); log-odds {float(a):.2f}, at the baseline "
              f"{float(b):.2f}" for c, q, a, b in zip(target, p, z, zb)]
    for t, d in zip(titles, delta.tolist()):
        print(f"{t}: completeness delta {d:+.2e}")
    save_token_png(args.out, tokens, scores, mask=mask, titles=titles)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
