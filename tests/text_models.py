"""Tiny Hugging Face models with random weights (no download) and padded sentence batches, for the
layer-attribution tests. Weights are drawn wider than the configs' default (initializer_range 0.02
makes a random transformer's output almost constant, so maps would be all rounding)."""
from __future__ import annotations

import torch

VOCAB, CLS, SEP, PAD = 100, 2, 3, 0


def _small(config_cls, seed: int, **kw):
    torch.manual_seed(seed)
    return config_cls(**kw)


def bert(seed: int = 0, labels: int = 3):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = _small(BertConfig, seed, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64, num_labels=labels, initializer_range=0.3,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval(), "bert.embeddings"


def distilbert(seed: int = 1, labels: int = 3):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = _small(DistilBertConfig, seed, vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                 max_position_embeddings=64, num_labels=labels, initializer_range=0.3, dropout=0.0,
                 attention_dropout=0.0, seq_classif_dropout=0.0)
    return DistilBertForSequenceClassification(cfg).eval(), "distilbert.embeddings"


def roberta(seed: int = 2, labels: int = 3):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = _small(RobertaConfig, seed, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=70, num_labels=labels, initializer_range=0.3,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=PAD)
    return RobertaForSequenceClassification(cfg).eval(), "roberta.embeddings"


def gpt2(seed: int = 3):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = _small(GPT2Config, seed, vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                 initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval(), "transformer.wte"


def vit(seed: int = 4, labels: int = 5):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = _small(ViTConfig, seed, image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, num_labels=labels, initializer_range=0.3,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(cfg).eval(), "vit.embeddings.patch_embeddings"


def sentences(lengths, tokens: int | None = None, side: str = "right", seed: int = 0):
    """Padded ids (N, T) of sentences [CLS] w... [SEP] of the given lengths, their attention_mask and
    the usual baseline (pad ids with [CLS]/[SEP] kept)."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or max(lengths)
    n = len(lengths)
    ids = torch.full((n, tokens), PAD, dtype=torch.long)
    mask = torch.zeros(n, tokens, dtype=torch.long)
    base = torch.full((n, tokens), PAD, dtype=torch.long)
    for i, length in enumerate(lengths):
        cols = range(tokens - length, tokens) if side == "left" else range(length)
        words = torch.randint(5, VOCAB, (length,), generator=g)
        words[0], words[-1] = CLS, SEP
        ids[i, list(cols)] = words
        mask[i, list(cols)] = 1
        base[i, cols[0]], base[i, cols[-1]] = CLS, SEP
    return ids, mask, base


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (what a left-padded causal LM needs); 0 on padding."""
    return (mask.cumsum(1) - 1).clamp_min(0)
