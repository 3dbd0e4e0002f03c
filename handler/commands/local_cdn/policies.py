"""Cache, origin request and response headers policies: from the template, or AWS's managed ones.

Managed policies are referenced by ID only, so their settings are copied here from AWS's
CloudFront Developer Guide ("Use managed cache policies", "Use managed origin request
policies"); an ID not in these tables is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from handler.commands.local_cdn.intrinsics import Unsupported

# CloudFront headers whose values follow from the viewer connection alone ("Add CloudFront
# request headers"). Device and geolocation headers come from AWS's databases: not emulated.
DERIVED_CLOUDFRONT_HEADERS = frozenset(
    {
        "cloudfront-forwarded-proto",
        "cloudfront-viewer-address",
        "cloudfront-viewer-http-version",
        "cloudfront-viewer-tls",
    }
)
# What Managed-AllViewerAndCloudFrontHeaders-2022-06 and Managed-AllViewerExceptHostHeader add.
CLOUDFRONT_HEADERS_2022_06 = DERIVED_CLOUDFRONT_HEADERS | frozenset(
    {
        "cloudfront-is-android-viewer",
        "cloudfront-is-desktop-viewer",
        "cloudfront-is-ios-viewer",
        "cloudfront-is-mobile-viewer",
        "cloudfront-is-smarttv-viewer",
        "cloudfront-is-tablet-viewer",
        "cloudfront-viewer-asn",
        "cloudfront-viewer-city",
        "cloudfront-viewer-country",
        "cloudfront-viewer-country-name",
        "cloudfront-viewer-country-region",
        "cloudfront-viewer-country-region-name",
        "cloudfront-viewer-latitude",
        "cloudfront-viewer-longitude",
        "cloudfront-viewer-metro-code",
        "cloudfront-viewer-postal-code",
        "cloudfront-viewer-time-zone",
    }
)
ALL_KINDS = frozenset({"all", "allViewer", "allViewerAndWhitelistCloudFront"})


@dataclass(frozen=True)
class Selection:
    """Which query strings, headers or cookies a policy takes (header names in lower case)."""

    behavior: str = "none"
    names: frozenset[str] = frozenset()

    def includes(self, name: str) -> bool:
        if self.behavior == "whitelist":
            return name in self.names
        if self.behavior == "allExcept":
            return name not in self.names
        return self.behavior in ALL_KINDS


NONE = Selection()
ALL = Selection("all")


@dataclass(frozen=True, kw_only=True)
class Forwarded:
    """The query strings, headers and cookies sent to the origin, and the ``CloudFront-*``
    headers CloudFront adds for it: both kinds of policy name them alike."""

    query: Selection = NONE
    headers: Selection = NONE
    cookies: Selection = NONE
    cloudfront_headers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CachePolicy(Forwarded):
    """TTLs and the cache key; everything in the key is also forwarded to the origin."""

    name: str
    min_ttl: int
    default_ttl: int
    max_ttl: int
    gzip: bool = False
    brotli: bool = False


@dataclass(frozen=True)
class OriginRequestPolicy(Forwarded):
    """What is forwarded to the origin beyond the cache key."""

    name: str


@dataclass(frozen=True)
class HeaderRule:
    name: str  # lower case
    value: str
    override: bool


@dataclass(frozen=True)
class ResponseHeadersPolicy:
    """Headers set on (or removed from) every response of the behaviour."""

    name: str
    rules: tuple[HeaderRule, ...] = ()
    remove: frozenset[str] = frozenset()


YEAR = 31_536_000
MANAGED_CACHE_POLICIES = {
    "658327ea-f89d-4fab-a63d-7e88639e58f6": CachePolicy(
        "Managed-CachingOptimized", 1, 86_400, YEAR, gzip=True, brotli=True
    ),
    "b2884449-e4de-46a7-ac36-70bc7f1ddd6d": CachePolicy(
        "Managed-CachingOptimizedForUncompressedObjects", 1, 86_400, YEAR
    ),
    "4135ea2d-6df8-44a3-9df3-4b5a84be39ad": CachePolicy("Managed-CachingDisabled", 0, 0, 0),
}
MANAGED_ORIGIN_REQUEST_POLICIES = {
    "216adef6-5c7f-47e4-b989-5492eafa07d3": OriginRequestPolicy(
        "Managed-AllViewer", query=ALL, headers=Selection("allViewer"), cookies=ALL
    ),
    "b689b0a8-53d0-40ab-baf2-68738e2966ac": OriginRequestPolicy(
        "Managed-AllViewerExceptHostHeader",
        query=ALL,
        headers=Selection("allExcept", frozenset({"host"})),
        cookies=ALL,
        cloudfront_headers=CLOUDFRONT_HEADERS_2022_06,
    ),
    "33f36d7e-f396-46d9-90e0-52428a34d9dc": OriginRequestPolicy(
        "Managed-AllViewerAndCloudFrontHeaders-2022-06",
        query=ALL,
        headers=Selection("allViewer"),
        cookies=ALL,
        cloudfront_headers=CLOUDFRONT_HEADERS_2022_06,
    ),
    "acba4595-bd28-49b8-b9fe-13317c0390fa": OriginRequestPolicy(
        "Managed-UserAgentRefererHeaders",
        headers=Selection("whitelist", frozenset({"user-agent", "referer"})),
    ),
    "59781a5b-3903-41f3-afcb-af62929ccde1": OriginRequestPolicy(
        "Managed-CORS-CustomOrigin", headers=Selection("whitelist", frozenset({"origin"}))
    ),
    "88a5eaf4-2fd4-4709-b370-b4c650ea3fcf": OriginRequestPolicy(
        "Managed-CORS-S3Origin",
        headers=Selection(
            "whitelist",
            frozenset(
                {"origin", "access-control-request-headers", "access-control-request-method"}
            ),
        ),
    ),
}


def _selection(
    config: Mapping[str, Any] | None, behavior_key: str, names_key: str, lower: bool = False
) -> Selection:
    config = config or {}
    names = [str(n) for n in config.get(names_key) or []]
    return Selection(
        str(config.get(behavior_key, "none")), frozenset(n.lower() if lower else n for n in names)
    )


def _split_cloudfront(selection: Selection, where: str) -> tuple[Selection, frozenset[str]]:
    """Viewer headers stay in the selection; CloudFront's own headers are returned apart."""
    own = frozenset(n for n in selection.names if n.startswith("cloudfront-"))
    if selection.behavior == "allExcept" or not own:
        return selection, frozenset()
    not_derived = sorted(own - DERIVED_CLOUDFRONT_HEADERS)
    if not_derived:
        raise Unsupported(
            f"{where}: CloudFront headers {', '.join(not_derived)} come from AWS's device and "
            "geolocation data, which local-cdn cannot reproduce"
        )
    viewer = Selection(selection.behavior, selection.names - own)
    if selection.behavior == "allViewerAndWhitelistCloudFront":
        viewer = Selection("allViewer")
    return viewer, own


