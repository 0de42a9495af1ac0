"""fastattr.text_view: tokens coloured by score as HTML and PNG (escaping, colour sign and scale,
padding, subwords, named errors, the PNG opened and checked)."""
import html.parser

import numpy as np
import pytest
import torch
from PIL import Image

from fastattr import text_view as tv
from fastattr.text_view import TokenView, save_token_png, token_html

NASTY = ["<script>alert(1)</script>", 'say "hi"', "fish & chips", "it's", "</span><b>", "&amp;"]


class Spans(html.parser.HTMLParser):
    """Collects (attributes, text) of every token span and every tag name seen."""

    def __init__(self):
        super().__init__()
        self.tags, self.tokens, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "span" and "title" in attrs:
            self._open = [attrs, ""]

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.tokens.append(tuple(self._open))
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data


def parse(view: TokenView) -> Spans:
    p = Spans()
    p.feed(view.html)
    return p


def rgb(style: str) -> tuple[int, int, int]:
    h = style.split("background-color:#")[1][:6]
    return int(h[:2], 16), int(h[2:4], 16), int(h[4:], 16)


# -- HTML ---------------------------------------------------------------------------------------------

def test_every_token_is_escaped_text_and_tooltip():
    view = token_html(NASTY, torch.tensor([0.5, -0.5, 0.1, 0.0, 0.2, -0.1]), subwords="none")
    p = parse(view)
    assert "script" not in p.tags and "b" not in p.tags  # no markup from the tokens
    assert [text for _, text in p.tokens] == NASTY  # shown exactly as written
    for (attrs, _), tok in zip(p.tokens, NASTY):
        assert tok in attrs["title"]  # the tooltip carries the raw token, unescaped by the parser
    assert "<script>" not in view.html and "&lt;script&gt;" in view.html
    assert view._repr_html_() == view.html


def test_tooltip_has_position_and_score():
    p = parse(token_html(["a", "b"], [0.25, -1.5]))
    assert [a["title"] for a, _ in p.tokens] == ["position 0 · a · score +0.25", "position 1 · b · score -1.5"]


def test_colour_sign_and_neutral_zero():
    p = parse(token_html(["up", "down", "zero"], [2.0, -2.0, 0.0], subwords="none"))
    (up, _), (down, _), (zero, _) = p.tokens
    r, g, b = rgb(up["style"])
    assert r > b + 50 and r > g + 50  # the red end
    r, g, b = rgb(down["style"])
    assert b > r + 50 and b > g + 30  # the blue end
    assert rgb(up["style"]) == tv.colour(1, 1) and rgb(down["style"]) == tv.colour(-1, 1)
    r, g, b = rgb(zero["style"])
    assert min(r, g, b) > 230 and max(r, g, b) - min(r, g, b) < 10  # neutral, near white
    assert tv.colour(2.0, 2.0) == tv.colour(5.0, 2.0)  # clipped at the ends
    assert tv.colour(0.0, 0.0) == tv.colour(0.0, 1.0) == tv.colour(3.0, 0.0)  # v = 0: all neutral


def test_symmetric_limits_equal_strength_both_sides():
    up, down = tv.colour(1.0, 4.0), tv.colour(-1.0, 4.0)
    white = np.array(tv.colour(0.0, 4.0))
    assert abs(np.abs(np.array(up) - white).sum() - np.abs(np.array(down) - white).sum()) < 60


def test_shared_scale_compares_sentences_sentence_scale_does_not():
    toks = [["a", "b"], ["c", "d"]]
    scores = [[1.0, 0.1], [0.1, 0.0]]
    shared = [rgb(a["style"]) for a, _ in parse(token_html(toks, scores)).tokens]
    assert shared[1] == shared[2]  # the same score, the same colour in both sentences
    own = [rgb(a["style"]) for a, _ in parse(token_html(toks, scores, scale="sentence")).tokens]
    assert own[2] == own[0]  # each sentence's max gets the end colour
    fixed = token_html(toks, scores, scale=0.5)
    assert "clipped" in fixed.html and "clipped" not in token_html(toks, scores, scale=2.0).html
    assert [rgb(a["style"]) for a, _ in parse(fixed).tokens][0] == tv.colour(1.0, 1.0)


