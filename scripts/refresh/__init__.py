"""One module per reference table: NAME, add_parser(subparsers), run(args) -> exit code."""
