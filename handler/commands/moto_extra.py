"""moto for the ``--moto`` flags, from the ``local`` extra.

``pip install 'next-image-lambda[local]'`` installs it. A plain install has no moto: then
``invoke --moto`` and ``local-cdn --moto`` stop with one line naming the extra (exit code 2)
rather than a traceback.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

EXTRA = "local"
MOTO_MISSING = (
    f"--moto needs moto, which is in the '{EXTRA}' extra: pip install 'next-image-lambda[{EXTRA}]'"
)


class MissingExtra(Exception):
    """A flag needs a package of an extra that is not installed; the message says which."""


def mock_aws() -> AbstractContextManager[Any]:
    """moto's in-process AWS (not yet started), or ``MissingExtra`` when moto is not installed."""
    try:
        from moto import mock_aws as moto_mock_aws
    except ImportError as exc:
        raise MissingExtra(MOTO_MISSING) from exc
    return moto_mock_aws()
