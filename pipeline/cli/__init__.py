"""The ``aquila`` command: thin commands over the engine (see pipeline/cli/main.py)."""

from pipeline.cli.main import main

__all__ = ["main"]
