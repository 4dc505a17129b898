"""One module per `factpatch` sub-command; each exposes `register(subparsers)`.

`register` adds its parser and sets `func=<callable(args) -> int>` as the default.
"""
