"""``next-image local-cdn`` on the real stack: synthesized in-process, served by the command.

The CDK app is the one ``cdk synth`` runs (``infra.app.build``, cdk-nag included) with a public
folder holding generated images and a ``.next`` build holding a statically imported one. Its two
Lambda layers are stand-in zips: they are opaque assets to the template, and local-cdn runs the
handler from this checkout. The command runs as a subprocess with ``--moto`` and
``--seed-public``, in front of a loopback app origin, and is stopped with SIGTERM like a
terminal's Ctrl-C or a test runner's cleanup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kit import imagegen
from kit.local_cdn_process import LocalCdn, local_cdn
from kit.support import Route, Upstream
from kit.synth import cdk_synth

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STACK = "LocalCdnTest"
STATIC_IMPORT = "hero.4f1c2a.jpg"  # in .next/static/media, uploaded by the stack's DeployMedia


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("local-cdn-stack")
    public = root / "public"
    public.mkdir()
    (public / "a.png").write_bytes(imagegen.png(1280, 960))
    (public / "noise.jpg").write_bytes(imagegen.noise_jpeg(1280, 960))
    # Variants over 50 kB are answered with a redirect to the variants behaviour, as over
    # Lambda's payload limit: --env-file changes the function's environment like a deploy would.
    (root / "function.env").write_text("NEXT_IMAGE_MAX_INLINE_BYTES=50000\n")
    build_dir = root / ".next"
    (build_dir / "static" / "media").mkdir(parents=True)
    (build_dir / "static" / "media" / STATIC_IMPORT).write_bytes(imagegen.jpeg(1280, 960))
    images = {"formats": ["image/avif", "image/webp"]}
    (build_dir / "required-server-files.json").write_text(
        json.dumps({"version": 1, "config": {"images": images, "basePath": ""}})
    )
    cdk_synth(
        root, STACK, appOrigin="app.example.com", nextDir=str(build_dir), publicDir=str(public)
    )
    return root


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@contextmanager
def running_stack(root: Path, app_origin: str) -> Iterator[tuple[LocalCdn, list[int]]]:
    """The command on the synthesized stack, and its child processes once it serves."""
    template = root / "cdk.out" / f"{STACK}.template.json"
    args = ("--template", str(template), "--app-origin", app_origin)
    args += ("--seed-public", str(root / "public"), "--env-file", str(root / "function.env"))
    with local_cdn(*args) as running:
        yield running, _children(running.pid)


def test_the_stack_serves_optimized_images_and_the_app(
    synthesized: Path, upstream: Upstream
) -> None:
    upstream.routes["/about"] = Route(200, b"<p>about</p>", {"Content-Type": "text/html"})
    with running_stack(synthesized, upstream.url("")) as (running, children):
        client = httpx.Client(base_url=running.url, timeout=60)
        target = "/_next/image?url=/a.png&w=640&q=75"
        accept = {"accept": "image/avif,image/webp,*/*"}
        first = client.get(target, headers=accept)
        second = client.get(target, headers=accept)
        for response in (first, second):
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/avif"
            assert imagegen.decode(response.content)[:2] == ("avif", 640)
        assert first.headers["x-cache"] == "Miss from cloudfront"
        assert second.headers["x-cache"] == "Hit from cloudfront"
        assert "age" in second.headers and second.content == first.content
        # The image came from the seeded assets bucket, not from the app.
        assert "/a.png" not in upstream.hits
        # A static import: local-cdn ran the stack's DeployMedia from the cloud assembly.
        static_url = f"/_next/image?url=/_next/static/media/{STATIC_IMPORT}&w=640&q=75"
        static = client.get(static_url, headers=accept)
        assert static.status_code == 200, static.text
        assert imagegen.decode(static.content)[:2] == ("avif", 640)
        assert not [hit for hit in upstream.hits if "/_next/static/" in hit]

        page = client.get("/about", headers={"user-agent": "a-browser"})
        assert (page.status_code, page.content) == (200, b"<p>about</p>")
        assert page.headers["x-cache"] == "Miss from cloudfront"  # Managed-CachingDisabled
        sent = dict(upstream.requests[-1].headers)
        assert sent["host"] == upstream.url("").removeprefix("http://")
        assert sent["user-agent"] == "a-browser"  # AllViewerExceptHostHeader
        assert sent["via"].endswith(".cloudfront.net (CloudFront)")
        assert sent["x-forwarded-for"] == "127.0.0.1"
        assert sent["cloudfront-forwarded-proto"] == "http"

        # A large variant: the function redirects, CloudFront reads it from the variants bucket
        # through the bucket policy and adds the response headers policy's headers.
        large = client.get("/_next/image?url=/noise.jpg&w=1080&q=75", headers=accept)
        assert large.status_code == 302, large.text
        location = large.headers["location"]
        assert location.startswith("/_next/image-variants/")
        variant = client.get(location)
        assert variant.status_code == 200, variant.text
        assert imagegen.decode(variant.content)[:2] == ("avif", 1080)
        assert variant.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in variant.headers["content-security-policy"]
        assert client.get(location).headers["x-cache"] == "Hit from cloudfront"

        refused = client.post(target, headers=accept)
        assert (refused.status_code, refused.headers["x-cache"]) == (403, "Error from cloudfront")
        missing = client.get("/_next/image-variants/none")
        assert missing.status_code == 403  # S3's AccessDenied: the policy grants no ListBucket
        assert b"<Code>AccessDenied</Code>" in missing.content
        assert children, "the Node.js child for the CloudFront Function"
    assert running.returncode == 0, "".join(running.output)[-4000:]
    assert "local-cdn: stopped" in "".join(running.output)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
