"""A static export: a real Next.js 16.4.6 app with ``output: 'export'``, two ways to deploy it.

``tests/e2e/export_app`` (its own package.json and lockfile) uses ``next/image`` with the loader
``next-image loader --out`` writes. Built once with it (its pages link ``/_next/image?…``), the
export is synthesized with ``-c staticSiteDir=out -c nextDir=.next`` and served by ``next-image
local-cdn``: the pages from the site bucket behind the default behaviour and its CloudFront
Function, every image made by the function from that bucket, AVIF or WebP as negotiated, a reload
answered by the edge cache, a missing page answered with the export's 404 page. Then ``next-image
warm --out`` reads that export's pages and writes every variant they link as WebP files, with the
loader module that links them; the app is built again with that module and served as plain files
(Python's ``http.server``, no function): every image loads and decodes as WebP at its width.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from harness import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HERE, NEXT, REPORT, ROOT, TIMINGS, timed

from devtools.pictures import Picture, logo, save, scene
from handler.commands.loopback import serving
from kit import imagegen
from kit.local_cdn_process import LocalCdn, local_cdn
from kit.synth import cdk_synth

EXPORT_APP = HERE / "export_app"
LOADER_CASES = HERE.parent / "kit" / "data" / "loader_cases.json"
STACK = "NextImageStaticE2E"
HIT = "Hit from cloudfront"
FILES = re.compile(r"/_next/image-files(?P<src>/.+)\.w(?P<w>\d+)q(?P<q>\d+)\.webp")
WHITE = (255, 255, 255)
PICTURES = {  # scenes: sky, ground, sun, seed
    Picture("app/photo.jpg", 2400, 1600): ((90, 150, 230), (240, 200, 150), (255, 230, 120), 11),
    Picture("public/images/street.jpg", 1600, 1067): ((40, 40, 80), (200, 120, 90), WHITE, 12),
    Picture("public/images/harbour.jpg", 1200, 900): ((120, 180, 220), (30, 90, 140), WHITE, 13),
    Picture("public/images/meadow.jpg", 1200, 900): ((170, 210, 250), (70, 150, 60), WHITE, 14),
}
LOGO = Picture("public/images/logo.png", 512, 512)
IMAGES_ON = {"/": 5, "/about": 1}
DOM_IMAGES = """els => els.map(e => ({
    alt: e.alt, currentSrc: e.currentSrc, complete: e.complete, naturalWidth: e.naturalWidth}))"""
ALL_LOADED = "() => Array.from(document.images).every(i => i.complete)"


def _run(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> None:
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **(env or {})}
    with log.open("wb") as out:
        done = subprocess.run(
            command, cwd=EXPORT_APP, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")


def _next_image(*args: str, log: Path) -> None:
    """The CLI as a user runs it, from the app's folder."""
    _run([sys.executable, "-m", "handler.commands.cli", *args], log, 900, {"PYTHONPATH": str(ROOT)})


def draw() -> dict[str, Picture]:
    """The app's images (git-ignored), the same bytes every run."""
    made: dict[Picture, Any] = {p: scene(p.width, p.height, *a) for p, a in PICTURES.items()}
    made[LOGO] = logo(LOGO.width)
    return save(EXPORT_APP, made)


def source_width(src: str, pictures: dict[str, Picture]) -> int:
    if src.startswith("/_next/static/media/"):
        return pictures["app/photo.jpg"].width
    return pictures["public" + src].width


@dataclass
class Build:
    out: Path
    next_dir: Path
    pictures: dict[str, Picture]


@dataclass
class Answer:
    url: str
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Visit:
    name: str
    images: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)


@pytest.fixture(scope="module")
def export_packages(artifacts: Path) -> Path:
    """The export app's npm packages (next 16.4.6), ``npm ci`` skipped while they match."""
    lock = hashlib.sha256((EXPORT_APP / "package-lock.json").read_bytes()).hexdigest()
    stamp = EXPORT_APP / "node_modules" / ".e2e-package-lock.sha256"
    if stamp.is_file() and stamp.read_text() == lock:
        TIMINGS["export app: npm ci"] = "cached (node_modules matches package-lock.json)"
    else:
        with timed("export app: npm ci"):
            _run(["npm", "ci", "--no-audit", "--no-fund"], artifacts / "export-npm-ci.log", 300)
        stamp.write_text(lock)
    return EXPORT_APP / "node_modules"


