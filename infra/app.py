"""CDK app entry point (``cdk.json``): one ``NextImageStack``, configured by context values.

One user of the ``next_image_cdk`` package, as any CDK app can be. Context (``-c key=value`` or
``cdk.json``): ``appOrigin`` (host of the app's origin, required unless ``staticSiteDir``, a
static export's ``out/`` folder served from S3), ``nextDir`` (the app's
``.next`` folder) or ``imagesConfig`` (a JSON file with the images config), ``arch``,
``pythonVersion``, ``memory``, ``timeout``, ``originReadTimeout``, ``variantExpiryDays``,
``variantsPrefix``, ``publicDir``, ``assetsPrefix``, ``fastFirstView`` (seconds), ``layersDir``
(prebuilt layers; else they are built into the user cache), ``originShieldRegion``,
``monitoring`` (``false`` leaves out the alarms and dashboard), ``stackName``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, cast

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from next_image_cdk import NextImageOptimizerProps, NextImageStack
from next_image_cdk.construct import Arch, PythonVersion

MISSING_ORIGIN = (
    "no app origin: pass the host your Next.js app is served from, e.g. "
    "`cdk deploy -c appOrigin=app.example.com` (the distribution sends every other path there), "
    "or a static export's out/ folder: `-c staticSiteDir=out -c nextDir=.next`"
)


def props_from_context(app: App) -> NextImageOptimizerProps:
    def get(key: str, default: Any = None) -> Any:
        value = app.node.try_get_context(key)
        return default if value is None or value == "" else value

    images_file = get("imagesConfig")
    next_dir = get("nextDir")
    public_dir = get("publicDir")
    layers_dir = get("layersDir")
    app_origin = get("appOrigin")
    static_site_dir = get("staticSiteDir")
    if not app_origin and not static_site_dir:
        raise SystemExit(MISSING_ORIGIN)
    return NextImageOptimizerProps(
        app_origin_domain=app_origin,
        images_config=json.loads(Path(images_file).read_text()) if images_file else None,
        next_dir=Path(next_dir) if next_dir else None,
        public_dir=Path(public_dir) if public_dir else None,
        assets_prefix=get("assetsPrefix", ""),
        architecture=cast(Arch, get("arch", "arm64")),
        python_version=cast(PythonVersion, str(get("pythonVersion", "3.13"))),
        memory_mib=int(get("memory", 2048)),
        timeout_seconds=int(get("timeout", 25)),
        origin_read_timeout_seconds=int(get("originReadTimeout", 30)),
        variant_expiry_days=int(get("variantExpiryDays", 30)),
        variants_prefix=get("variantsPrefix", ""),
        fast_first_view_seconds=float(fast) if (fast := get("fastFirstView")) else None,
        animated=cast(Literal["passthrough", "webp"], get("animated", "passthrough")),
        layers_dir=Path(layers_dir) if layers_dir else None,
        origin_shield_region=get("originShieldRegion"),
        monitoring=str(get("monitoring", True)).lower() not in ("false", "0", "no", "off"),
        static_site_dir=Path(static_site_dir) if static_site_dir else None,
    )


def build(app: App) -> NextImageStack:
    """The stack plus the cdk-nag AwsSolutions checks, which run when the app synthesizes."""
    stack = NextImageStack(
        app,
        str(app.node.try_get_context("stackName") or "NextImage"),
        props_from_context(app),
        env=Environment(),
        description="Next.js /_next/image optimizer on Lambda behind CloudFront",
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


if __name__ == "__main__":
    application = App()
    build(application)
    application.synth()
