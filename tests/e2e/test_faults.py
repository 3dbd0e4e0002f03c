"""The gallery in Chromium while the stack's dependencies fail, on a local-cdn of this module's own.

The session's ``next start`` serves the pages; this module runs the session's synthesized stack
on its own ``local-cdn`` whose S3 is a moto server behind the tests' fault proxy (one bucket at
a time hung, slow or throttled), and whose function reaches the app's origin through a relay that
can be switched off (the relay's port refuses connections; ``NEXT_IMAGE_ORIGIN`` points there
through local-cdn's ``--env-file``, while CloudFront still gets the pages from the app).

Two of the cards are not in the assets bucket (deleted after the deploy's upload), so their
source is the app's origin: the function reads them there, keeps their bytes in the store, and
serves new widths from that copy. The function's inline limit is lowered (``--env-file``) so
that the noise image's variant is answered as a phone's 3840 px one is: a 302 to the variants
bucket, which CloudFront's S3 origin serves. While that bucket hangs or refuses, the variant
cannot be stored, so there is nothing to redirect to: that image may only be a prompt 503.

Each state starts on new function instances (a SIGHUP: local-cdn's redeploy in place retires the
warm ones, so no circuit breaker or remembered pointer carries over) and an edge whose
``/_next/image*`` was invalidated (CreateInvalidation on its CloudFront API), so every image
reaches the function. The viewport's width picks the widths asked for, so some images are new
variants (a source read, a transform, writes) and others are stored ones (a hit):

- normal: the baseline;
- variants bucket hung (black-holed: it accepts and never answers);
- variants bucket slow (every answer 1.5 s late);
- variants bucket refusing (S3's ``503 SlowDown`` to every request);
- assets bucket slow (1.5 s late);
- origin down (the relay refuses), after one of the origin's cards was purged from the store
  (its pointer deleted, as ``next-image purge`` does): nothing is left to read it from; the
  other is served from its kept copy. The remote host is down too (it drops every connection),
  and ``/remote`` is loaded as well: this store has never seen its image.

In each, every image is either correct (complete in the browser with ``naturalWidth > 0``, and
the ``/_next/image`` answer decodes as AVIF or WebP at the source's width capped at ``w``) or,
where no source can be read (or the oversize one cannot be stored), a 5xx the function answered
within the request budget plus a margin, which the edge forgets: after the fault is lifted, a
reload reaches the function within the error caching TTL plus a margin and gets the image.
Afterwards every object in the variants bucket is checked: each variant decodes to the format
and width its key names, each pointer names the bytes its URL serves, each kept source hashes
to its key. Page-load times per state go to the e2e report.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import APP, ARTIFACTS, REPORT, timed
from processes import Proxy, free_port

from devtools.fault_proxy import FaultProxy, Mode, fault_proxy
from devtools.pictures import CARDS, HUGE, LOGO, MOUNTAIN, PHOTO, STREET, remote
from handler.entry.settings import Settings
from handler.formats import pipeline_version
from handler.request.keys import pointer_key
from handler.stores.records import decode_pointer
from handler.stores.s3 import POINTERS, SOURCES, VARIANTS
from kit import imagegen
from kit.local_cdn_process import LocalCdn, local_cdn
from kit.support import wait_for
from kit.upstream_server import Handler, Server

HANG_SECONDS = 120.0  # only a hang waits this long
MARGIN = 5.0  # seconds over a configured bound that still count as prompt
SLOW = 1.5  # seconds late, for a slow bucket
API = re.compile(r"local-cdn: CloudFront API for distribution (\S+) at (http://\S+) ")
VARIANT_KEY = re.compile(
    r"^(?P<hash>[0-9a-f]{64})/(?P<w>\d+)w-(?P<q>\d+)q-(?P<fmt>[a-z]+)-p(?P<pipeline>.+)$"
)
# Every <img> settled (loaded or broken); the page's clock then (ms since navigation).
ALL_COMPLETE = """() => {
    const images = Array.from(document.images);
    return images.length > 0 && images.every(i => i.complete) ? performance.now() : false;
}"""
DOM_IMAGES = "els => els.map(e => ({src: e.currentSrc, naturalWidth: e.naturalWidth}))"
IMAGES_ON = {"/": 7, "/remote": 1}
# Served by the app's origin only: deleted from the assets bucket after the deploy.
FROM_ORIGIN = ("/images/meadow.jpg", "/images/dunes.jpg")
PURGED = "/images/dunes.jpg"  # its pointer deleted before the origin goes down
# The function's inline limit, lowered from Lambda's 4.4 MB so that the noise image at 1920 px
# (about 600 KB as AVIF) is over it: a 302 to the variants bucket, which CloudFront's S3 origin
# serves, as a 3840 px one is on a phone, without that encode's 10 s and more.
INLINE_LIMIT = 300_000
OVERSIZE = "/images/huge.png"
S3_FAULTS: dict[str, tuple[str, Mode]] = {
    "variants-hang": ("variants", "hang"),
    "variants-slow": ("variants", "slow"),
    "variants-refuse": ("variants", "refuse"),
    "assets-slow": ("assets", "slow"),
}


@dataclass(frozen=True)
class State:
    name: str
    viewport: int  # CSS px wide, one device pixel each: which widths the page asks for
    fault: str
    unreadable: frozenset[str] = frozenset()  # images with no readable source: must be 5xx
    # Images whose variant is too large to answer inline: with the variants bucket down, there
    # is no way to deliver them (the 302 needs the stored object), so they must be 5xx too.
    undeliverable: frozenset[str] = frozenset()


# Viewports, and the photo's and the cards' w: 1280: 1200 and 640; 1000: 1080 and 384; 760: 828
# and 256; 700: 750 and 750 (street 640, logo 128 and huge 1920 in all). Nothing is stored
# while the variants bucket hangs or refuses, so 1000's widths are still new for the origin's.
STATES = (
    State("normal", 1280, "none"),
    State("variants bucket hung", 1000, "variants-hang", undeliverable=frozenset({OVERSIZE})),
    State("variants bucket slow", 760, "variants-slow"),
    State("variants bucket refusing", 1000, "variants-refuse", undeliverable=frozenset({OVERSIZE})),
    State("assets bucket slow", 700, "assets-slow"),
    State("origin down", 1000, "origin-down", frozenset({PURGED})),
)


class Relay:
    """A TCP relay on a fixed loopback port to ``target``. ``down()`` closes the listener and
    every relayed connection, so connecting is refused; ``up()`` listens on the port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.port = free_port()
        self._target = target
        self._lock = threading.Lock()
        self._open: dict[socket.socket, int] = {}  # relayed sockets, and directions running
        self._listener: socket.socket | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            relayed, self._open = self._open, {}
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        for conn in relayed:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open[client] = self._open[upstream] = 2  # directions still running
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """One direction of a connection; the second to end closes both sockets."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self._lock:
            running = self._open.get(source, 1) - 1
            if running:
                self._open[source] = self._open[sink] = running
            else:
                self._open.pop(source, None)
                self._open.pop(sink, None)
        if not running:
            source.close()
            sink.close()


@dataclass
class Stack:
    cdn: LocalCdn
    proxy: FaultProxy
    origin: Relay
    s3: Any  # boto3 S3 client straight to moto, past the fault proxy
    cloudfront: Any  # boto3 CloudFront client for local-cdn's API
    distribution: str
    variants: str
    assets: str
    prefix: str  # the variants' key prefix
    budget: float  # NEXT_IMAGE_TIMEOUT
    error_ttl: int  # the distribution's ErrorCachingMinTTL for 502 (the origin-down answer)
    store_timeout: float
    invalidations: int = 0

    def fresh_start(self) -> None:
        """New function instances (SIGHUP) and an edge that forgets every ``/_next/image``."""
        self.cdn.redeploy(HANG_SECONDS)
        self.invalidations += 1
        self.cloudfront.create_invalidation(
            DistributionId=self.distribution,
            InvalidationBatch={
                "Paths": {"Quantity": 1, "Items": ["/_next/image*"]},
                "CallerReference": f"faults-{self.invalidations}",
            },
        )

    def apply(self, fault: str) -> None:
        if fault in S3_FAULTS:
            bucket, mode = S3_FAULTS[fault]
            self.proxy.bucket = self.variants if bucket == "variants" else self.assets
            self.proxy.delay = SLOW
            self.proxy.mode = mode
        elif fault == "origin-down":
            self.origin.down()

    def lift(self, fault: str) -> None:
        """The fault ended: S3 answers again (hung connections dropped), the origin listens."""
        self.proxy.mode = "pass"
        self.proxy.release()
        if fault == "origin-down":
            self.origin.up()


def _clients(moto_s3: str, api: str) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    credentials = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    s3 = boto3.client(
        "s3", endpoint_url=moto_s3, config=Config(s3={"addressing_style": "path"}), **credentials
    )
    return s3, boto3.client("cloudfront", endpoint_url=api, **credentials)


@pytest.fixture(scope="module")
def stack(
    synthesized: Path,
    app_proxy: Proxy,
    moto_s3: str,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[Stack]:
    from handler.commands.local_cdn.template import read_template

    distribution = read_template(synthesized)
    function = distribution.lambda_function
    assert function is not None
    environment = function.environment
    app = urlsplit(app_proxy.url)
    root = tmp_path_factory.mktemp("e2e-faults")
    with ExitStack() as stack:
        proxy = stack.enter_context(fault_proxy(int(moto_s3.rsplit(":", 1)[1])))
        origin = Relay((app.hostname or "127.0.0.1", app.port or 80))
        stack.callback(origin.down)
        env_file = root / "function.env"
        env_file.write_text(
            f"NEXT_IMAGE_ORIGIN={origin.url}\nNEXT_IMAGE_MAX_INLINE_BYTES={INLINE_LIMIT}\n"
        )
        credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        args: tuple[str, ...] = ("--template", str(synthesized), "--app-origin", app_proxy.url)
        args += ("--env-file", str(env_file))
        with timed("faults: local-cdn start"):
            cdn = stack.enter_context(
                local_cdn(
                    *args,
                    moto=False,
                    environment={"AWS_ENDPOINT_URL": proxy.url, **credentials},
                    start_timeout=120,
                )
            )
        stack.callback(lambda: (artifacts / "local-cdn-faults.log").write_text("".join(cdn.output)))
        found = next(m for line in cdn.output if (m := API.search(line)))
        s3, cloudfront = _clients(moto_s3, found.group(2))
        assets, assets_prefix = (
            environment["NEXT_IMAGE_ASSETS_BUCKET"],
            environment.get("NEXT_IMAGE_ASSETS_PREFIX", ""),
        )
        for src in FROM_ORIGIN:  # only the app's origin has them now
            key = assets_prefix + src.removeprefix("/")
            s3.head_object(Bucket=assets, Key=key)  # the deploy uploaded it
            s3.delete_object(Bucket=assets, Key=key)
        yield Stack(
            cdn=cdn,
            proxy=proxy,
            origin=origin,
            s3=s3,
            cloudfront=cloudfront,
            distribution=found.group(1),
            variants=environment["NEXT_IMAGE_BUCKET"],
            assets=assets,
            prefix=environment.get("NEXT_IMAGE_PREFIX", ""),
            budget=float(environment["NEXT_IMAGE_TIMEOUT"]),
            error_ttl=distribution.error_caching_min_ttl.get(502, 10),
            store_timeout=Settings.from_env(environment).store_timeout,
        )


@dataclass
class Answer:
    """What the browser got for one ``<img>``'s ``/_next/image`` request."""

    src: str  # the url parameter
    w: int
    query: str  # as sent
    status: int  # 0: no response at all
    x_cache: str
    nextjs_cache: str
    cache_control: str
    body: bytes
    seconds: float  # the request's start to its answer's last byte
    natural_width: int
    redirected: bool  # a 302 to the variants bucket, followed (the rest describes its object)
    function_seconds: float = float("nan")  # of a 5xx: the function's own time, from its log


