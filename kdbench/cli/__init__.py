"""The `kdbench` command line (typer + rich)."""
