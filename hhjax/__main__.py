"""`python -m hhjax`: the same command line as the `hhjax` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