def test_mask_omits_padding_at_either_end():
    toks = [["[CLS]", "good", "[SEP]", "[PAD]"], ["[PAD]", "[CLS]", "bad", "[SEP]"]]
    scores = torch.tensor([[0.1, 0.9, 0.1, 0.0], [0.0, 0.2, -0.7, 0.1]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    p = parse(token_html(toks, scores, mask=mask))
    assert [t for _, t in p.tokens] == ["[CLS]", "good", "[SEP]", "[CLS]", "bad", "[SEP]"]
    assert p.tokens[3][0]["title"].startswith("position 1 ")
    # token lists of the real tokens only (with the mask), or shorter lists with zero padding
    real = [["[CLS]", "good", "[SEP]"], ["[CLS]", "bad", "[SEP]"]]
    assert [t for _, t in parse(token_html(real, scores, mask=mask)).tokens] == [t for _, t in p.tokens]
    right = token_html([["x", "y"], ["z"]], [[0.5, 0.1], [0.3, 0.0]])
    assert [t for _, t in parse(right).tokens] == ["x", "y", "z"]


def test_all_zero_sentence_is_neutral_and_labelled():
    view = token_html([["a", "b"], ["c"]], [[0.0, 0.0], [0.0, 0.0]], titles=["first", "second"])
    assert view.html.count("all scores 0") == 2
    assert len({rgb(a["style"]) for a, _ in parse(view).tokens}) == 1


def test_save_html_writes_a_page(tmp_path):
    path = tmp_path / "t.html"
    token_html(NASTY, np.linspace(-1, 1, len(NASTY))).save_html(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and 'charset="utf-8"' in text and "&lt;script&gt;" in text


# -- subwords -----------------------------------------------------------------------------------------

def test_wordpiece_continuations_join_the_previous_token():
    got = tv.pieces(["[CLS]", "un", "##believ", "##ably", "good", "[SEP]", "##x"])
    assert got == [("[CLS]", False, True), ("un", False, False), ("believ", True, False), ("ably", True, False),
                   ("good", False, False), ("[SEP]", False, True), ("x", False, False)]


def test_byte_level_bpe_markers_and_bytes():
    got = tv.pieces(["<s>", "The", "Ġplot", ",", "Ġcaf", "Ã©", "Ċ", "</s>"])
    assert [t for t, _, _ in got] == ["<s>", "The", "plot", ",", "caf", "é", "↵", "</s>"]
    assert [j for _, j, _ in got] == [False, False, False, True, False, True, False, False]


def test_sentencepiece_marker():
    got = tv.pieces(["▁Ein", "▁Test", "satz", "▁", "<pad>"])
    assert got == [("Ein", False, False), ("Test", False, False), ("satz", True, False), ("␣", False, False),
                   ("<pad>", False, True)]


def test_no_scheme_keeps_tokens_apart():
    assert all(not j for _, j, _ in tv.pieces(["##a", "Ġb"], subwords="none"))
    assert tv.pieces(["hello", "world"]) == [("hello", False, False), ("world", False, False)]


# -- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens,scores,kw,name,match", [
    ("a sentence", [1.0], {}, "tokens", "str"),
    ([], [1.0], {}, "tokens", "non-empty"),
    (["a", 1], [1.0, 2.0], {}, "tokens", "token 1 of sentence 0"),
    (["a", "b"], [1.0, 2.0, 3.0], {}, "tokens", "2 tokens for 3 scores"),
    (["a", "b"], [[1.0, 2.0], [3.0, 4.0]], {}, "scores", "2 rows of scores for one sentence"),
    ([["a"], ["b"]], [1.0], {}, "scores", "1 rows of scores for 2 sentences"),
    (["a", "b"], torch.zeros(1, 1, 2), {}, "scores", "shape"),
    (["a", "b"], [1.0, float("nan")], {}, "scores", "sentence 0, position 1"),
    ([["a"], ["b", "c"]], [[1.0, 0.0], [1.0, float("inf")]], {}, "scores", "sentence 1, position 1"),
    (["a", "b"], [1.0, 2.0], {"mask": [1, 1, 0]}, "mask", "does not match"),
    ([["a"], ["b"]], [[1.0, 2.0], [3.0, 4.0]], {}, "tokens", "not all 0"),
    ([["a"], ["b"]], [[1.0, 2.0], [3.0, 4.0]], {"mask": [[1, 1], [1, 1]]}, "tokens", "2 real"),
    (["a", "b"], [1.0, 2.0], {"titles": ["x", "y"]}, "titles", "1 str"),
    (["a", "b"], [1.0, 2.0], {"scale": "global"}, "scale", "unknown"),
    (["a", "b"], [1.0, 2.0], {"scale": -1.0}, "scale", "number > 0"),
    (["a", "b"], [1.0, 2.0], {"subwords": "bpe"}, "subwords", "unknown"),
    (["a", "b"], ["x", "y"], {}, "scores", "numbers"),
    ([["a"], ["b", "c"]], [[1.0], [1.0, 2.0]], {}, "scores", ""),
])
def test_errors_name_the_argument(tokens, scores, kw, name, match):
    for fn in (lambda: token_html(tokens, scores, **kw), lambda: tv.sentences(tokens, scores, kw.get("mask"),
                                                                              kw.get("titles"))):
        if name in ("scale", "subwords"):
            fn = lambda: token_html(tokens, scores, **kw)  # noqa: E731
        with pytest.raises((ValueError, TypeError), match=rf"^{name}: .*{match}"):
            fn()


def test_png_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="^width: "):
        save_token_png(tmp_path / "x.png", ["a"], [1.0], width=50)
    with pytest.raises(ValueError, match="^font_size: "):
        save_token_png(tmp_path / "x.png", ["a"], [1.0], font_size=0)


