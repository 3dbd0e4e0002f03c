"""The redeploy and purge stories in Chromium, on a local-cdn of this module's own.

The session's ``next start`` serves the pages; this module synthesizes the stack against its own
copy of ``public/`` and serves it with its own ``local-cdn`` (S3 on a moto server, so that
``next-image purge`` reaches the same buckets), so nothing another module sees changes.

- Redeploy: the desktop loads the gallery; one public image's bytes change; the stack is
  synthesized again and local-cdn redeployed in place (SIGHUP). A reload shows the new pixels
  (decoded and compared with both sources), and every other image reaches the function (the
  deploy invalidated ``/_next/image*``) and is served as stored: revalidated with one
  conditional request, the same bytes, no transform.
- Purge: the remote image changes at its origin; a reload still shows the old one (cached at
  the edge and, behind it, a pointer fresh for an hour); ``next-image purge --url ...
  --distribution-id ...`` and the next reload shows the new one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pyvips
from harness import APP, ARTIFACTS, REPORT, ROOT, timed
from processes import Proxy

from devtools.pictures import MOUNTAIN, STREET, Picture, scene
from kit.local_cdn_process import LocalCdn, local_cdn
from kit.support import wait_for
from kit.synth import cdk_synth
from kit.upstream_server import Handler, Server

STACK = "NextImageRedeployE2E"
HIT, MISS = "Hit from cloudfront", "Miss from cloudfront"
HANG_SECONDS = 120.0  # only a hang waits this long
API = re.compile(r"local-cdn: CloudFront API for distribution (\S+) at (http://\S+) ")
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
DOM_LOADED = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
# The changed pictures: colours far from the originals', so the mean colour tells them apart.
NEW_STREET = ((230, 40, 40), (250, 220, 40), (255, 255, 255), 21)
NEW_MOUNTAIN = ((20, 120, 20), (240, 240, 120), (40, 40, 40), 22)


@dataclass
class Seen:
    """One ``/_next/image`` answer the browser got."""

    src: str
    w: int
    x_cache: str
    nextjs_cache: str
    content_type: str
    body: bytes


@dataclass
class Stack:
    root: Path
    public: Path
    template: Path
    cdn: LocalCdn
    distribution: str
    cloudfront_api: str
    s3: str
    bucket: str


def synthesize(root: Path, public: Path) -> Path:
    """``cdk synth`` against the app's build and this module's ``public/`` (a new process each
    time, as the CLI is: the asset hashes are computed again)."""
    return cdk_synth(
        root, STACK, appOrigin="127.0.0.1", nextDir=str(APP / ".next"), publicDir=str(public)
    )


def mean_colour(data: bytes) -> tuple[float, ...]:
    image = pyvips.Image.new_from_buffer(data, "")
    return tuple(image.extract_band(band).avg() for band in range(3))


def distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5)


def jpeg(picture: Picture, colours: tuple[Any, ...]) -> bytes:
    return bytes(scene(picture.width, picture.height, *colours).jpegsave_buffer(Q=88))


@pytest.fixture(scope="module")
def stack(
    built_app: dict[str, Picture],
    app_proxy: Proxy,
    moto_s3: str,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[Stack]:
    """This module's stack, synthesized from a copy of ``public/``, on its own local-cdn."""
    from handler.commands.local_cdn.template import read_template

    root = tmp_path_factory.mktemp("e2e-redeploy")
    public = root / "public"
    shutil.copytree(APP / "public", public)
    with timed("redeploy: cdk synth (first)"):
        template = synthesize(root, public)
    function = read_template(template).lambda_function
    assert function is not None
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    environment = {"AWS_ENDPOINT_URL": moto_s3, **credentials}
    args = ("--template", str(template), "--app-origin", app_proxy.url)
    with local_cdn(*args, moto=False, environment=environment, start_timeout=120) as cdn:
        try:
            found = next(m for line in cdn.output if (m := API.search(line)))
            yield Stack(
                root,
                public,
                template,
                cdn,
                found.group(1),
                found.group(2),
                moto_s3,
                function.environment["NEXT_IMAGE_BUCKET"],
            )
        finally:
            (artifacts / "local-cdn-redeploy.log").write_text("".join(cdn.output))


class Tab:
    """One page of a desktop context whose reloads reach the network (the browser's cache
    disabled, as DevTools' "Disable cache" does)."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(**DESKTOP)
        self.page = self.context.new_page()
        self.requests: list[Any] = []
        self.page.on("requestfinished", lambda request: self.requests.append(request))
        self.page.on("requestfailed", lambda request: self.requests.append(request))
        self.page.goto(url, wait_until="load", timeout=60_000)
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})

    def images(self, shot: str) -> dict[str, Seen]:
        """Every <img> scrolled into view and loaded; the answers by the image's src."""
        images = self.page.locator("img")
        for index in range(images.count()):
            images.nth(index).scroll_into_view_if_needed(timeout=60_000)
        self.page.wait_for_function(DOM_LOADED, timeout=120_000)
        self.page.wait_for_load_state("networkidle", timeout=60_000)
        self.page.screenshot(path=str(ARTIFACTS / f"redeploy-{shot}.png"), full_page=True)
        shown = set(self.page.eval_on_selector_all("img", "els => els.map(e => e.currentSrc)"))
        seen: dict[str, Seen] = {}
        for request in self.requests:
            if request.url not in shown or urlsplit(request.url).path != "/_next/image":
                continue  # a preload the browser dropped for the candidate it chose, say
            response = request.response()
            assert response is not None, f"no response for {request.url}"
            assert response.status == 200, (request.url, response.status)
            query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
            if query["url"] in seen:
                continue  # asked again (a preload, then the <img>): the first reached the edge
            seen[query["url"]] = Seen(
                query["url"],
                int(query["w"]),
                response.headers.get("x-cache", ""),
                response.headers.get("x-nextjs-cache", ""),
                response.headers.get("content-type", ""),
                response.body(),
            )
        self.requests.clear()
        return seen

    def reload(self, shot: str) -> dict[str, Seen]:
        self.page.reload(wait_until="load", timeout=60_000)
        return self.images(shot)

    def close(self) -> None:
        self.context.close()


