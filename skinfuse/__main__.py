"""``python -m skinfuse``: the command line (:mod:`skinfuse._cli`)."""

import sys

from skinfuse._cli import main

if __name__ == "__main__":
    sys.exit(main())
