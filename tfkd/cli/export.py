"""`tfkd export`: convert a saved student to TFLite and print its report.

    tfkd export student.keras --quantization int8 --data digits \\
        --out student.tflite [--teacher teacher.keras]

Calibration images come from the data set's training split, verification
images (with labels) from its test split. The report is printed as a table
and saved as JSON beside the `.tflite` (`student.json` for
`student.tflite`).
"""

import os

_QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
_DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100", "mnist")


def register(subparsers):
    """Adds the `export` sub-command to an `argparse` sub-parser group."""
    parser = subparsers.add_parser(
        "export",
        help="convert a saved student (.keras) to TFLite and check it",
        description=(
            "Convert a saved student model to a .tflite file (optionally "
            "quantised), check parity with Keras on held-out images, "
            "measure single-image latency and print the report."
        ),
    )
    parser.add_argument("student", metavar="STUDENT.keras",
                        help="saved student (tfkd.saving.save or keras.Model.save), "
                             "or a saved distiller: its student is exported")
    parser.add_argument("--quantization", choices=_QUANTIZATIONS,
                        default="none",
                        help="post-training quantization (default: none)")
    parser.add_argument("--int8-io", action="store_true",
                        help="with int8: int8 input/output tensors")
    parser.add_argument("--data", choices=_DATASETS, default="digits",
                        help="data for calibration and verification "
                             "(default: digits, embedded)")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets directory (cifar, mnist) "
                             "or folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=None,
                        help="output .tflite (default: STUDENT with .tflite)")
    parser.add_argument("--teacher", default=None, metavar="TEACHER.keras",
                        help="saved teacher, exported to a temporary file "
                             "for size / latency comparison")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side length (default: the student's)")
    parser.add_argument("--channels", type=int, default=None,
                        help="1 or 3 (default: the student's)")
    parser.add_argument("--num-samples", type=int, default=256,
                        help="images verified (default: 256)")
    parser.add_argument("--num-threads", type=int, default=1,
                        help="LiteRT interpreter threads (default: 1)")
    parser.set_defaults(func=run)
    return parser


def _load_model(path, flag):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{flag}: no such file: {path!r}. Pass a model saved with "
            "`tfkd.saving.save(student, 'student.keras')`."
        )
    from tfkd.saving import load

    # Registers tfkd's classes; a corrupt or truncated file is a clear
    # ValueError naming it.
    return load(path, compile=False)


def _load_data(name, image_size, channels, data_dir):
    """Returns `(calibration_images, (test_images, test_labels))`."""
    import tfkd.data

    if name == "digits":
        splits = tfkd.data.digits_arrays(
            image_size=image_size, channels=channels, seed=0
        )
        return splits.train[0], splits.test
    if name == "fashion_mnist":
        # The IDX files, from --data-dir or where tfkd looks for them.
        splits = tfkd.data.fashion_mnist_arrays(
            image_size=image_size, channels=channels, seed=0,
            data_dir=data_dir)
        return splits.train[0], splits.test
    load_dataset = getattr(tfkd.data, "load_dataset", None)
    if load_dataset is None:
        raise ValueError(
            f"--data {name} needs `tfkd.data.load_dataset` (the "
            "tensorflow-datasets loaders), which this install lacks. Use "
            "--data digits."
        )
    splits = load_dataset(
        name, image_size=image_size, channels=channels, augment=False,
        data_dir=data_dir,
    )
    return splits.train, splits.test


def run(args):
    """Runs `tfkd export`; returns the exit code."""
    from tfkd.export.tflite import _input_spec
    from tfkd.export.tflite import _unwrap_student
    from tfkd.export.tflite import to_tflite

    if args.int8_io and args.quantization != "int8":
        raise ValueError(
            "--int8-io needs --quantization int8. Received: --quantization "
            f"{args.quantization}."
        )
    # A saved distiller exports its student (never the teacher or helpers).
    student = _unwrap_student(_load_model(args.student, "STUDENT"))
    teacher = _load_model(args.teacher, "--teacher") if args.teacher else None
    out = args.out or os.path.splitext(args.student)[0] + ".tflite"
    if os.path.abspath(out) == os.path.abspath(args.student):
        raise ValueError(
            f"--out would overwrite the student. Received: --out {out!r}. "
            "Choose a path ending in .tflite."
        )
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise FileNotFoundError(
            f"--out: the directory of {out!r} does not exist; create it "
            "first or choose another path."
        )
    input_shape, _ = _input_spec(student)
    if len(input_shape) != 4:
        raise ValueError(
            "The student must take (batch, height, width, channels) images. "
            f"Received a student with input shape {input_shape}."
        )
    height, width, channels = input_shape[1:]
    image_size = args.image_size or (
        (height, width) if height and width else None
    )
    channels = args.channels or channels
    if image_size is None or channels is None:
        raise ValueError(
            f"The student's input shape {input_shape} is not fully defined; "
            "pass --image-size and --channels."
        )
    calibration, test = _load_data(
        args.data, image_size, channels, args.data_dir
    )
    quantization = None if args.quantization == "none" else args.quantization
    report = to_tflite(
        student, out, quantization=quantization,
        representative_data=calibration, int8_io=args.int8_io,
        verify_data=test, num_samples=args.num_samples, teacher=teacher,
        num_threads=args.num_threads,
    )
    json_path = report.save_json(os.path.splitext(out)[0] + ".json")
    print(report.to_table())
    print(f"wrote {out} and {json_path}")
    return 0