def test_a_redeploy_shows_the_new_image_on_the_next_page_load(
    stack: Stack, browser: Any, built_app: dict[str, Picture]
) -> None:
    street = "/" + STREET.path.removeprefix("public/")
    old_source = (APP / STREET.path).read_bytes()
    tab = Tab(browser, stack.cdn.url + "/")
    try:
        with timed("redeploy: first page load (every image transformed)"):
            before = tab.images("gallery-before")
        assert len(before) == 7 and {s.x_cache for s in before.values()} == {MISS}
        assert all(s.content_type == "image/avif" for s in before.values())

        new_source = jpeg(STREET, NEW_STREET)
        (stack.public / STREET.path.removeprefix("public/")).write_bytes(new_source)
        with timed("redeploy: cdk synth (public/ changed)"):
            synthesize(stack.root, stack.public)
        start = len(stack.cdn.output)
        with timed("redeploy: local-cdn redeploy (SIGHUP)"):
            line = stack.cdn.redeploy(HANG_SECONDS)
        assert "NEXT_IMAGE_DEPLOY_GENERATION" in line
        assert "1 invalidation paths removed" in line

        with timed("redeploy: reload after the redeploy"):
            after = tab.reload("gallery-after-redeploy")
    finally:
        tab.close()
    assert set(after) == set(before)

    changed = after[street]
    assert changed.x_cache == MISS and changed.nextjs_cache == "STALE"
    served = mean_colour(changed.body)
    near_new = distance(served, mean_colour(new_source))
    near_old = distance(served, mean_colour(old_source))
    assert near_new < 12 < near_old, (near_new, near_old)
    assert distance(mean_colour(before[street].body), mean_colour(old_source)) < 12

    unchanged = {src: seen for src, seen in after.items() if src != street}
    for src, seen in unchanged.items():
        assert (seen.x_cache, seen.nextjs_cache) == (MISS, "STALE"), src
        assert seen.body == before[src].body, src
    wait_for(
        lambda: len(stack.cdn.image_records(start)) >= 7, "the function's log lines", HANG_SECONDS
    )
    records = {r["url"]: r for r in stack.cdn.image_records(start)}
    assert "transform" in records[street]["stages_ms"]
    transformed = [src for src in unchanged if "transform" in records[src]["stages_ms"]]
    assert transformed == []
    REPORT.append(
        f"redeploy: {street} changed in public/; after the SIGHUP the reload got it anew "
        f"(mean colour {near_new:.1f} from the new source, {near_old:.1f} from the old); the "
        f"{len(unchanged)} others reached the function (invalidated) and were served as stored, "
        "revalidated without a transform (STALE, same bytes)"
    )


def test_purge_shows_an_image_changed_at_its_origin(
    stack: Stack, browser: Any, remote_server: Server
) -> None:
    src = remote_server.url(MOUNTAIN.path)
    original = remote_server.routes[MOUNTAIN.path]
    tab = Tab(browser, stack.cdn.url + "/remote")
    try:
        first = tab.images("remote-before")[src]
        new_body = jpeg(MOUNTAIN, NEW_MOUNTAIN)

        def changed(handler: Handler) -> None:
            handler.reply(
                200, new_body, Content_Type="image/jpeg", Cache_Control="public, max-age=3600"
            )

        remote_server.routes[MOUNTAIN.path] = changed
        try:
            stale = tab.reload("remote-changed-at-origin")[src]
            assert stale.x_cache == HIT and stale.body == first.body  # nothing told the CDN

            environment = {
                k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")
            }
            environment.update(
                {
                    "AWS_ENDPOINT_URL_S3": stack.s3,
                    "AWS_ENDPOINT_URL_CLOUDFRONT": stack.cloudfront_api,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "NEXT_IMAGE_STORE": "s3",
                    "NEXT_IMAGE_BUCKET": stack.bucket,
                }
            )
            command = [sys.executable, "-m", "handler.commands.cli", "purge", "--url", src]
            command += ["--distribution-id", stack.distribution, "--config", str(APP / ".next")]
            with timed("purge: next-image purge --url (waits out the function's memory)"):
                done = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=HANG_SECONDS,
                    check=False,
                )
            assert done.returncode == 0, done.stderr
            assert "1 URL: 1 pointer deleted" in done.stdout
            assert "CloudFront invalidation I" in done.stdout

            purged = tab.reload("remote-after-purge")[src]
        finally:
            remote_server.routes[MOUNTAIN.path] = original
    finally:
        tab.close()
    assert (purged.x_cache, purged.nextjs_cache) == (MISS, "MISS")
    served = mean_colour(purged.body)
    near_new = distance(served, mean_colour(new_body))
    near_old = distance(served, mean_colour(first.body))
    assert near_new < 12 < near_old, (near_new, near_old)
    REPORT.append(
        f"purge: the remote image changed at its origin; a reload still got the old one "
        f"({HIT}); after `next-image purge --url … --distribution-id {stack.distribution}` "
        f"({done.stdout.strip()}) the reload got the new one (mean colour {near_new:.1f} from "
        f"the new source, {near_old:.1f} from the old)"
    )
