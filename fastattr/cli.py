"""Command line: `fastattr explain` (maps for a few images), `fastattr eval` (metrics table),
`fastattr run` (dataset-scale runner). With no arguments everything uses the bundled
EfficientNet-Lite0 and the bundled photos."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch


def _add_method_arguments(p: argparse.ArgumentParser) -> None:
    from fastattr.backward import BACKWARDS
    from fastattr.methods import METHODS
    from fastattr.methods.integrated_gradients import RULES

    p.add_argument("--method", default="ig", choices=sorted(METHODS), help="attribution method (default: ig)")
    p.add_argument("--idgi", action="store_true", help="apply the IDGI correction (path methods)")
    p.add_argument("--steps", type=int, default=None, help="path steps (default: the method's)")
    p.add_argument("--rule", default="left", choices=RULES, help="IG integration rule (default: left)")
    p.add_argument("--backward", default="standard", choices=sorted(BACKWARDS), help="gradient rule")
    p.add_argument("--output", default="probability", choices=("probability", "logit"),
                   help="explain the softmax probability (default) or the logit")
    p.add_argument("--batch-size", type=int, default=None, help="points per forward+backward (default: per device)")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False, default=None,
                   help="feed the model NCHW tensors (default: channels-last for conv models, faster; "
                        "NCHW reproduces other libraries' rounding bit for bit)")
    p.add_argument("--model", default="default",
                   help="'default' (bundled EfficientNet-Lite0) or a file saved with torch.save(model) / TorchScript")


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps and heatmaps for a few images")
    p.add_argument("images", nargs="*", help="image files (PNG/JPEG/WebP); default: the bundled photos")
    _add_method_arguments(p)
    p.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--out", default="fastattr_out", help="output folder (default: fastattr_out)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main_explain)


def main_explain(args) -> int:
    """`fastattr explain`: print class and completeness per image, write PNG heatmaps and .npy maps."""
    from fastattr.api import explain
    from fastattr.images import bundled_images, load_image
    from fastattr.models import class_name, load_model
    from fastattr.viz import save_heatmap

    model = load_model(args.model)
    if args.images:
        names = [Path(f).stem for f in args.images]
        try:
            images = torch.stack([load_image(f, size=args.size) for f in args.images])
        except (OSError, ValueError) as exc:
            print(f"fastattr explain: cannot read image: {exc}", file=sys.stderr)
            return 2
    else:
        bundled = bundled_images(size=args.size)
        names, images = list(bundled), torch.stack(list(bundled.values()))
    label = args.method + (" + IDGI" if args.idgi else "") + (" (guided)" if args.backward == "guided" else "")
    ex = explain(model, images, args.target, method=args.method, idgi=args.idgi, steps=args.steps,
                 rule=args.rule, backward=args.backward, output=args.output, batch_size=args.batch_size,
                 compile=args.compile, channels_last=args.channels_last, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.method + ("_idgi" if args.idgi else "") + ("_guided" if args.backward == "guided" else "")
    print(f"{'image':<20} {'class':<28} {args.output:>11} {'delta':>11}  heatmap")
    for i, name in enumerate(names):
        c = int(ex.target[i])
        cname = class_name(c) if args.model == "default" else str(c)
        png = out / f"{name}_{tag}.png"
        np.save(out / f"{name}_{tag}.npy", ex.attributions[i].cpu().numpy())
        save_heatmap(png, images[i], ex.attributions[i], title=f"{name}: {cname} ({c}) - {label}")
        print(f"{name:<20} {cname + f' ({c})':<28} {float(ex.scores[i]):>11.4f} {float(ex.delta[i]):>11.2e}  {png}")
    print(f"{ex.grad_evals} gradient evaluations; delta = sum(map) - (f(x) - f(path start))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastattr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _explain_parser(sub)
    try:  # the evaluation and runner subcommands register themselves when present
        from fastattr.evaluate import add_eval_arguments, main_eval
    except ImportError:
        pass
    else:
        p = sub.add_parser("eval", help="evaluate methods on the bundled evaluation set (paper-style table)")
        add_eval_arguments(p)
        p.set_defaults(func=main_eval)
    try:
        from fastattr.runner import add_run_arguments, main_run
    except ImportError:
        pass
    else:
        p = sub.add_parser("run", help="attribution maps for a whole folder of images (resumable, torchrun)")
        add_run_arguments(p)
        p.set_defaults(func=main_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError) as exc:  # bad arguments: one clear line, not a traceback
        if os.environ.get("FASTATTR_DEBUG"):
            raise
        print(f"fastattr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
