"""Text view: tokens coloured by their attribution score, as HTML (notebooks) and PNG (files).

    from fastattr.text_view import token_html, save_token_png
    view = token_html(tokens, scores, mask=attention_mask, titles=["positive (p = 0.97)", ...])
    view                                  # a notebook displays it (view._repr_html_())
    view.save_html("tokens.html")
    save_token_png("tokens.png", tokens, scores, mask=attention_mask, titles=[...])

tokens: one sentence (a list of str) or several (a list of lists); scores (T,) or (N, T), a
torch tensor, numpy array or nested list, e.g. `explain(...).token_scores` (the map summed over
the hidden axis; padding exactly 0) or any per-token map; mask (T,) or (N, T), the attention mask:
positions where it is 0 (padding, at the end or the start of a row) are omitted. A sentence's
token list is either as long as its row of scores (token t has score t), or, with a mask, as long
as the row's real tokens (they take the unmasked positions in order), or, without a mask, shorter
than T with exact zeros after it (the padding of right-padded rows).

Colours: a diverging scale centred at 0 (matplotlib's RdBu_r, as fastattr's signed heatmaps):
red raises the target's score, blue lowers it, 0 is the neutral middle (near white). The limits
are symmetric, +-v, so equal |score| gets equal strength on both sides. scale="shared" (default):
v = the largest |score| over every shown token of every sentence, so a colour means the same
score everywhere in the picture and sentences can be compared honestly (a sentence with weak
scores looks weak). scale="sentence": v per sentence (its max |score|, printed with its title):
the structure inside weak sentences becomes visible, but colours no longer compare across
sentences. scale=<number>: a fixed v (for comparing pictures); larger scores are clipped to the
end colours, and the legend says so. A sentence whose shown scores are all 0 is drawn neutral
and labelled "all scores 0".

Subwords (subwords="auto" detects which applies): WordPiece (BERT) "##ing" continues the previous
token's word: shown as "ing", its box touching the previous one; byte-level BPE (GPT-2, RoBERTa)
"Ġword" and SentencePiece "▁word" start a word: shown as "word" after a gap, while tokens without
the marker continue the word; GPT-2's byte characters are decoded ("Ċ" newline shown as "↵",
"Ã©" as "é"). Special tokens ([CLS], [SEP], <s>, </s>, <|endoftext|>, ...) always stand alone. Every
token keeps its own box and colour; lines wrap between words only. In the HTML, each token's
tooltip gives its position, raw token and score.

Errors name the argument at fault (tokens, scores, mask, titles, scale, subwords): mismatched
lengths and shapes, NaN/inf scores (with the sentence and position).
"""
from __future__ import annotations

import html
import math
import numbers
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = ["TokenView", "token_html", "save_token_png", "SCALES", "SUBWORDS"]

CMAP = "RdBu_r"
SCALES = ("shared", "sentence")
SUBWORDS = ("auto", "wordpiece", "marker", "none")
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?/?[A-Za-z0-9_.:-]+\|?>)$")
_MARKERS = ("Ġ", "▁")


# -- inputs ------------------------------------------------------------------------------------------

@dataclass
class Sentence:
    """One sentence to draw: its shown tokens, their scores and positions in the row of scores."""

    tokens: list[str]
    scores: np.ndarray  # (L,) float64
    positions: list[int]
    title: str = ""


def _as_array(x, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            if x.is_complex():
                raise TypeError(f"{name}: expected real numbers, got a {x.dtype} tensor")
            return x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        a = np.asarray(x)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: expected a tensor, array or nested list of numbers with equal row "
                         "lengths") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name}: expected numbers, got {a.dtype} (ragged rows? pad them to one length)")
    if np.iscomplexobj(a):
        raise TypeError(f"{name}: expected real numbers, got {a.dtype}")
    return a.astype(np.float64)