def _next_build(artifacts: Path, name: str) -> None:
    shutil.rmtree(EXPORT_APP / "out", ignore_errors=True)
    with timed(f"export app: next build ({name})"):
        _run([*NEXT, "build"], artifacts / f"export-next-build-{name}.log", 480)


@pytest.fixture(scope="module")
def optimizer_build(
    export_packages: Path, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Build:
    """``next-image loader --out next-image-loader.js``, then ``next build``: the export whose
    pages link the optimizer; its ``out/`` and ``.next`` kept apart (the app is built again)."""
    pictures = draw()
    _next_image("loader", "--out", "next-image-loader.js", log=artifacts / "export-loader.log")
    _next_build(artifacts, "optimizer loader")
    kept = tmp_path_factory.mktemp("export-optimizer")
    shutil.copytree(EXPORT_APP / "out", kept / "out")
    shutil.copytree(EXPORT_APP / ".next", kept / ".next", ignore=shutil.ignore_patterns("cache"))
    return Build(kept / "out", kept / ".next", pictures)


@pytest.fixture(scope="module")
def static_cdn(
    optimizer_build: Build, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCdn]:
    """The CDK app synthesized for the export (``staticSiteDir``, ``nextDir``, no app origin),
    served by ``local-cdn --moto``: its BucketDeployment puts ``out/`` in the site bucket."""
    root = tmp_path_factory.mktemp("export-stack")
    with timed("export app: cdk synth (in-process)"):
        template = cdk_synth(
            root,
            STACK,
            staticSiteDir=str(optimizer_build.out),
            nextDir=str(optimizer_build.next_dir),
        )
    with ExitStack() as stack:
        with timed("export app: local-cdn start"):
            cdn = stack.enter_context(local_cdn("--template", str(template), start_timeout=120))
        stack.callback(lambda: (artifacts / "export-local-cdn.log").write_text("".join(cdn.output)))
        yield cdn


def _browse(base: str, visits: list[Visit], name: str, context: Any, reload: bool) -> None:
    """``/`` loaded, every image scrolled into view and loaded; reloaded with the browser's cache
    off if asked; then About reached by a client-side navigation (the loader runs in the page)."""
    page = context.new_page()
    answers: list[Answer] = []

    def record(response: Any) -> None:
        if response.request.resource_type == "image" or "/_next/image" in response.url:
            body = response.body() if response.status == 200 else b""
            answers.append(Answer(response.url, response.status, response.headers, body))

    page.on("response", record)
    try:
        for phase in ("first", "reload") if reload else ("first",):
            answers.clear()
            if phase == "first":
                page.goto(base + "/", wait_until="load", timeout=60_000)
            else:
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                page.reload(wait_until="load", timeout=60_000)
            _load_every_image(page)
            visit = Visit(f"{name} / {phase}", page.eval_on_selector_all("img", DOM_IMAGES))
            visit.answers = list(answers)
            visits.append(visit)
        page.screenshot(path=str(ARTIFACTS / f"export-{name}.png"), full_page=True)
        answers.clear()
        page.click("#about-link")
        page.wait_for_url("**/about", timeout=60_000)
        page.wait_for_selector("img[alt=Meadow]", timeout=60_000)
        _load_every_image(page)
        visit = Visit(f"{name} / about", page.eval_on_selector_all("img", DOM_IMAGES))
        visit.answers = list(answers)
        visits.append(visit)
    finally:
        page.close()


def _load_every_image(page: Any) -> None:
    images = page.locator("img")
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed(timeout=60_000)
    page.wait_for_function(ALL_LOADED, timeout=120_000)
    page.wait_for_load_state("networkidle", timeout=60_000)


def _chromium_visits(base: str, contexts: dict[str, dict[str, Any]], reload: bool) -> list[Visit]:
    from playwright.sync_api import sync_playwright

    visits: list[Visit] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, options in contexts.items():
                context = browser.new_context(**options)
                try:
                    _browse(base, visits, name, context, reload)
                finally:
                    context.close()
        finally:
            browser.close()
    return visits


@pytest.fixture(scope="module")
def cdn_visits(static_cdn: LocalCdn) -> list[Visit]:
    contexts: dict[str, dict[str, Any]] = {
        "desktop": {"viewport": {"width": 1280, "height": 800}},
        "webp": {
            "viewport": {"width": 1280, "height": 800},
            "extra_http_headers": {"Accept": "image/webp,*/*"},
        },
    }
    with timed("export app: browsing through local-cdn"):
        return _chromium_visits(static_cdn.url, contexts, reload=True)


def test_the_loader_cases_are_what_nexts_default_loader_gives(export_packages: Path) -> None:
    """``tests/kit/data/loader_cases.json`` (which ``tests/system/test_loader.py`` holds the
    shipped loader to) is what Next 16.4.6's own default loader returns, computed again from its
    code."""
    done = subprocess.run(
        ["node", str(HERE / "loader_cases.mjs"), "--next-app", str(EXPORT_APP)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    produced = json.loads(done.stdout)
    assert produced["next"] == "16.4.6"
    assert json.loads(LOADER_CASES.read_text()) == produced, (
        "run `node tests/e2e/loader_cases.mjs --write` and review"
    )


NEXT_LOADER = """
const { createRequire } = require('module');
const require2 = createRequire(process.argv[1] + '/package.json');
process.env.NODE_ENV = 'production';
const loader = require2('next/dist/shared/lib/image-loader').default;
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const urls = input.calls.map((call) => loader({ config: input.config, ...call }));
process.stdout.write(JSON.stringify(urls));
"""


def test_the_exported_pages_link_what_nexts_default_loader_would(optimizer_build: Build) -> None:
    """Every optimizer URL in the export's HTML is the one Next's default loader builds for its
    ``url``, ``w`` and ``q`` with the app's config: the server build's links, on a static site."""
    document = json.loads((optimizer_build.next_dir / "required-server-files.json").read_text())
    images = document["config"]["images"]
    assert (document["config"]["output"], images["loader"]) == ("export", "custom")
    html = "".join(p.read_text() for p in sorted(optimizer_build.out.rglob("*.html")))
    urls = sorted(set(re.findall(r"/_next/image\?url=[^\s\"']+", html.replace("&amp;", "&"))))
    assert len(urls) >= 10
    calls = []
    for url in urls:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        calls.append({"src": query["url"], "width": int(query["w"]), "quality": int(query["q"])})
    config = {"path": "/_next/image", "qualities": images["qualities"]}
    done = subprocess.run(
        ["node", "-e", NEXT_LOADER, str(EXPORT_APP)],
        input=json.dumps({"config": config, "calls": calls}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == urls
    street = [u for u in urls if "street.jpg" in u]
    assert street and all(u.endswith("&q=75") for u in street)  # quality 90, snapped
    assert all(u.endswith("&q=60") for u in urls if "harbour.jpg" in u)
    REPORT.append(f"export: {len(urls)} optimizer URLs in the HTML, each Next's default loader's")


def test_every_image_is_made_by_the_function_avif_or_webp_as_negotiated(
    cdn_visits: list[Visit], optimizer_build: Build, static_cdn: LocalCdn
) -> None:
    pictures = optimizer_build.pictures
    count = 0
    for visit in cdn_visits:
        expected = IMAGES_ON["/about" if visit.name.endswith("about") else "/"]
        assert len(visit.images) == expected, visit.name
        assert all(i["complete"] and i["naturalWidth"] > 0 for i in visit.images), visit.name
        chosen = sorted(i["currentSrc"] for i in visit.images)
        assert sorted(a.url for a in visit.answers) == chosen, visit.name
        fmt = "webp" if visit.name.startswith("webp") else "avif"
        for answer in visit.answers:
            parts = urlsplit(answer.url)
            assert parts.path == "/_next/image", answer.url
            assert (answer.status, answer.headers["content-type"]) == (200, f"image/{fmt}")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            decoded = imagegen.decode(answer.body)
            width = min(int(query["w"]), source_width(query["url"], pictures))
            assert (decoded.format, decoded.width) == (fmt, width), answer.url
            if visit.name.endswith("reload"):
                assert answer.headers["x-cache"] == HIT, answer.url
            count += 1
    invocations = [
        line
        for line in static_cdn.output
        if line.startswith("{") and json.loads(line).get("message") == "image request"
    ]
    misses = {
        (a.url, v.name.split(" / ")[0])
        for v in cdn_visits
        for a in v.answers
        if a.headers.get("x-cache") != HIT
    }
    assert len(invocations) == len(misses)
    REPORT.append(
        f"export through local-cdn: {count} image answers over {len(cdn_visits)} page loads, all "
        f"from the function ({len(invocations)} invocations, one per edge miss), AVIF for Chromium,"
        " WebP for a browser without AVIF, reloads all Hit from cloudfront"
    )


def test_pages_come_from_the_site_bucket_and_a_missing_one_is_the_404_page(
    static_cdn: LocalCdn, cdn_visits: list[Visit]
) -> None:
    with httpx.Client(base_url=static_cdn.url, timeout=60) as client:
        home, about = client.get("/"), client.get("/about")
        assert (home.status_code, about.status_code) == (200, 200)
        assert home.headers["content-type"] == "text/html"
        assert "/_next/image?url=" in about.text
        missing = client.get("/nowhere")
        assert missing.status_code == 404
        assert "This page could not be found" in missing.text


@pytest.fixture(scope="module")
def files_site(
    optimizer_build: Build, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``warm --out`` over the export's pages, the app built again with the loader module it
    wrote, and the two put together as a static host would serve them."""
    files = tmp_path_factory.mktemp("export-files")
    with timed("export app: warm --out (WebP files)"):
        _next_image(
            "warm",
            "--out",
            str(files),
            "--pages",
            str(optimizer_build.out),
            "--public-dir",
            str(optimizer_build.out),
            "--config",
            str(optimizer_build.next_dir),
            "--format",
            "webp",
            log=artifacts / "export-warm-out.log",
        )
    module = files / "_next" / "image-files" / "next-image-loader.js"
    shutil.copy(module, EXPORT_APP / "next-image-loader.js")
    _next_build(artifacts, "files loader")
    site = tmp_path_factory.mktemp("export-site") / "site"
    shutil.copytree(EXPORT_APP / "out", site)
    shutil.copytree(files, site, dirs_exist_ok=True)
    return site


@dataclass
class PlainHost:
    url: str
    paths: list[tuple[str, int]]  # every request: path, status


@pytest.fixture(scope="module")
def plain_host(files_site: Path) -> Iterator[PlainHost]:
    """Python's ``http.server`` over the files, on a free port: no function, no negotiation.
    Like a static host's "clean URLs", ``/about`` is ``about.html``."""
    host = PlainHost("", [])

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(files_site), **kwargs)

        def translate_path(self, path: str) -> str:
            found = super().translate_path(path)
            if not Path(found).suffix and Path(found + ".html").is_file():
                return found + ".html"
            return found

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            host.paths.append((urlsplit(self.path).path, int(code)))

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)) as host.url:
        yield host


def test_the_warm_out_site_shows_every_image_as_webp_files(
    plain_host: PlainHost, files_site: Path, optimizer_build: Build
) -> None:
    contexts = {"desktop": {"viewport": {"width": 1280, "height": 800}}}
    with timed("export app: browsing the plain files"):
        visits = _chromium_visits(plain_host.url, contexts, reload=False)
    pictures = optimizer_build.pictures
    count = 0
    for visit in visits:
        expected = IMAGES_ON["/about" if visit.name.endswith("about") else "/"]
        assert len(visit.images) == expected, visit.name
        assert all(i["complete"] and i["naturalWidth"] > 0 for i in visit.images), visit.name
        assert sorted(a.url for a in visit.answers) == sorted(i["currentSrc"] for i in visit.images)
        for answer in visit.answers:
            found = FILES.fullmatch(unquote(urlsplit(answer.url).path))
            assert found is not None, answer.url
            assert (answer.status, answer.headers["content-type"]) == (200, "image/webp")
            decoded = imagegen.decode(answer.body)
            width = min(int(found["w"]), source_width(found["src"], pictures))
            assert (decoded.format, decoded.width) == ("webp", width), answer.url
            count += 1
    assert not [
        p for p, _ in plain_host.paths if p.startswith("/_next/image") and "-files" not in p
    ]
    # Every file the pages asked for was there (the app has no favicon: Chromium asks anyway).
    assert not [(p, s) for p, s in plain_host.paths if s >= 400 and p != "/favicon.ico"]
    written = list((files_site / "_next" / "image-files").rglob("*.webp"))
    REPORT.append(
        f"warm --out: {len(written)} WebP files; the rebuilt export on http.server showed "
        f"{count} images from them, no function, no 404"
    )
