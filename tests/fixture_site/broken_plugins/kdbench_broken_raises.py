"""A plugin that raises at import (e.g. a check of its environment that fails)."""

raise RuntimeError("this plugin needs a GPU driver 999")