@dataclass
class Load:
    seconds: float  # navigation start to every <img> complete (loaded or broken)
    answers: dict[str, Answer]  # by src


@dataclass
class Tab:
    """A page in a context of its own, the browser's cache disabled (reloads reach the edge)."""

    context: Any
    page: Any
    requests: list[Any] = field(default_factory=list)
    images: int = 0  # on the page

    @classmethod
    def open(cls, browser: Any, viewport: int) -> Tab:
        # Tall enough that every image is within the lazy-loading distance from the start.
        context = browser.new_context(viewport={"width": viewport, "height": 3000})
        page = context.new_page()
        tab = cls(context, page)
        page.on("requestfinished", lambda request: tab.requests.append(request))
        page.on("requestfailed", lambda request: tab.requests.append(request))
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        return tab

    def load(self, url: str | None = None, images: int = 0) -> Load:
        """The page loaded (``url``, with that many <img>) or reloaded, until every <img> is
        complete."""
        self.images = images or self.images
        self.requests.clear()
        if url is None:
            self.page.reload(wait_until="domcontentloaded", timeout=HANG_SECONDS * 1000)
        else:
            self.page.goto(url, wait_until="domcontentloaded", timeout=HANG_SECONDS * 1000)
        elements = self.page.locator("img")
        for index in range(elements.count()):
            elements.nth(index).scroll_into_view_if_needed(timeout=HANG_SECONDS * 1000)
        done = self.page.wait_for_function(ALL_COMPLETE, timeout=HANG_SECONDS * 1000)
        seconds = float(done.json_value()) / 1000
        shown = self.page.eval_on_selector_all("img", DOM_IMAGES)
        assert len(shown) == self.images, shown
        deadline = time.monotonic() + HANG_SECONDS
        while not all(self._final(img["src"]) for img in shown):  # events still on their way
            assert time.monotonic() < deadline, "no request recorded for an <img>"
            self.page.wait_for_timeout(50)  # lets Playwright deliver them
        answers = {}
        for img in shown:
            answer = self._answer(
                self._request(img["src"]), self._final(img["src"]), img["naturalWidth"]
            )
            answers[answer.src] = answer
        return Load(seconds, answers)

    def _request(self, url: str) -> Any:
        found = [r for r in self.requests if r.url == url]
        return found[-1] if found else None

    def _final(self, url: str) -> Any:
        """The request that ended the chain from ``url`` (its redirect followed), once it has
        finished; None before."""
        request = self._request(url)
        while request is not None and request.redirected_to is not None:
            request = request.redirected_to
            if request not in self.requests:
                return None
        return request

    @staticmethod
    def _answer(request: Any, final: Any, natural_width: int) -> Answer:
        parts = urlsplit(request.url)
        assert parts.path == "/_next/image", request.url
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        first, response = request.response(), final.response()
        headers = first.headers if first is not None else {}
        final_headers = response.headers if response is not None else {}
        ended = final.timing.get("responseEnd", -1)
        started = request.timing["startTime"] / 1000
        return Answer(
            src=query["url"],
            w=int(query["w"]),
            query=parts.query,
            status=response.status if response is not None else 0,
            x_cache=final_headers.get("x-cache", ""),
            nextjs_cache=headers.get("x-nextjs-cache", ""),
            cache_control=final_headers.get("cache-control", ""),
            body=response.body() if response is not None else b"",
            seconds=final.timing["startTime"] / 1000 + ended / 1000 - started
            if ended >= 0
            else float("nan"),
            natural_width=natural_width,
            redirected=final is not request,
        )

    def close(self) -> None:
        self.context.close()


