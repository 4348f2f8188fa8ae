"""`tfkd demo`: the demo's command line (the demo itself: `tfkd.app.demo`)."""

from tfkd.app import demo


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="distil a digits teacher into a small student and compare",
        description=demo.__doc__.splitlines()[0],
    )
    # Not `choices=`: the names come from the terms, which import
    # TensorFlow; `run_demo` checks the name before training.
    parser.add_argument("--method", default=demo.DEFAULT_METHOD,
                        help=f"distillation method (default: "
                             f"{demo.DEFAULT_METHOD}; `tfkd methods` lists "
                             "them)")
    parser.add_argument("--labels-per-class", default=str(
                            demo.DEFAULT_LABELS_PER_CLASS), metavar="N|all",
                        help="training labels the students keep per class; "
                             "the other training images are unlabelled "
                             "transfer data for distillation ('all': every "
                             "label; default: "
                             f"{demo.DEFAULT_LABELS_PER_CLASS})")
    parser.add_argument("--data", default="digits",
                        choices=("digits", "fashion_mnist"),
                        help="data set (default: digits, embedded; "
                             "fashion_mnist reads its IDX files, see "
                             "tfkd.data.load_fashion_mnist)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs for each student (default: 30 on "
                             "digits, 5 on fashion_mnist)")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="epochs for the teacher (default: 20 on "
                             "digits, 10 on fashion_mnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one or more seeds; >1 prints mean ± std")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new "
                             "tfkd_runs/demo-N)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty --out "
                             "(one a tfkd run made)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-export", action="store_true",
                        help="skip the TFLite export at the end")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras progress output (default: 1, bars)")
    parser.set_defaults(func=_run_from_args)


def parse_labels_per_class(text):
    """`"all"` -> `None`; `"6"` -> `6` (a positive int), else a clear error.

    Example:

    >>> parse_labels_per_class("all"), parse_labels_per_class("20")
    (None, 20)
    """
    if isinstance(text, str) and text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < 1:
        raise ValueError(
            "`--labels-per-class` takes a positive int (labels kept per "
            f"class) or 'all'. Received: --labels-per-class {text!r}."
        )
    return value


def _run_from_args(args):
    demo.run_demo(method=args.method,
             labels_per_class=parse_labels_per_class(args.labels_per_class),
             epochs=args.epochs, teacher_epochs=args.teacher_epochs,
             seeds=args.seeds, out=args.out, overwrite=args.overwrite,
             batch_size=args.batch_size, export=not args.no_export,
             verbose=args.verbose, data=args.data)
    return 0