# -- PNG ----------------------------------------------------------------------------------------------

def picture_inputs():
    toks = [["[CLS]", "the", "film", "was", "un", "##watch", "##able", "[SEP]", "[PAD]", "[PAD]"],
            ["<s>", "A", "Ġgreat", "Ġplot", "</s>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>"],
            ["[CLS]", "nothing", "[SEP]"] + ["[PAD]"] * 7]
    scores = torch.tensor([[0.0, 0.1, 0.0, 0.0, -0.6, -0.5, -0.4, 0.0, 0.0, 0.0],
                           [0.1, 0.0, 0.9, 0.2, 0.0, 0, 0, 0, 0, 0],
                           [0.0] * 10])
    mask = (torch.tensor([[1] * 8 + [0] * 2, [1] * 5 + [0] * 5, [1] * 3 + [0] * 7]))
    return toks, scores, mask


def test_png_is_written_and_shows_both_signs(tmp_path):
    toks, scores, mask = picture_inputs()
    path = tmp_path / "tokens.png"
    save_token_png(path, toks, scores, mask=mask, titles=["negative", "positive", "empty"])
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape[1] == 1000 and 150 < img.shape[0] < 600
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 20  # text, boxes, colour bar: not blank
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((r - b > 100) & (g < 120)).sum() > 200  # strong red boxes (great)
    assert ((b - r > 100) & (g < 150)).sum() > 200  # strong blue boxes (un ##watch ##able)


def test_png_wraps_long_sentences_and_omits_padding(tmp_path):
    short, long_ = tmp_path / "s.png", tmp_path / "l.png"
    words = [f"word{i}" for i in range(60)]
    save_token_png(short, words[:5], np.ones(5))
    save_token_png(long_, words, np.ones(60))
    h_short, h_long = Image.open(short).size[1], Image.open(long_).size[1]
    assert h_long > h_short + 3 * 18  # several more lines
    padded = tmp_path / "p.png"
    save_token_png(padded, words[:5] + ["[PAD]"] * 55, np.r_[np.ones(5), np.zeros(55)], mask=np.r_[np.ones(5), np.zeros(55)])
    assert Image.open(padded).size == Image.open(short).size  # the 55 padded tokens take no room