def source_width(src: str) -> int:
    """The width of the picture behind an image URL (the remote one, a public file, or the
    static import, whose name the build hashed)."""
    if src.startswith("http"):
        return MOUNTAIN.width
    if src.startswith("/_next/static/media/"):
        stem = src.rsplit("/", 1)[1].split(".", 1)[0]
        [picture] = [p for p in (PHOTO, STREET, LOGO, HUGE, *CARDS) if Path(p.path).stem == stem]
        return picture.width
    [picture] = [p for p in (STREET, LOGO, HUGE, *CARDS) if p.path == "public" + src]
    return picture.width


def assert_correct(answer: Answer) -> None:
    """Decoded by the browser, and an AVIF or WebP as wide as the source allows at ``w``."""
    assert answer.status == 200, (answer.src, answer.status, answer.body[:200])
    assert answer.natural_width > 0, answer.src
    decoded = imagegen.decode(answer.body)
    assert decoded.format in ("avif", "webp"), (answer.src, decoded)
    assert decoded.width == min(answer.w, source_width(answer.src)), (answer.src, answer.w, decoded)


def counts(values: list[str]) -> str:
    tally: dict[str, int] = {}
    for value in values:
        tally[value] = tally.get(value, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(tally.items()))


def check_first_load(load: Load, stack: Stack, start: int, unreadable: set[str]) -> set[str]:
    """Each image correct, or (only where it cannot be had) a prompt 5xx; the failed.

    Prompt: the function answered within the request budget and a margin (the browser's own
    time also counts local-cdn's queue for its two function instances, which Lambda has not).
    """
    failed = {src for src, answer in load.answers.items() if answer.status != 200}
    for src, answer in load.answers.items():
        if src not in failed:
            assert_correct(answer)
            continue
        assert src in unreadable, (src, answer.status, answer.body[:300])
        assert 500 <= answer.status < 600, (src, answer.status)
        assert answer.natural_width == 0, src  # the browser shows it broken
        assert answer.x_cache == "Error from cloudfront", answer.x_cache
        assert "no-store" in answer.cache_control, answer.cache_control
        answer.function_seconds = function_seconds(stack, start, answer)
        assert answer.function_seconds <= stack.budget + MARGIN, (src, answer.function_seconds)
        assert answer.seconds < HANG_SECONDS, (src, answer.seconds)
    return failed


