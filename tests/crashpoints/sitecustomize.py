"""Imported by every Python process started with tests/crashpoints on PYTHONPATH (see
tests/pausing.py): installs the pause point named by ``AQUILA_TEST_PAUSE=point:folder``."""

import os

if os.environ.get("AQUILA_TEST_PAUSE"):
    from pathlib import Path

    from tests.pausing import Pause, install

    _point, _, _folder = os.environ["AQUILA_TEST_PAUSE"].partition(":")
    install(Pause(_point, Path(_folder)))
