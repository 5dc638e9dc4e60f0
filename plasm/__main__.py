"""``python -m plasm run|status|list|distil`` (see :mod:`plasm.cli` for options and exit codes)."""
import sys

from plasm.cli import main

if __name__ == "__main__":
    sys.exit(main())