def function_seconds(stack: Stack, start: int, answer: Answer) -> float:
    """How long the function took over the request that answered ``answer``'s 5xx."""

    def found() -> list[dict[str, Any]]:
        records = stack.cdn.image_records(start)
        return [r for r in records if r.get("query") == answer.query and r["status"] >= 500]

    wait_for(found, f"the function's log line for {answer.query}", HANG_SECONDS)
    return float(found()[-1]["total_ms"]) / 1000


def recover(tab: Tab, failed: set[str], lifted: float, stack: Stack) -> str:
    """Reload until the failed images are back (the edge forgets a 5xx after its error
    caching TTL); what each reload got, and when after the lift."""
    tries = []
    while True:
        started = time.monotonic()
        again = tab.load()
        still = {src for src in failed if again.answers[src].status != 200}
        at = f"+{started - lifted:.1f} s"
        if not still:
            tries.append(f"the image at {at} (in {time.monotonic() - started:.1f} s)")
            break
        tries.append(f"5xx at {at}")
        assert time.monotonic() < lifted + stack.error_ttl + MARGIN, (
            f"the edge still answers {still} with an error: {tries}"
        )
    for answer in again.answers.values():
        assert_correct(answer)
    return f"after the fault was lifted, reloads got {', '.join(tries)}"