def _forwarded(block: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``Forwarded``'s fields, from a policy's ``QueryStringsConfig``, ``HeadersConfig`` and
    ``CookiesConfig``."""
    headers, own = _split_cloudfront(
        _selection(block.get("HeadersConfig"), "HeaderBehavior", "Headers", lower=True), name
    )
    return {
        "query": _selection(block.get("QueryStringsConfig"), "QueryStringBehavior", "QueryStrings"),
        "headers": headers,
        "cookies": _selection(block.get("CookiesConfig"), "CookieBehavior", "Cookies"),
        "cloudfront_headers": own,
    }


def cache_policy(config: Mapping[str, Any], name: str) -> CachePolicy:
    """From ``CachePolicyConfig``."""
    params = config.get("ParametersInCacheKeyAndForwardedToOrigin", {})
    return CachePolicy(
        name,
        int(config.get("MinTTL", 0)),
        int(config.get("DefaultTTL", 86_400)),
        int(config.get("MaxTTL", YEAR)),
        gzip=bool(params.get("EnableAcceptEncodingGzip", False)),
        brotli=bool(params.get("EnableAcceptEncodingBrotli", False)),
        **_forwarded(params, name),
    )


def origin_request_policy(config: Mapping[str, Any], name: str) -> OriginRequestPolicy:
    """From ``OriginRequestPolicyConfig``."""
    return OriginRequestPolicy(name, **_forwarded(config, name))


# The security headers whose value is one field of their config, as written (None: nosniff).
_COPIED_SECURITY_HEADERS = (
    ("ContentSecurityPolicy", "ContentSecurityPolicy", "content-security-policy"),
    ("ContentTypeOptions", None, "x-content-type-options"),
    ("FrameOptions", "FrameOption", "x-frame-options"),
    ("ReferrerPolicy", "ReferrerPolicy", "referrer-policy"),
)


def _security_rules(security: Mapping[str, Any]) -> Iterable[HeaderRule]:
    """The headers of ``SecurityHeadersConfig``, as CloudFront writes them."""
    for config, field, header in _COPIED_SECURITY_HEADERS:
        if config in security:
            block = security[config]
            value = "nosniff" if field is None else str(block[field])
            yield HeaderRule(header, value, bool(block["Override"]))
    if "StrictTransportSecurity" in security:
        hsts = security["StrictTransportSecurity"]
        value = f"max-age={int(hsts['AccessControlMaxAgeSec'])}"
        if hsts.get("IncludeSubdomains"):
            value += "; includeSubDomains"
        if hsts.get("Preload"):
            value += "; preload"
        yield HeaderRule("strict-transport-security", value, bool(hsts["Override"]))
    if "XSSProtection" in security:
        xss = security["XSSProtection"]
        value = "1" if xss["Protection"] else "0"
        if xss["Protection"] and xss.get("ModeBlock"):
            value += "; mode=block"
        if xss["Protection"] and xss.get("ReportUri"):
            value += f"; report={xss['ReportUri']}"
        yield HeaderRule("x-xss-protection", value, bool(xss["Override"]))


def response_headers_policy(config: Mapping[str, Any], name: str) -> ResponseHeadersPolicy:
    """From ``ResponseHeadersPolicyConfig``; CORS and Server-Timing are refused."""
    if config.get("CorsConfig"):
        raise Unsupported(f"{name}: CorsConfig (CORS answered by CloudFront) is not emulated")
    if (config.get("ServerTimingHeadersConfig") or {}).get("Enabled"):
        raise Unsupported(f"{name}: Server-Timing headers carry CloudFront's own timings")
    rules = list(_security_rules(config.get("SecurityHeadersConfig") or {}))
    for item in (config.get("CustomHeadersConfig") or {}).get("Items", []):
        rules.append(HeaderRule(str(item["Header"]).lower(), str(item["Value"]), item["Override"]))
    removed = (config.get("RemoveHeadersConfig") or {}).get("Items", [])
    return ResponseHeadersPolicy(
        name, tuple(rules), frozenset(str(item["Header"]).lower() for item in removed)
    )
