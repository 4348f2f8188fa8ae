"""Entry point of the `tfkd` command, outside the `tfkd` package.

`import tfkd` registers every tfkd Keras class (so `keras.models.load_model`
finds them), which imports TensorFlow. The command imports `tfkd` through
this module instead: while it is loaded, the package defers those imports
until a command needs them, so `tfkd --help` and `tfkd COMMAND --help`
answer without TensorFlow.
"""

import sys

# Run as `python -m tfkd_cli`, this module is `__main__`: register it under
# its own name too, which is what `tfkd/__init__.py` looks for.
sys.modules.setdefault("tfkd_cli", sys.modules[__name__])


def main(argv=None):
    """Runs the `tfkd` command line (see `tfkd.cli.main`)."""
    from tfkd.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