def describe(load: Load, failed: set[str]) -> str:
    line = (
        f"every <img> complete in {load.seconds:.1f} s, {len(load.answers) - len(failed)} correct"
    )
    redirected = sorted(short(src) for src, answer in load.answers.items() if answer.redirected)
    if redirected:
        line += f" ({', '.join(redirected)} through the variants bucket)"
    for src in sorted(failed):
        answer = load.answers[src]
        line += (
            f", {short(src)} {answer.status} in {answer.seconds:.1f} s (the function's "
            f"{answer.function_seconds:.1f} s)"
        )
    return line


def short(src: str) -> str:
    return Path(urlsplit(src).path).name.split(".")[0]


def dropped(handler: Handler) -> None:
    """A remote host that is down: the connection ends without an answer."""
    handler.close_connection = True


@pytest.mark.parametrize("state", STATES, ids=[s.fault for s in STATES])
def test_every_image_is_correct_or_a_prompt_error_the_edge_forgets(
    state: State, stack: Stack, browser: Any, remote_server: Server
) -> None:
    stack.fresh_start()
    remote_src = remote_server.url(MOUNTAIN.path)
    pages = ["/"]
    unreadable = set(state.unreadable | state.undeliverable)
    if state.fault == "origin-down":
        # What `next-image purge --url` deletes: nothing is left to read this card from.
        key = f"{stack.prefix}{POINTERS}{pointer_key(PURGED)}"
        stack.s3.head_object(Bucket=stack.variants, Key=key)
        stack.s3.delete_object(Bucket=stack.variants, Key=key)
        # The remote host is down too, and this store has never seen its image.
        pages.append("/remote")
        unreadable.add(remote_src)
    output_start, proxy_start = len(stack.cdn.output), len(stack.proxy.requests)
    tabs = {path: Tab.open(browser, state.viewport) for path in pages}
    serve_remote = remote_server.routes[MOUNTAIN.path]
    loads: dict[str, Load] = {}
    failed: dict[str, set[str]] = {}
    recovery: dict[str, str] = {}
    try:
        stack.apply(state.fault)
        if state.fault == "origin-down":
            remote_server.routes[MOUNTAIN.path] = dropped
        for path, tab in tabs.items():
            loads[path] = tab.load(stack.cdn.url + path, IMAGES_ON[path])
            shot = f"faults-{state.fault}{path.replace('/', '-').rstrip('-')}.png"
            tab.page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
            failed[path] = check_first_load(loads[path], stack, output_start, unreadable)
        assert set().union(*failed.values()) == unreadable, (state.name, failed)

        stack.lift(state.fault)
        remote_server.routes[MOUNTAIN.path] = serve_remote
        lifted = time.monotonic()
        for path, tab in tabs.items():
            if failed[path]:
                recovery[path] = recover(tab, failed[path], lifted, stack)
    finally:
        stack.lift(state.fault)
        remote_server.routes[MOUNTAIN.path] = serve_remote
        for tab in tabs.values():
            tab.close()

    faulted = [r for r in stack.proxy.requests[proxy_start:] if r.fault != "pass"]
    records = stack.cdn.image_records(output_start)
    gallery = loads["/"]
    widths = sorted((short(src), answer.w) for src, answer in gallery.answers.items())
    line = (
        f"faults: {state.name} (viewport {state.viewport} px; w "
        f"{', '.join(f'{n} {w}' for n, w in widths)}): {describe(gallery, failed['/'])}"
    )
    for path in pages:
        if path != "/":
            line += f"; {path}: {describe(loads[path], failed[path])}"
        if path in recovery:
            line += f"; {recovery[path]} (the edge keeps a 5xx {stack.error_ttl} s)"
    line += f"; the function: {counts([str(r.get('cache')) for r in records])}"
    if faulted:
        line += f"; S3 requests faulted: {counts([f'{r.method} {r.fault}' for r in faulted])}"
    if state.fault == "variants-hang":
        # Each instance's first store call waits for its timeout, then the breaker skips the
        # store; an oversize variant's write is tried anyway, and waits as long.
        oversize = [r for r in records if r.get("error") == "OversizeNotStored"]
        others = [r for r in records if r not in oversize]
        stores = [float(r["stages_ms"].get("store", 0.0)) / 1000 for r in others]
        paid = [(ms, float(r["total_ms"]) / 1000) for r, ms in zip(others, stores, strict=True)]
        paid = [(store, total) for store, total in paid if store >= stack.store_timeout * 0.9]
        rest = max((ms for ms in stores if ms < stack.store_timeout * 0.9), default=0.0)
        line += (
            f"; the hung store (store timeout {stack.store_timeout:g} s) cost the first request "
            f"of each function instance {', '.join(f'{a:.2f} s (of {b:.2f} s)' for a, b in paid)}"
            f", the other requests at most {rest:.2f} s"
        )
        for record in oversize:
            line += (
                f"; the oversize image's 503 after {record['total_ms'] / 1000:.1f} s (its "
                "transform, then its write, tried anyway)"
            )
        assert paid, stores  # the state really met a hung store
    REPORT.append(line)
    if state.fault in S3_FAULTS:
        assert faulted, f"{state.name}: no S3 request met the fault"


