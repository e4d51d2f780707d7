"""Command-line programs: one module per command, with ``build_parser()`` and ``main(argv)``."""

__all__: list[str] = []
