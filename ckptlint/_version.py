"""The package version: its one home (``pyproject.toml`` reads it; reporters and the CLI import it)."""

__version__ = "0.1.0"
