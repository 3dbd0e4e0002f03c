"""This repository's CDK app synthesized as ``cdk synth`` runs it, and cfn-lint on a template.

aws_cdk and ``infra`` are imported when a synth runs, so importing the kit stays cheap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kit.local_cdn_process import stand_in_layers


def cdk_synth(root: Path, stack: str, *, outdir: Path | None = None, **context: str) -> Path:
    """``cdk synth -c stackName=STACK -c KEY=VALUE ...`` (``infra.app.build``, cdk-nag included)
    into ``outdir`` (``root/cdk.out`` unless given); the template's path.

    As a new ``cdk synth`` process does, the asset hashes are computed again (``AssetStaging``'s
    cache is cleared). Without a ``layersDir``, the layers are stand-in zips in ``root/layers``,
    made the first time. ``app.synth()`` raises on any unacknowledged cdk-nag finding.
    """
    from aws_cdk import App, AssetStaging

    from infra.app import build

    AssetStaging.clear_asset_hash_cache()
    if "layersDir" not in context:
        layers = root / "layers"
        if not layers.exists():
            stand_in_layers(root)
        context["layersDir"] = str(layers)
    outdir = root / "cdk.out" if outdir is None else outdir
    app = App(outdir=str(outdir), context={**context, "stackName": stack})
    build(app)
    app.synth()
    return outdir / f"{stack}.template.json"


def cfn_lint(template: Path) -> list[dict[str, Any]]:
    """cfn-lint's findings on ``template`` (its JSON output; none is ``[]``)."""
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return findings
