#!/usr/bin/env python3
"""Command line of smplstream; the same as the ``smplstream`` console script."""
import sys

from streamer.cli import main

if __name__ == "__main__":
    sys.exit(main())
