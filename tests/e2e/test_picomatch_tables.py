"""``tests/kit/data/picomatch_tables.json`` is what Next.js 16.4.6's own picomatch answers.

``test_globs.py`` and ``test_linear_regex.py`` read their picomatch expectations from that file;
here ``picomatch_tables.mjs`` computes them again under Node with ``next/dist/compiled/picomatch``
from the app's ``node_modules`` (``npm ci``), and they must be the same.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from harness import APP, HERE

TABLES = HERE.parent / "kit" / "data" / "picomatch_tables.json"


def test_the_tables_are_what_nexts_picomatch_gives(app_packages: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is required (the e2e app needs it too)"
    script = HERE / "picomatch_tables.mjs"
    done = subprocess.run(
        [node, str(script), "--next-app", str(APP)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    produced = json.loads(done.stdout)
    stored = json.loads(TABLES.read_text())
    assert produced["next"] == "16.4.6"
    assert stored == produced, "run `node tests/e2e/picomatch_tables.mjs --write` and review"
