"""``next-image local-cdn`` redeploys in place on SIGHUP, and takes CloudFront invalidations.

The stack (``infra.app.build``, as ``cdk synth`` runs it) is served by a real local-cdn process.
A public image's bytes change, the app is synthesized again into the same cloud assembly and
local-cdn is sent SIGHUP: it uploads the changed BucketDeployment, gives the function the new
``NEXT_IMAGE_DEPLOY_GENERATION`` (new instances) and runs the deploy's invalidation, so the next
request for the changed image reaches the function and gets new pixels, while the unchanged one
is revalidated without a transform. A SIGHUP with nothing changed invalidates nothing. Its
CloudFront API takes ``CreateInvalidation`` from a real boto3 client.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.moto_server import loopback_client
from handler.commands.local_cdn.redeploy import path_matches
from kit import imagegen
from kit.local_cdn_process import LocalCdn, local_cdn
from kit.support import HANG_SECONDS, wait_for
from kit.synth import cdk_synth

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STACK = "RedeployLocal"
ACCEPT = "image/webp,*/*"
HIT, MISS = "Hit from cloudfront", "Miss from cloudfront"
API = "local-cdn: CloudFront API for distribution (\\S+) at (http://\\S+) "


def synthesize(root: Path) -> Path:
    """``cdk synth`` into ``root/cdk.out`` (the same folder each time, as a user re-runs it)."""
    return cdk_synth(root, STACK, appOrigin="127.0.0.1", publicDir=str(root / "public"))


def get(cdn: LocalCdn, name: str) -> tuple[str, str, bytes]:
    """x-cache, x-nextjs-cache and the body of ``/_next/image`` for ``/name`` at w=64."""
    request = urllib.request.Request(
        f"{cdn.url}/_next/image?url=%2F{name}&w=64&q=75", headers={"Accept": ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=HANG_SECONDS) as answer:
        return answer.headers["x-cache"], answer.headers["x-nextjs-cache"], answer.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, LocalCdn]]:
    """local-cdn serving the stack synthesized from a ``public/`` of two images; its output is
    kept in ``local-cdn.log`` beside the cloud assembly."""
    root = tmp_path_factory.mktemp("redeploy-local")
    public = root / "public"
    public.mkdir()
    (public / "a.png").write_bytes(imagegen.png(128, 96, colour=(200, 30, 30)))
    (public / "b.png").write_bytes(imagegen.png(128, 96, colour=(30, 30, 200)))
    template = synthesize(root)
    with local_cdn("--template", str(template), "--app-origin", "http://127.0.0.1:9") as cdn:
        try:
            yield root, template, cdn
        finally:
            (root / "local-cdn.log").write_text("".join(cdn.output))


def test_invalidation_paths_match_as_cloudfronts_do() -> None:
    key = ("GET", "/_next/image", (("q", "75"), ("url", "%2Fa.png"), ("w", "64")), (), (), None, "")
    assert path_matches("/_next/image*", key)
    assert path_matches("/_next/image?url=%2Fa.png*", key)  # the query in the viewer's order
    assert path_matches("/_next/image?url=%2Fa.png&w=64&q=75", key)
    assert not path_matches("/_next/image?url=%2Fa.png", key)  # no wildcard: the whole query
    assert not path_matches("/_next/image?url=%2Fab*", key)
    assert not path_matches("/_next/image", key)
    assert path_matches("/*", key)


def test_the_cloudfront_api_invalidates_the_edge_cache(site: tuple[Path, Path, LocalCdn]) -> None:
    from botocore.exceptions import ClientError

    _, _, cdn = site
    line = cdn.wait_for_line("local-cdn: CloudFront API for distribution ", 0, HANG_SECONDS)
    distribution, url = line.split()[5], line.split()[7]
    for name in ("a.png", "b.png"):
        assert get(cdn, name)[:2] == (MISS, "MISS")
        assert get(cdn, name)[0] == HIT
    client = loopback_client("cloudfront", url)
    batch = {"Paths": {"Quantity": 1, "Items": ["/_next/image?url=%2Fb.png*"]}}
    made = client.create_invalidation(
        DistributionId=distribution, InvalidationBatch={**batch, "CallerReference": "r1"}
    )["Invalidation"]
    assert made["Status"] == "Completed"
    fetched = client.get_invalidation(DistributionId=distribution, Id=made["Id"])
    assert fetched["Invalidation"]["InvalidationBatch"]["Paths"]["Items"] == [
        "/_next/image?url=%2Fb.png*"
    ]
    assert get(cdn, "a.png")[0] == HIT  # not named
    assert get(cdn, "b.png")[:2] == (MISS, "HIT")  # to the function: its pointer is fresh
    with pytest.raises(ClientError, match="NoSuchDistribution"):
        client.create_invalidation(
            DistributionId="ENOSUCH", InvalidationBatch={**batch, "CallerReference": "r2"}
        )
    with pytest.raises(ClientError, match="InvalidationBatchAlreadyExists"):
        other = {"Paths": {"Quantity": 1, "Items": ["/other*"]}, "CallerReference": "r1"}
        client.create_invalidation(DistributionId=distribution, InvalidationBatch=other)


def test_a_sighup_with_nothing_changed_keeps_the_edge_cache(
    site: tuple[Path, Path, LocalCdn],
) -> None:
    _, _, cdn = site
    get(cdn, "a.png")
    line = cdn.redeploy(HANG_SECONDS)
    assert "0 files uploaded, 0 environment variables changed" in line
    assert "0 invalidation paths" in line
    assert get(cdn, "a.png")[0] == HIT


def test_a_refused_template_leaves_the_running_deploy(site: tuple[Path, Path, LocalCdn]) -> None:
    _, template, cdn = site
    good = template.read_text()
    template.write_text("{ not json")
    try:
        start = len(cdn.output)
        os.kill(cdn.pid, signal.SIGHUP)
        line = cdn.wait_for_line("redeploy of ", start, HANG_SECONDS)
        assert "refused; still serving the previous deploy" in line
    finally:
        template.write_text(good)
    assert get(cdn, "a.png")[0] == HIT


def test_a_redeploy_shows_a_changed_public_image_and_revalidates_the_others(
    site: tuple[Path, Path, LocalCdn],
) -> None:
    root, _, cdn = site
    old_a, old_b = get(cdn, "a.png")[2], get(cdn, "b.png")[2]
    (root / "public" / "a.png").write_bytes(imagegen.png(128, 64, colour=(30, 200, 30)))
    synthesize(root)
    start = len(cdn.output)
    line = cdn.redeploy(HANG_SECONDS)
    assert "NEXT_IMAGE_DEPLOY_GENERATION" in line.split("environment variables changed")[1]
    assert "2 files uploaded" in line  # the changed DeployPublic, run again: public/'s two
    assert "1 invalidation paths removed" in line
    assert any("NextImageInvalidateImages" in x and "(created)" in x for x in cdn.output[start:])

    edge, function, body = get(cdn, "a.png")
    assert (edge, function) == (MISS, "STALE")  # revalidated: the source changed
    decoded = imagegen.decode(body)
    assert decoded[:3] == ("webp", 64, 32) and body != old_a
    edge, function, body = get(cdn, "b.png")
    assert (edge, function, body) == (MISS, "STALE", old_b)  # unchanged, not transformed
    wait_for(lambda: len(cdn.image_records(start)) == 2, "the function's two log lines")
    served = cdn.image_records(start)
    assert [r["cache"] for r in served] == ["STALE", "STALE"]
    assert "transform" in served[0]["stages_ms"]
    assert "transform" not in served[1]["stages_ms"]
    assert get(cdn, "b.png")[0] == HIT
