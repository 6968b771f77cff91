"""``python -m poolx``: the same command line as ``poolx`` (see :mod:`poolx.cli`)."""

import sys

from poolx.cli import main

if __name__ == "__main__":
    sys.exit(main())
