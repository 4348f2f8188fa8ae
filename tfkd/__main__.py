"""`python -m tfkd`: the `tfkd` command (`tfkd.cli`)."""

import sys

from tfkd.cli import main

if __name__ == "__main__":
    sys.exit(main())
