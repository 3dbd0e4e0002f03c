"""``next-image purge``: remove the pointers of some image URLs (``--url``) or all (``--all``), so
the next request re-checks the source, and with ``--distribution-id`` invalidate them at
CloudFront (docs/deploy.md, "next-image purge": paths, waits, permissions, exit codes).

A URL has one pointer whatever the width, quality and format (its key is the URL's hash), so
purging it is one deletion; content-addressed variants and sources stay. Before invalidating it
waits out what processes hold in memory (``settle_seconds``): an edge asking again then reaches a
function that re-checks the source, rather than caching the old image again."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote

import ada_url

from handler.contract.config import load_images_config
from handler.entry.settings import SETTINGS, Settings
from handler.entry.wiring import build_store
from handler.http.replay import REPLAY_SECONDS
from handler.request.keys import pointer_key
from handler.stores.base import Purging

# A filesystem store opened with a smaller bound than its service's would evict down to it.
NO_BOUND = 2**62
# CloudFront allows 15 wildcard paths in progress at once per distribution; past that many URLs,
# one wildcard for every image path does it (and is one path, billed once).
MAX_WILDCARD_PATHS = 15
# What encodeURIComponent (Next's default loader) leaves as it is, besides letters and digits.
_URI_COMPONENT_SAFE = "-_.!~*'()"


class UsageError(Exception):
    """Nothing could be purged as asked."""


@dataclass(frozen=True)
class Plan:
    store: str  # a name in handler.stores.registry
    urls: tuple[str, ...]  # as given; empty for --all
    keys: tuple[str, ...]  # their pointer keys
    paths: tuple[str, ...]  # the CloudFront invalidation paths
    distribution_id: str | None


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(**{s.name: getattr(args, s.name, None) for s in SETTINGS})
        plan = make_plan(args, settings)
        store = build_store(replace(settings, cache_max_bytes=NO_BOUND, hot_cache_bytes=0))
        if not isinstance(store, Purging):
            raise UsageError(f"the {settings.store} store cannot remove pointers")
        try:
            store.ping()
        except Exception as exc:
            raise UsageError(f"the {settings.store} store does not answer: {exc!r}") from exc
    except (UsageError, ValueError, OSError) as exc:
        print(f"next-image purge: {exc}", file=sys.stderr)
        return 2
    what = "every pointer" if not plan.urls else f"the pointers of {_count(plan.urls, 'URL')}"
    print(f"purge: deleting {what} from the {plan.store} store", file=sys.stderr)
    started = time.perf_counter()
    try:
        removed = store.delete_all_pointers() if not plan.urls else store.delete_pointers(plan.keys)
    except KeyboardInterrupt:
        print("purge: interrupted; some pointers may be left", file=sys.stderr)
        return 130
    except Exception as exc:  # botocore's, redis's, OSError: denied, unreachable
        print(f"purge: failed: the store did not delete the pointers: {exc!r}", file=sys.stderr)
        return 1
    settle = settle_seconds(plan.store)
    print(
        f"purge: pointers deleted; waiting {settle:g} s for the processes reading the store "
        "to forget them",
        file=sys.stderr,
    )
    try:
        wait(settle)
        invalidation = invalidate(plan) if plan.distribution_id else None
    except KeyboardInterrupt:
        print("purge: interrupted before the CloudFront invalidation", file=sys.stderr)
        return 130
    except Exception as exc:  # botocore's: denied, no such distribution, too many in progress
        print(f"purge: failed: CloudFront invalidation: {exc!r}", file=sys.stderr)
        invalidation = ""
    print(summary(plan, removed, time.perf_counter() - started, invalidation))
    return 1 if invalidation == "" else 0


def make_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    if settings.store == "memory":
        raise UsageError("the memory store lives in the serving process: nothing to purge here")
    config = load_images_config(settings.images_config)
    image_path = config.base_path + "/_next/image"
    urls = tuple(dict.fromkeys(args.urls or ()))
    keys = tuple(pointer_key(href(url)) for url in urls)
    if not urls or len(urls) > MAX_WILDCARD_PATHS:
        paths: tuple[str, ...] = (image_path + "*",)
    else:
        paths = tuple(invalidation_path(image_path, url) for url in urls)
    return Plan(settings.store, urls, keys, paths, args.distribution_id)


def href(url: str) -> str:
    """The URL as the optimizer keys it: a relative one as it is, an absolute one normalised as
    by WHATWG (``handler/contract/validate.py``)."""
    if url.startswith("/") and not url.startswith("//"):
        return url
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        raise UsageError(f"not a URL: {url!r} (a relative one starts with /)") from None
    if parsed.protocol not in ("http:", "https:"):
        raise UsageError(f"not an http(s) URL: {url!r}")
    return str(parsed.href)


def invalidation_path(image_path: str, url: str) -> str:
    """``/_next/image?url=<encodeURIComponent(url)>*``: the URL's every cached answer (each
    width and quality follows ``url`` in the query Next's loader writes). A ``*`` in the URL
    would be a wildcard before the end, which CloudFront refuses: the path stops there."""
    encoded = quote(url, safe=_URI_COMPONENT_SAFE)
    return f"{image_path}?url={encoded.split('*', 1)[0]}*"


def settle_seconds(store: str) -> float:
    """How long a process reading this store may still use a pointer it holds in memory."""
    from handler.stores.s3 import POINTER_MEMORY_SECONDS

    # The filesystem store's hot tier holds none: it checks each pointer's file at every use.
    held = {"s3": POINTER_MEMORY_SECONDS}.get(store, 0.0)
    return held + REPLAY_SECONDS


def wait(seconds: float) -> None:
    """The wait for memories to lapse: a known bound, there is nothing to ask."""
    time.sleep(seconds)


def invalidate(plan: Plan) -> str:
    """Create the invalidation; its id."""
    import boto3

    assert plan.distribution_id is not None
    client = boto3.client("cloudfront")
    answer = client.create_invalidation(
        DistributionId=plan.distribution_id,
        InvalidationBatch={
            "Paths": {"Quantity": len(plan.paths), "Items": list(plan.paths)},
            "CallerReference": f"next-image-purge-{time.time_ns()}",
        },
    )
    return str(answer["Invalidation"]["Id"])


def summary(plan: Plan, removed: int | None, seconds: float, invalidation: str | None) -> str:
    if not plan.urls:
        text = f"purge: {_count_of(removed, 'pointer')} deleted from the {plan.store} store"
    else:
        text = f"purge: {_count(plan.urls, 'URL')}: "
        if removed is None:
            text += f"{_count(plan.keys, 'pointer')} deleted (the {plan.store} store does not say"
            text += " which existed)"
        else:
            text += f"{_count_of(removed, 'pointer')} deleted from the {plan.store} store"
            if removed < len(plan.keys):
                text += f" ({len(plan.keys) - removed} not stored)"
    text += f" in {seconds:.1f} s"
    if invalidation:
        text += (
            f"; CloudFront invalidation {invalidation} of {_count(plan.paths, 'path')} on "
            f"{plan.distribution_id}: {', '.join(plan.paths)}"
        )
    return text


def _count(items: Sequence[object], noun: str) -> str:
    return _count_of(len(items), noun)


def _count_of(number: int | None, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
