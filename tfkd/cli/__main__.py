"""`python -m tfkd.cli`: the `tfkd` command."""

import sys

from tfkd.cli import main

if __name__ == "__main__":
    sys.exit(main())
