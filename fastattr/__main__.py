"""`python -m fastattr ...` (also under torchrun): the same as the `fastattr` command."""
import sys

from fastattr.cli import main

sys.exit(main())