def _token_lists(tokens) -> tuple[list[list[str]], bool]:
    """tokens as a list of sentences, and whether one sentence (a flat list) was given."""
    if isinstance(tokens, str):
        raise TypeError("tokens: expected a list of tokens (one sentence) or a list of lists (several), got a "
                        "str; split it into tokens first (e.g. tokenizer.convert_ids_to_tokens(ids))")
    if not isinstance(tokens, Sequence) or len(tokens) == 0:
        raise TypeError(f"tokens: expected a non-empty list of str or of lists of str, got {type(tokens).__name__}"
                        + (" of length 0" if isinstance(tokens, Sequence) else ""))
    single = isinstance(tokens[0], str)  # one sentence: a flat list of str
    sentences = [list(tokens)] if single else []
    if not single:
        for n, sent in enumerate(tokens):
            if isinstance(sent, str) or not isinstance(sent, Sequence):
                raise TypeError(f"tokens: expected every element to be a list of str (several sentences) or every "
                                f"element a str (one sentence); tokens[{n}] is {type(sent).__name__}")
            sentences.append(list(sent))
    for n, sent in enumerate(sentences):
        for t, tok in enumerate(sent):
            if not isinstance(tok, str):
                raise TypeError(f"tokens: token {t} of sentence {n} is {type(tok).__name__}, expected str")
    return sentences, single


def sentences(tokens, scores, mask=None, titles=None) -> list[Sentence]:
    """The shown tokens of each sentence with their scores (see the module docstring for how
    tokens, scores (T,)/(N, T) and mask line up); errors name the argument at fault."""
    toks, single = _token_lists(tokens)
    s = _as_array(scores, "scores")
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2:
        raise ValueError(f"scores: expected (T,) for one sentence or (N, T) for N sentences, got shape {s.shape}")
    if s.shape[0] != len(toks):
        what = "one sentence (a flat list of tokens)" if single else f"{len(toks)} sentences"
        raise ValueError(f"scores: {s.shape[0]} rows of scores for {what}; expected shape "
                         f"({len(toks)}, T)" + (" or (T,)" if single else ""))
    m = None
    if mask is not None:
        m = _as_array(mask, "mask")
        if m.ndim == 1:
            m = m[None]
        if m.shape != s.shape:
            raise ValueError(f"mask: shape {tuple(_as_array(mask, 'mask').shape)} does not match the scores' "
                             f"{tuple(s.shape) if not single else (s.shape[1],)}")
        m = m != 0
    if titles is None:
        titles = [""] * len(toks)
    elif isinstance(titles, str):
        titles = [titles]
    if len(titles) != len(toks) or not all(isinstance(t, str) for t in titles):
        raise ValueError(f"titles: expected {len(toks)} str (one per sentence), got {titles!r:.200}")
    out = []
    t_len = s.shape[1]
    for n, (sent, row) in enumerate(zip(toks, s)):
        keep = m[n] if m is not None else None
        if len(sent) == t_len:
            pos = [t for t in range(t_len) if keep is None or keep[t]]
            shown = [sent[t] for t in pos]
        elif keep is not None and len(sent) == int(keep.sum()):
            pos = [int(t) for t in np.flatnonzero(keep)]
            shown = sent
        elif keep is None and len(sent) < t_len and not row[len(sent):].any():
            pos, shown = list(range(len(sent))), sent
        else:
            real = f", {int(keep.sum())} real (mask)" if keep is not None else ""
            tail = "" if keep is not None or len(sent) > t_len else (
                " and the scores after its tokens are not all 0 (pass mask= to mark the padding)")
            raise ValueError(f"tokens: sentence {n} has {len(sent)} tokens for {t_len} scores{real}{tail}; give "
                             "one token per score, or one per real (unmasked) position with mask=")
        vals = row[pos]
        bad = ~np.isfinite(vals)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(f"scores: NaN or inf at sentence {n}, position {pos[j]} (token {shown[j]!r}); "
                             "check the attribution (explain() names non-finite maps)")
        out.append(Sentence(shown, vals, pos, titles[n]))
    return out


