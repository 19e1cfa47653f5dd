"""``python -m bench`` (from the repository root): see :mod:`bench.runner`."""
import sys

from .runner import main

sys.exit(main())