def test_the_store_holds_only_correct_variants(stack: Stack, remote_server: Server) -> None:
    """Every variant decodes to its key's format and width; every pointer names the bytes its
    URL serves; every kept source hashes to its key: nothing a fault made was stored."""
    sources: dict[str, tuple[str, int]] = {}  # sha256 -> (href, width)
    for folder, mount in ((APP / "public", ""), (APP / ".next" / "static" / "media", None)):
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            body = path.read_bytes()
            href = "/" + str(path.relative_to(folder))
            if mount is None:
                href = "/_next/static/media" + href
            sources[hashlib.sha256(body).hexdigest()] = (href, imagegen.decode(body).width)
    remote_body = remote()  # what the remote host serves
    sources[hashlib.sha256(remote_body).hexdigest()] = (
        remote_server.url(MOUNTAIN.path),
        MOUNTAIN.width,
    )
    pointers_by_key = {pointer_key(href): sha for sha, (href, _) in sources.items()}

    def listed(prefix: str) -> list[str]:
        keys: list[str] = []
        for page in stack.s3.get_paginator("list_objects_v2").paginate(
            Bucket=stack.variants, Prefix=stack.prefix + prefix
        ):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    variants = listed(VARIANTS)
    assert variants
    for key in variants:
        name = key.removeprefix(stack.prefix + VARIANTS)
        match = VARIANT_KEY.match(name)
        assert match is not None, key
        assert match["pipeline"] == pipeline_version(), key
        stored = stack.s3.get_object(Bucket=stack.variants, Key=key)
        body = stored["Body"].read()
        assert match["hash"] in sources, key
        decoded = imagegen.decode(body)  # an error body would not decode
        assert decoded.format == match["fmt"], (key, decoded)
        assert decoded.width == min(int(match["w"]), sources[match["hash"]][1]), (key, decoded)
        assert stored["ContentType"] == f"image/{match['fmt']}", (key, stored["ContentType"])

    pointers = listed(POINTERS)
    for key in pointers:
        name = key.removeprefix(stack.prefix + POINTERS)
        assert name in pointers_by_key, key
        body = stack.s3.get_object(Bucket=stack.variants, Key=key)["Body"].read()
        pointer = decode_pointer(body)
        assert pointer is not None, (key, body[:200])
        assert pointer.source_hash == pointers_by_key[name], key

    kept = listed(SOURCES)
    for key in kept:
        body = stack.s3.get_object(Bucket=stack.variants, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1], key
    REPORT.append(
        f"faults: afterwards the variants bucket holds {len(variants)} variants, each decoding "
        f"to its key's format and width, {len(pointers)} pointers, each naming the bytes its "
        f"URL serves, and {len(kept)} kept sources (the origin's cards and the remote image), "
        "each hashing to its key"
    )