def _limits(sents: list[Sentence], scale) -> list[float]:
    """v per sentence: the colour scale is [-v, v] (v = 0: every token neutral)."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"scale: unknown value {scale!r}; choose from {list(SCALES)} or a number > 0")
        per = [float(np.abs(x.scores).max()) if len(x.scores) else 0.0 for x in sents]
        return per if scale == "sentence" else [max(per)] * len(sents)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected {list(SCALES)} or a finite number > 0, got {scale!r}")
    return [float(scale)] * len(sents)


# -- tokens -> displayed pieces --------------------------------------------------------------------

@lru_cache(maxsize=1)
def _gpt2_bytes() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable character -> the byte it stands for."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append((chr(b), b))
        else:
            chars.append((chr(256 + extra), b))
            extra += 1
    return dict(chars)


def _decode_bytes(tok: str) -> str:
    """A byte-level BPE token's text (UTF-8, broken multi-byte pieces as U+FFFD); the token itself
    when it has characters outside the byte alphabet."""
    table = _gpt2_bytes()
    if not all(c in table for c in tok):
        return tok
    return bytes(table[c] for c in tok).decode("utf-8", errors="replace")


def _scheme(tokens: list[str], subwords: str) -> str:
    if subwords not in SUBWORDS:
        raise ValueError(f"subwords: unknown value {subwords!r}; choose from {list(SUBWORDS)}")
    if subwords != "auto":
        return subwords
    plain = [t for t in tokens if not _SPECIAL.match(t)]
    if any(t.startswith("##") and len(t) > 2 for t in plain):
        return "wordpiece"
    if any(t[:1] in _MARKERS for t in plain):
        return "marker"
    return "none"


def pieces(tokens: list[str], subwords: str = "auto") -> list[tuple[str, bool, bool]]:
    """(text shown, continues the previous token's word, special) for each token."""
    scheme = _scheme(tokens, subwords)
    byte_level = scheme == "marker" and any(t.startswith("Ġ") for t in tokens)
    out = []
    prev_special = True  # the first token starts a word
    for tok in tokens:
        special = bool(_SPECIAL.match(tok))
        text, joins = tok, False
        if not special:
            if scheme == "wordpiece" and tok.startswith("##") and len(tok) > 2:
                text, joins = tok[2:], not prev_special
            elif scheme == "marker":
                text = _decode_bytes(tok) if byte_level else tok.replace("▁", " ")
                starts = tok[:1] in _MARKERS or text[:1].isspace()
                joins = not starts and not prev_special
                text = text.replace("\n", "↵").replace("\t", "⇥").strip(" ")
        if not text.strip():
            text = "␣"  # a token of spaces only: still a visible box
        out.append((text, joins, special))
        prev_special = special
    return out


def _words(sent: Sentence, subwords: str) -> list[list[int]]:
    """Token indices grouped into words (lines wrap between words only)."""
    words: list[list[int]] = []
    for j, (_, joins, _) in enumerate(pieces(sent.tokens, subwords)):
        if joins and words:
            words[-1].append(j)
        else:
            words.append([j])
    return words


# -- colours -----------------------------------------------------------------------------------------

def _unit(score: float, v: float) -> float:
    """Position on the colour map in [0, 1]: 0.5 for 0 (and for everything when v = 0)."""
    if v <= 0:
        return 0.5
    return 0.5 + 0.5 * max(-1.0, min(1.0, score / v))


@lru_cache(maxsize=1)
def _cmap():
    import matplotlib

    return matplotlib.colormaps[CMAP]


def colour(score: float, v: float) -> tuple[int, int, int]:
    """RGB (0-255) of a score on the symmetric scale [-v, v]."""
    r, g, b, _ = _cmap()(_unit(score, v))
    return round(r * 255), round(g * 255), round(b * 255)


def _text_rgb(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance, sRGB)."""
    def lin(c):
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * lin(bg[0]) + 0.7152 * lin(bg[1]) + 0.0722 * lin(bg[2])
    return (255, 255, 255) if lum < 0.25 else (0, 0, 0)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:+.3g}"


def _note(sent: Sentence, v: float, scale) -> str:
    notes = []
    if not sent.scores.any():
        notes.append("all scores 0")
    elif scale == "sentence":
        notes.append(f"scale ±{abs(v):.3g}")
    return "; ".join(notes)


def _legend_text(limits: list[float], scale, clipped: bool) -> str:
    if scale == "sentence":
        how = "each sentence scaled to its own max |score| (in its title line)"
    elif isinstance(scale, str):
        how = f"one scale for all sentences: ±{limits[0]:.3g} (the largest |score|)"
    else:
        how = f"fixed scale ±{limits[0]:.3g}" + ("; larger scores clipped to the end colours" if clipped else "")
    return f"blue: lowers the target's score, red: raises it; {how}"


# -- HTML --------------------------------------------------------------------------------------------

@dataclass
class TokenView:
    """Coloured tokens as HTML: a notebook displays it (`_repr_html_`); `.html` is the markup;
    `save_html(path)` writes a standalone page."""

    html: str

    def _repr_html_(self) -> str:
        return self.html

    def save_html(self, path) -> None:
        """Write a standalone UTF-8 HTML page with the view to `path`."""
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fastattr tokens</title></head>"
                    f"<body>\n{self.html}\n</body></html>\n")


def token_html(tokens, scores, *, mask=None, titles=None, scale="shared", subwords: str = "auto") -> TokenView:
    """Tokens coloured by score as HTML. tokens: a list of str or a list of lists; scores (T,) or
    (N, T); mask (T,)/(N, T) attention mask (0: padding, omitted); titles: one str per sentence;
    scale: "shared", "sentence" or a number (module docstring); subwords: "auto", "wordpiece",
    "marker" (Ġ/▁) or "none". Every token is HTML-escaped; its tooltip gives position, raw token
    and score."""
    sents = sentences(tokens, scores, mask, titles)
    limits = _limits(sents, scale)
    esc = html.escape
    blocks = []
    for sent, v in zip(sents, limits):
        shown = pieces(sent.tokens, subwords)
        words = []
        for word in _words(sent, subwords):
            spans = []
            for j in word:
                text, joins, special = shown[j]
                bg = colour(sent.scores[j], v)
                tip = f"position {sent.positions[j]} · {sent.tokens[j]} · score {sent.scores[j]:+.4g}"
                style = (f"background-color:{_hex(bg)};color:{_hex(_text_rgb(bg))};padding:1px 3px;"
                         f"border-radius:3px;white-space:pre;margin-left:{1 if joins else 0}px"
                         + (";font-size:85%;font-style:italic" if special else ""))
                spans.append(f'<span title="{esc(tip)}" style="{style}">{esc(text)}</span>')
            words.append('<span style="white-space:nowrap">' + "".join(spans) + "</span>")
        head = ""
        note = _note(sent, v, scale)
        if sent.title or note:
            head = (f'<div style="font-weight:600;margin-bottom:2px">{esc(sent.title)}'
                    + (f' <span style="font-weight:400;color:#777">({esc(note)})</span>' if note else "")
                    + "</div>")
        blocks.append(f'<div style="margin:8px 0">{head}<div style="line-height:1.9">{" ".join(words)}</div></div>')
    stops = ", ".join(_hex(colour(u, 1.0)) for u in np.linspace(-1, 1, 11))
    v0 = limits[0]
    clipped = not isinstance(scale, str) and any(np.abs(x.scores).max(initial=0) > v0 for x in sents)
    lo, hi = ("−max", "+max") if scale == "sentence" else (_fmt(-v0), _fmt(v0))
    legend = (f'<div style="margin-top:6px;font-size:85%;color:#444">'
              f'<span>{esc(lo)}</span> <span style="display:inline-block;width:180px;height:10px;'
              f'vertical-align:middle;background:linear-gradient(to right, {stops})"></span> '
              f'<span>{esc(hi)}</span> <span style="margin-left:8px">{esc(_legend_text(limits, scale, clipped))}'
              f"</span></div>")
    body = "".join(blocks)
    return TokenView(f'<div class="fastattr-tokens" style="font-family:sans-serif;font-size:15px">{body}{legend}</div>')


# -- PNG ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _font(size: int, bold: bool = False):
    """DejaVu Sans (ships with matplotlib, covers Latin, Greek, Cyrillic and many symbols)."""
    from matplotlib import font_manager
    from PIL import ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                             weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size)


def _fit(text: str, font, width: float) -> str:
    """text, shortened with an ellipsis to at most `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _wrap(text: str, font, width: float) -> list[str]:
    """text in lines of at most `width` pixels, broken between words."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and font.getlength(line + " " + word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [_fit(line, font, width)]


def save_token_png(path, tokens, scores, *, mask=None, titles=None, scale="shared", subwords: str = "auto",
                   width: int = 1000, font_size: int = 18) -> None:
    """Write the coloured tokens as a PNG: one block per sentence (its title, then its tokens on
    lines wrapped between words, `width` pixels wide), padded positions omitted, and a colour
    bar. Arguments as token_html's; font_size in pixels."""
    from PIL import Image, ImageDraw

    sents = sentences(tokens, scores, mask, titles)
    limits = _limits(sents, scale)
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 200:
        raise ValueError(f"width: expected an integer >= 200 (pixels), got {width!r}")
    if isinstance(font_size, bool) or not isinstance(font_size, numbers.Integral) or not 6 <= font_size <= 200:
        raise ValueError(f"font_size: expected an integer in [6, 200] (pixels), got {font_size!r}")
    font, small, bold = _font(font_size), _font(max(6, font_size * 4 // 5)), _font(font_size, True)
    margin, pad_x, pad_y = font_size, font_size // 4 + 1, font_size // 5 + 1
    word_gap, join_gap = font_size // 2, 1
    line_h = font_size + 2 * pad_y + font_size // 2
    right = width - margin

    # Layout: (x, y, w, text, rgb, special) boxes and (x, y, text, font, rgb) labels.
    boxes, labels = [], []
    y = margin
    for n, (sent, v) in enumerate(zip(sents, limits)):
        if n:
            labels.append(("rule", y - font_size // 2))
        note = _note(sent, v, scale)
        if sent.title or note:
            t = _fit(sent.title, bold, right - margin)
            labels.append((margin, y, t, bold, (0, 0, 0)))
            if note:
                x_note = margin + bold.getlength(t) + (font_size // 2 if t else 0)
                labels.append((x_note, y + (font_size - small.size) // 2 + 1, f"({note})", small, (110, 110, 110)))
            y += font_size + font_size // 2
        shown = pieces(sent.tokens, subwords)
        x = margin
        for word in _words(sent, subwords):
            widths = []
            for j in word:
                f = small if shown[j][2] else font
                widths.append(min(f.getlength(shown[j][0]) + 2 * pad_x, right - margin))
            total = sum(widths) + join_gap * (len(word) - 1)
            if x > margin and x + total > right:  # wrap before the word
                x, y = margin, y + line_h
            for k, (j, w) in enumerate(zip(word, widths)):
                if k and x + w > right:  # a word longer than the line: wrap inside it
                    x, y = margin, y + line_h
                text, _, special = shown[j]
                f = small if special else font
                boxes.append((x, y, w, _fit(text, f, w - 2 * pad_x), colour(sent.scores[j], v), special))
                x += w + join_gap
            x += word_gap - join_gap
        y += line_h + font_size // 2
    bar_y = y + font_size // 2
    clipped = not isinstance(scale, str) and any(np.abs(s.scores).max(initial=0) > limits[0] for s in sents)
    caption = _wrap(_legend_text(limits, scale, clipped), small, width - 2 * margin)
    height = bar_y + font_size * 2 + len(caption) * (small.size + 4) + margin

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for item in labels:
        if item[0] == "rule":
            draw.line([(margin, item[1]), (right, item[1])], fill=(220, 220, 220), width=1)
        else:
            lx, ly, text, f, rgb = item
            draw.text((lx, ly), text, font=f, fill=rgb)
    box_h = font_size + 2 * pad_y
    for x, y0, w, text, rgb, special in boxes:
        draw.rounded_rectangle([x, y0, x + w, y0 + box_h], radius=max(2, font_size // 6), fill=rgb,
                               outline=(205, 205, 205) if sum(rgb) > 720 else None)
        f = small if special else font
        ty = y0 + pad_y + (font_size - f.size) // 2 if special else y0 + pad_y
        draw.text((x + pad_x, ty), text, font=f, fill=_text_rgb(rgb))

    # Colour bar: -v .. 0 .. +v
    bar_w, bar_h = min(360, width - 2 * margin - 80), font_size * 2 // 3
    x0 = margin + small.getlength("−max") + 8
    for px in range(bar_w):
        rgb = colour(-1 + 2 * px / max(1, bar_w - 1), 1.0)
        draw.line([(x0 + px, bar_y), (x0 + px, bar_y + bar_h)], fill=rgb)
    draw.rectangle([x0, bar_y, x0 + bar_w, bar_y + bar_h], outline=(160, 160, 160))
    v0 = limits[0]
    lo, hi = ("−max", "+max") if scale == "sentence" else (_fmt(-v0).replace("-", "−"), _fmt(v0))
    draw.text((x0 - 6 - small.getlength(lo), bar_y + (bar_h - small.size) // 2), lo, font=small, fill=(60, 60, 60))
    draw.text((x0 + bar_w + 6, bar_y + (bar_h - small.size) // 2), hi, font=small, fill=(60, 60, 60))
    draw.line([(x0 + bar_w // 2, bar_y + bar_h), (x0 + bar_w // 2, bar_y + bar_h + 4)], fill=(60, 60, 60))
    draw.text((x0 + bar_w // 2 - small.getlength("0") / 2, bar_y + bar_h + 4), "0", font=small, fill=(60, 60, 60))
    for k, line in enumerate(caption):
        draw.text((margin, bar_y + bar_h + 8 + small.size + k * (small.size + 4)), line, font=small, fill=(90, 90, 90))
    img.save(os.fspath(path), format="PNG", optimize=True)
