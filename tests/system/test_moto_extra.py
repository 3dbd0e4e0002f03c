"""``--moto`` without moto (a plain install, not the ``local`` extra): one line, exit code 2.

moto's absence is simulated with ``sys.modules["moto"] = None``, which makes ``import moto``
raise ``ImportError`` as a missing package does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.commands.moto_extra import MOTO_MISSING, MissingExtra, mock_aws
from kit.paths import REPO

WITHOUT_MOTO = (
    "import sys; sys.modules['moto'] = None; "
    "from handler.commands.cli import main; sys.exit(main(sys.argv[1:]))"
)


def without_moto(*args: str) -> subprocess.CompletedProcess[str]:
    """``next-image ARGS`` in a process where moto cannot be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_MOTO, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_message_names_the_extra() -> None:
    assert "pip install 'next-image-lambda[local]'" in MOTO_MISSING


def test_mock_aws_raises_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)
    with pytest.raises(MissingExtra, match=r"next-image-lambda\[local\]"):
        mock_aws()


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (("invoke", "events/function-url-relative.json", "--moto", "--out"), "next-image invoke: "),
        (("local-cdn", "--moto", "--template"), "local-cdn: "),
    ],
    ids=["invoke", "local-cdn"],
)
def test_moto_flags_say_which_extra_to_install(
    args: tuple[str, ...], prefix: str, tmp_path: Path
) -> None:
    # The last argument is --out for invoke, and a template that does not exist for local-cdn:
    # moto is checked before the template is read.
    done = without_moto(*args, str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [prefix + MOTO_MISSING]
