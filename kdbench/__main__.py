"""`python -m kdbench` is the `kdbench` command."""

from kdbench.cli.app import main

main()
