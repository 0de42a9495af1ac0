"""fastattr eval at dataset scale: variants (table rows), image sources (a folder or the bundled
set) and their masks, per-image scoring, the resumable / torchrun loop on the runner's pieces,
bootstrap summaries and the output files; `run_eval` is the entry (entry.py). The command line's
front is fastattr/cli/eval.py; nothing here imports the command line."""
from fastattr.evaluation.entry import run_eval
from fastattr.evaluation.variants import Variant, variants

__all__ = ["Variant", "variants", "run_eval"]
