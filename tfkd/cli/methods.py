"""`tfkd methods`: the distillation methods, as the terms declare them."""


def register(subparsers):
    parser = subparsers.add_parser(
        "methods", help="list the distillation methods",
        description="List every method of `tfkd demo --method` and "
                    "`tfkd tune --method`, read from the knowledge terms.")
    parser.add_argument("--markdown", action="store_true",
                        help="print the Markdown table of the README/docs")
    parser.set_defaults(func=_run)


def _run(args):
    from tfkd.distillers import registry

    if args.markdown:
        print(registry.method_table())
        return 0
    table = registry.methods()
    width = max(len(name) for name in table)
    for name, spec in table.items():
        print(f"{name:<{width}}  {spec.description} ({spec.paper})")
    return 0
