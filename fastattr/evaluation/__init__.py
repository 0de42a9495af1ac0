"""fastattr eval at dataset scale: variants (table rows), image sources (a folder or the bundled
set), per-image scoring, the resumable / torchrun loop on the runner's pieces, bootstrap
summaries and the output files. The command-line front is fastattr/evaluate.py."""
from fastattr.evaluation.variants import Variant, variants

__all__ = ["Variant", "variants"]
