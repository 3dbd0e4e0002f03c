"""A real Next.js 16.4.6 app in headless Chromium, its images served by the stack on local-cdn.

Three browser contexts visit the gallery (``/``) and the remote page (``/remote``) through
local-cdn, in order: a desktop (1280x800), then a phone (390x844 at 3 device pixels per CSS
pixel), both accepting AVIF as Chromium does, each page reloaded once with the browser's cache
disabled; then the same phone sending ``Accept: image/webp,*/*``, as a browser without AVIF.
Every image request and response is recorded (bodies included) and checked by the tests below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPORT, ROOT, timed
from processes import LocalCdn, Proxy

from devtools.pictures import HUGE, MOUNTAIN, Picture
from kit import imagegen

HIT = "Hit from cloudfront"
MISS = "Miss from cloudfront"
LAMBDA_INLINE_LIMIT = 4_400_000  # handler.entry.lambda_handler.LAMBDA_MAX_INLINE_BYTES
PAGES = ("/", "/remote")
IMAGES_ON = {"/": 7, "/remote": 1}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
CONTEXTS: dict[str, dict[str, Any]] = {
    "desktop": DESKTOP,
    "phone": PHONE,
    "phone-webp": {**PHONE, "extra_http_headers": {"Accept": "image/webp,*/*"}},
}
DOM_IMAGES = """els => els.map(e => ({
    alt: e.alt, currentSrc: e.currentSrc, srcset: e.getAttribute('srcset') || '',
    complete: e.complete, naturalWidth: e.naturalWidth, naturalHeight: e.naturalHeight}))"""
ALL_LOADED = "() => Array.from(document.images).every(i => i.complete)"


@dataclass
class Fetch:
    """One ``/_next/image`` request of the browser, and what finally answered it."""

    url: str
    accept: str
    status: int  # 200, or 302 to /_next/image-variants/
    x_cache: str
    location: str | None
    final_status: int  # of the variants object when redirected
    final_x_cache: str
    content_type: str
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}

    @property
    def w(self) -> int:
        return int(self.query["w"])


@dataclass
class Visit:
    context: str
    page: str
    phase: str  # "first" or "reload"
    images: list[dict[str, Any]] = field(default_factory=list)  # the <img> elements, from the DOM
    fetches: list[Fetch] = field(default_factory=list)
    image_requests: list[tuple[str, str | None]] = field(default_factory=list)  # url, from


def _load_every_image(page: Any) -> None:
    """Scroll each <img> into view (most are lazy), wait until all have finished loading."""
    images = page.locator("img")
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed(timeout=60_000)
    page.wait_for_function(ALL_LOADED, timeout=120_000)
    page.wait_for_load_state("networkidle", timeout=60_000)
    page.evaluate("window.scrollTo(0, 0)")


def _record(visit: Visit, page: Any, requests: list[Any]) -> Visit:
    visit.images = page.eval_on_selector_all("img", DOM_IMAGES)
    for request in requests:
        path = urlsplit(request.url).path
        if request.resource_type == "image" or path.startswith("/_next/image"):
            origin = request.redirected_from.url if request.redirected_from else None
            visit.image_requests.append((request.url, origin))
        if path != "/_next/image":
            continue
        response = request.response()
        assert response is not None, f"no response for {request.url}"
        final, location = response, None
        if response.status == 302:
            location = response.headers["location"]
            assert request.redirected_to is not None, f"{request.url}: redirect not followed"
            final = request.redirected_to.response()
            assert final is not None, f"no response for {request.redirected_to.url}"
        visit.fetches.append(
            Fetch(
                url=request.url,
                accept=request.all_headers().get("accept", ""),
                status=response.status,
                x_cache=response.headers.get("x-cache", ""),
                location=location,
                final_status=final.status,
                final_x_cache=final.headers.get("x-cache", ""),
                content_type=final.headers.get("content-type", ""),
                body=final.body(),
            )
        )
    return visit


@dataclass
class Session:
    visits: list[Visit]
    screenshots: list[Path]

    def find(self, context: str, page: str, phase: str = "first") -> Visit:
        return next(
            v for v in self.visits if (v.context, v.page, v.phase) == (context, page, phase)
        )


@pytest.fixture(scope="module")
def session(cdn: LocalCdn) -> Iterator[Session]:
    """Every visit, recorded; the browser is closed before any test looks at them."""
    from playwright.sync_api import sync_playwright

    recorded = Session([], [])
    with timed("browsing (3 contexts, 10 page loads)"), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, options in CONTEXTS.items():
                context = browser.new_context(**options)
                try:
                    for path in PAGES:
                        _browse(context, name, cdn.url, path, recorded, reload=name != "phone-webp")
                finally:
                    context.close()
        finally:
            browser.close()
    yield recorded


def _browse(context: Any, name: str, base: str, path: str, into: Session, reload: bool) -> None:
    """Load ``path`` in a new page, screenshot it, and reload it once if asked."""
    page = context.new_page()
    requests: list[Any] = []
    page.on("requestfinished", lambda request: requests.append(request))
    page.on("requestfailed", lambda request: requests.append(request))
    try:
        page.goto(base + path, wait_until="load", timeout=60_000)
        _load_every_image(page)
        into.visits.append(_record(Visit(name, path, "first"), page, requests))
        shot = ARTIFACTS / f"{name}{path.replace('/', '-').rstrip('-')}.png"
        page.screenshot(path=str(shot), full_page=True)
        into.screenshots.append(shot)
        if reload:
            # A reload that reaches the network: with the browser's cache disabled (DevTools'
            # "Disable cache"), every image is asked for again, here of the edge.
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            requests.clear()
            page.reload(wait_until="load", timeout=60_000)
            _load_every_image(page)
            into.visits.append(_record(Visit(name, path, "reload"), page, requests))
    finally:
        page.close()


def _source_width(fetch: Fetch, pictures: dict[str, Picture]) -> int:
    url = fetch.query["url"]
    if url.startswith("http://"):
        assert urlsplit(url).path == MOUNTAIN.path
        return MOUNTAIN.width
    if url.startswith("/_next/static/media/"):
        stem = re.sub(r"\.[^./]+(\.\w+)$", r"\1", url.rsplit("/", 1)[1])  # photo.<hash>.jpg
        return next(p.width for p in pictures.values() if p.path.endswith("/" + stem))
    return pictures["public" + url].width


def _srcset_widths(srcset: str) -> set[int]:
    return {
        int(parse_qs(urlsplit(candidate.split()[0]).query)["w"][0])
        for candidate in srcset.split(", ")
    }


def test_every_image_is_decoded_by_the_browser(session: Session) -> None:
    for visit in session.visits:
        assert len(visit.images) == IMAGES_ON[visit.page], visit
        for image in visit.images:
            assert image["complete"] and image["naturalWidth"] > 0, (visit.context, image)
    REPORT.append(
        f"images decoded by Chromium: {sum(len(v.images) for v in session.visits)} "
        f"over {len(session.visits)} page loads, all complete with naturalWidth > 0"
    )


def test_every_image_request_goes_to_the_optimizer_at_the_srcset_width(session: Session) -> None:
    for visit in session.visits:
        fetched = {f.url for f in visit.fetches}
        for url, redirected_from in visit.image_requests:
            path = urlsplit(url).path
            if path == "/_next/image":
                continue
            # The only other image requests: the redirect targets of oversize answers.
            assert path.startswith("/_next/image-variants/"), url
            assert redirected_from in fetched, (url, redirected_from)
        # One request per <img>, for exactly the candidate the browser chose from its srcset.
        chosen = sorted(image["currentSrc"] for image in visit.images)
        assert sorted(f.url for f in visit.fetches) == chosen, (visit.context, visit.page)
        by_url = {image["currentSrc"]: image for image in visit.images}
        for fetch in visit.fetches:
            assert fetch.w in _srcset_widths(by_url[fetch.url]["srcset"]), fetch.url
    total = sum(len(v.fetches) for v in session.visits)
    REPORT.append(f"/_next/image requests: {total}, one per <img> and page load, none elsewhere")


def test_avif_at_the_requested_width_for_a_browser_that_accepts_it(
    session: Session, built_app: dict[str, Picture]
) -> None:
    widths: dict[str, list[str]] = {}
    for visit in session.visits:
        if visit.context == "phone-webp":
            continue
        for fetch in visit.fetches:
            assert "image/avif" in fetch.accept, fetch.accept
            assert fetch.final_status == 200, fetch
            assert fetch.content_type == "image/avif", fetch.url
            decoded = imagegen.decode(fetch.body)
            source = _source_width(fetch, built_app)
            assert (decoded.format, decoded.width) == ("avif", min(fetch.w, source)), fetch.url
            if visit.phase == "first":
                name = fetch.query["url"].rsplit("/", 1)[1]
                widths.setdefault(visit.context, []).append(f"{name} w={fetch.w}->{decoded.width}")
    for context, seen in widths.items():
        REPORT.append(f"AVIF widths ({context}): " + ", ".join(sorted(seen)))


def test_the_largest_variant_is_redirected_to_the_variants_bucket(session: Session) -> None:
    huge = "/" + HUGE.path.removeprefix("public/")
    desktop = next(f for f in session.find("desktop", "/").fetches if f.query["url"] == huge)
    phone = next(f for f in session.find("phone", "/").fetches if f.query["url"] == huge)
    # 1x on the desktop: small enough to be answered inline by the function.
    assert (desktop.w, desktop.status, desktop.location) == (1920, 200, None)
    assert len(desktop.body) < LAMBDA_INLINE_LIMIT
    # 3x on the phone asks for the 2x candidate, 3840: over Lambda's limit, so a redirect.
    assert (phone.w, phone.status) == (3840, 302)
    assert phone.location is not None and phone.location.startswith("/_next/image-variants/")
    assert phone.final_status == 200 and len(phone.body) > LAMBDA_INLINE_LIMIT
    redirects = [f for v in session.visits for f in v.fetches if f.status == 302]
    assert {f.query["url"] for f in redirects} == {huge}
    REPORT.append(
        f"oversize: {huge} w=3840 AVIF is {len(phone.body):,} bytes -> 302 {phone.location}; "
        f"w=1920 is {len(desktop.body):,} bytes inline; "
        f"{len(redirects)} redirects in all (first visits, reloads, WebP)"
    )


def test_no_image_request_reaches_the_app(session: Session, app_proxy: Proxy) -> None:
    targets = list(app_proxy.targets)
    paths = [urlsplit(t).path for t in targets]
    assert not [p for p in paths if p.startswith("/_next/image")], targets
    assert not [p for p in paths if re.search(r"\.(jpe?g|png|webp|avif|gif)$", p)], targets
    # The proxy is on the app's path: the pages and their scripts went through it.
    assert paths.count("/") >= 3 and paths.count("/remote") >= 3, targets
    assert any(p.startswith("/_next/static/") for p in paths), targets
    REPORT.append(
        f"requests at the app (next start): {len(targets)} "
        f"({paths.count('/')} x /, {paths.count('/remote')} x /remote, the rest scripts and "
        "styles), none for an image"
    )


def test_a_reload_is_answered_by_the_edge_cache(session: Session, cdn: LocalCdn) -> None:
    first_desktop = [f for p in PAGES for f in session.find("desktop", p).fetches]
    # The very first visits: nothing was cached at the edge yet.
    assert {f.x_cache for f in first_desktop} == {MISS}, [(f.url, f.x_cache) for f in first_desktop]
    hits = 0
    for visit in session.visits:
        if visit.phase != "reload":
            continue
        first = session.find(visit.context, visit.page)
        assert sorted(f.url for f in visit.fetches) == sorted(f.url for f in first.fetches)
        for fetch in visit.fetches:
            assert (fetch.x_cache, fetch.final_x_cache) == (HIT, HIT), fetch.url
            hits += 1 + (fetch.location is not None)
        bodies = {f.url: f.body for f in first.fetches}
        assert all(bodies[f.url] == f.body for f in visit.fetches)
    # The function ran once per edge miss, and each time for a variant it had never made.
    invocations = [
        record
        for line in cdn.output
        if line.startswith("{") and (record := json.loads(line)).get("message") == "image request"
    ]
    misses = [f for v in session.visits for f in v.fetches if f.x_cache == MISS]
    assert len(invocations) == len(misses)
    assert {r["cache"] for r in invocations} == {"MISS"}
    phone_first = [f for p in PAGES for f in session.find("phone", p).fetches]
    REPORT.append(
        f"function invocations: {len(invocations)}, one per edge Miss of /_next/image, each a "
        "transform (cache MISS in the function's log)"
    )
    REPORT.append(
        f"edge cache: desktop first visit {len(first_desktop)} x Miss; phone first visit "
        f"{sum(f.x_cache == HIT for f in phone_first)} Hit / "
        f"{sum(f.x_cache == MISS for f in phone_first)} Miss (a Hit: a width the desktop "
        f"asked for too); reloads: {hits} responses, all Hit (redirect and variant both counted)"
    )


def test_a_browser_without_avif_gets_webp_from_its_own_cache_entry(
    session: Session, built_app: dict[str, Picture]
) -> None:
    count = 0
    for path in PAGES:
        webp = session.find("phone-webp", path)
        avif = {f.url: f for f in session.find("phone", path).fetches}
        assert sorted(f.url for f in webp.fetches) == sorted(avif), path
        for fetch in webp.fetches:
            assert fetch.accept == "image/webp,*/*"
            assert (fetch.x_cache, fetch.final_x_cache) == (MISS, MISS), fetch.url
            assert fetch.final_status == 200 and fetch.content_type == "image/webp", fetch.url
            decoded = imagegen.decode(fetch.body)
            expected = min(fetch.w, _source_width(fetch, built_app))
            assert (decoded.format, decoded.width) == ("webp", expected), fetch.url
            assert fetch.body != avif[fetch.url].body
            if fetch.location is not None:
                assert fetch.location != avif[fetch.url].location
            count += 1
    REPORT.append(
        f"WebP context: {count} requests, all Miss at the edge (their own cache entries), "
        "all image/webp at the same widths, bytes distinct from the AVIF ones"
    )


def test_screenshots_are_saved(session: Session) -> None:
    for shot in session.screenshots:
        assert shot.stat().st_size > 10_000, shot
    saved = ", ".join(str(s.relative_to(ROOT)) for s in session.screenshots)
    REPORT.append(f"screenshots: {saved}")
