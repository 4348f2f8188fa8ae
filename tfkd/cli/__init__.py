"""The `tfkd` command line: `tfkd demo`, `tfkd export`, `tfkd tune`, ...

Run as the `tfkd` console script, `python -m tfkd` or `python -m tfkd.cli`
(`tfkd/__init__.py` then defers tfkd's Keras classes, see
`tfkd._running_the_command`). Each sub-command lives in its own module of
this package (`tfkd.cli.demo`, `tfkd.cli.export`, ...) that provides
`register(subparsers)`; it adds its parser and sets `func` to a callable
taking the parsed `argparse.Namespace` and returning an exit code.
`register` imports plain Python only, so `tfkd --help` and
`tfkd COMMAND --help` start in well under a second: TensorFlow, Keras
Tuner, matplotlib, tensorflow-datasets and scikit-learn are imported by
`func`. Before `func` runs, TensorFlow is imported without its start-up
log noise (`tfkd._tf_startup`), unless the command sets
`needs_tensorflow=False` (`tfkd report` draws with matplotlib alone).
User errors (`ValueError`, `TypeError`, `FileNotFoundError`) and failed
writes (`OSError`: a full disk, no permission -- `tfkd.io` names the file
and leaves it unchanged) print one line and exit with code 2, without a
traceback.
"""

import argparse
import importlib
import os
import sys

from tfkd import _tf_startup

# Modules that contribute sub-commands, in the order `--help` lists them.
_COMMAND_MODULES = (
    "tfkd.cli.demo",
    "tfkd.cli.export",
    "tfkd.cli.tune",
    "tfkd.cli.report",
    "tfkd.cli.methods",
)


class _Parser(argparse.ArgumentParser):
    """Prints usage errors on one line, like tfkd's other user errors.

    Sub-command parsers inherit the class (`add_subparsers` uses the
    parent's type), so `tfkd export --quantization int4` also gets one line.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} "
                     "--help`)\n")


def build_parser():
    parser = _Parser(
        prog="tfkd",
        description="Knowledge distillation for Keras 3 / TensorFlow.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `tfkd` console script; returns the exit code."""
    # Before anything imports TensorFlow; a value the user set is kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_tensorflow", True):
            _tf_startup.import_tensorflow()
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"tfkd {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfkd {args.command}: interrupted", file=sys.stderr)
        return 130
