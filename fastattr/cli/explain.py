"""`fastattr explain [IMAGES...]`: maps, heatmaps and completeness for a few images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fastattr.cli import options as o
from fastattr.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps and heatmaps for a few images")
    p.add_argument("images", nargs="*", type=o.image_file,
                   help="image files (PNG/JPEG/WebP); default: the bundled photos")
    o.add_method_options(p)
    o.add_model_options(p)
    p.add_argument("--target", type=o.class_index, default=None,
                   help="class to explain (default: the predicted one)")
    p.add_argument("--out", type=o.out_folder, default="fastattr_out", help="output folder (default: fastattr_out)")
    o.add_size(p)
    o.add_progress(p)
    p.set_defaults(func=main)


def output_names(files: list[str]) -> list[str]:
    """A unique output name per image file, derived from its path: the file name without its
    extension where that is unique among the files, else the path relative to the files' common
    folder ('a/cat'), else that with the extension ('a/cat_jpg'); the same file given twice gets
    '-2', '-3', ... in argument order. Depends only on the list, so re-runs write the same names."""
    paths = [Path(os.path.abspath(f)) for f in files]
    common = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    rel = [p.relative_to(common) for p in paths]
    candidates = [
        [p.stem for p in paths],
        [r.with_suffix("").as_posix() for r in rel],
        [r.with_suffix("").as_posix() + r.suffix.replace(".", "_") for r in rel],
    ]
    names = []
    for i in range(len(paths)):
        name = next((c[i] for c in candidates if c.count(c[i]) == 1), candidates[-1][i])
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def _images(args) -> tuple[list[str], torch.Tensor]:
    from fastattr.images import bundled_images, load_image

    if not args.images:
        bundled = bundled_images(size=args.size)
        return list(bundled), torch.stack(list(bundled.values()))
    loaded = []
    for f in args.images:
        try:
            loaded.append(load_image(f, size=args.size))
        except (OSError, UserError) as exc:
            raise UserError(f"cannot read image {f}: {exc}") from exc
    return output_names(args.images), torch.stack(loaded)


def main(args) -> int:
    """Print class and completeness per image, write PNG heatmaps and .npy maps."""
    from fastattr.api import explain
    from fastattr.models import class_name
    from fastattr.runner.distributed import check_device
    from fastattr.runner.preflight import load_checked
    from fastattr.runner.shards import write_error
    from fastattr.viz import save_heatmap

    out = Path(args.out)
    device = check_device(args.device)
    options = dict(method=args.method, idgi=args.idgi, steps=args.steps, rule=args.rule, backward=args.backward,
                   output=args.output, batch_size=args.batch_size, compile=args.compile,
                   channels_last=args.channels_last, precision=args.precision)
    names, images = _images(args)
    model, _ = load_checked(args.model, trust_pickle=args.trust_pickle, device=device, size=args.size,
                            target=args.target, explain_options=options)
    try:  # checked options and model, before any computation: an unwritable --out fails in seconds
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out, exc) from exc
    ex = explain(model, images.to(device), args.target, progress=not args.no_progress, **options)
    label = args.method + (" + IDGI" if args.idgi else "") + (" (guided)" if args.backward == "guided" else "")
    tag = args.method + ("_idgi" if args.idgi else "") + ("_guided" if args.backward == "guided" else "")
    width = max(20, *(len(n) + 1 for n in names))
    print(f"{'image':<{width}} {'class':<28} {args.output:>11} {'delta':>11}  heatmap")
    for i, name in enumerate(names):
        c = int(ex.target[i])
        cname = class_name(c) if args.model in (None, "default") else str(c)
        png, npy = out / f"{name}_{tag}.png", out / f"{name}_{tag}.npy"
        try:
            png.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, ex.attributions[i].cpu().numpy())
            save_heatmap(png, images[i], ex.attributions[i], title=f"{name}: {cname} ({c}), {label}")
        except OSError as exc:
            raise write_error(png, exc) from exc
        print(f"{name:<{width}} {cname + f' ({c})':<28} {float(ex.scores[i]):>11.4f} {float(ex.delta[i]):>11.2e}  {png}")
    print(f"{ex.grad_evals} gradient evaluations; delta = sum(map) - (f(x) - f(path start))")
    return 0
