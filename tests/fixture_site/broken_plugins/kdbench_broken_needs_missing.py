"""A plugin whose dependency is not installed: its import raises ModuleNotFoundError."""

import a_module_nobody_installed  # noqa: F401
