"""Where things are: the repository, and the data files the tests read (``tests/kit/data``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
