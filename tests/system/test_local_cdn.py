"""``next-image local-cdn`` piece by piece: path patterns, cache keys, TTLs, methods, refusals,
the Function URL's payload limit and the CloudFront Function under Node.js.

Templates are written by hand, as small as each rule needs; origins are fakes that record what
CloudFront would have sent them. The whole command runs in ``test_local_cdn_stack.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.commands.local_cdn.cache import (
    EdgeCache,
    cache_key,
    normalized_accept_encoding,
    response_ttl,
)
from handler.commands.local_cdn.edge import Edge
from handler.commands.local_cdn.functions import NodeFunctions, apply_result, viewer_request_event
from handler.commands.local_cdn.http import Response, ViewerRequest, parse_query
from handler.commands.local_cdn.intrinsics import Unsupported
from handler.commands.local_cdn.lambda_url import MAX_RESPONSE_BYTES, LambdaUrlFetcher
from handler.commands.local_cdn.origins import OriginRequest
from handler.commands.local_cdn.paths import matches, select
from handler.commands.local_cdn.policies import Selection
from handler.commands.local_cdn.template import (
    CachePolicy,
    Distribution,
    LambdaUrlOrigin,
    ViewerFunction,
    read_template,
)
from kit.paths import REPO
from kit.virtual_time import VirtualTimeLoop, all_blocked
from next_image_cdk.bundled_config import CLOUDFRONT_DIR, render_accept_function

CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"]


# --- hand-written templates ------------------------------------------------------------------


def template(
    behaviours: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
    default: dict[str, Any] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """One distribution: the app's custom origin behind the default behaviour, plus extras."""
    distribution_config = {
        "Origins": [
            {
                "Id": "app",
                "DomainName": "app.example.com",
                "CustomOriginConfig": {"OriginProtocolPolicy": "https-only"},
            }
        ],
        "DefaultCacheBehavior": {
            "TargetOriginId": "app",
            "ViewerProtocolPolicy": "allow-all",
            "CachePolicyId": CACHING_DISABLED,
            "AllowedMethods": ALL_METHODS,
            **(default or {}),
        },
        "CacheBehaviors": behaviours or [],
        "Enabled": True,
        **config,
    }
    return {
        "Resources": {
            "Dist": {
                "Type": "AWS::CloudFront::Distribution",
                "Properties": {"DistributionConfig": distribution_config},
            },
            **(resources or {}),
        }
    }


def behaviour(pattern: str, **settings: Any) -> dict[str, Any]:
    return {
        "PathPattern": pattern,
        "TargetOriginId": "app",
        "ViewerProtocolPolicy": "allow-all",
        "CachePolicyId": {"Ref": "Policy"},
        **settings,
    }


def cache_policy_resource(
    query: list[str] | None = None,
    headers: list[str] | None = None,
    ttls: tuple[int, int, int] = (0, 86_400, 31_536_000),
) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudFront::CachePolicy",
        "Properties": {
            "CachePolicyConfig": {
                "MinTTL": ttls[0],
                "DefaultTTL": ttls[1],
                "MaxTTL": ttls[2],
                "ParametersInCacheKeyAndForwardedToOrigin": {
                    "QueryStringsConfig": {
                        "QueryStringBehavior": "whitelist" if query else "none",
                        **({"QueryStrings": query} if query else {}),
                    },
                    "HeadersConfig": {
                        "HeaderBehavior": "whitelist" if headers else "none",
                        **({"Headers": headers} if headers else {}),
                    },
                    "CookiesConfig": {"CookieBehavior": "none"},
                    "EnableAcceptEncodingGzip": False,
                    "EnableAcceptEncodingBrotli": False,
                },
            }
        },
    }


def accept_function_resource(formats: tuple[str, ...] = ("image/avif", "image/webp")) -> dict:
    return {
        "Type": "AWS::CloudFront::Function",
        "Properties": {
            "FunctionCode": render_accept_function(formats),
            "FunctionConfig": {"Runtime": "cloudfront-js-2.0", "Comment": "x"},
            "Name": "Accept",
            "AutoPublish": True,
        },
    }


def load(tmp_path: Path, raw: dict[str, Any]) -> Distribution:
    path = tmp_path / "Test.template.json"
    path.write_text(json.dumps(raw))
    return read_template(path)


# --- fakes -----------------------------------------------------------------------------------


class FakeOrigin:
    """Answers with ``respond(request)`` and remembers every origin request."""

    host = "origin.test"

    def __init__(self, respond: Callable[[OriginRequest], Response]) -> None:
        self.respond = respond
        self.requests: list[OriginRequest] = []

    async def fetch(self, request: OriginRequest) -> Response:
        self.requests.append(request)
        return self.respond(request)

    async def aclose(self) -> None:
        pass


def ok(body: bytes = b"hello", **headers: str) -> Callable[[OriginRequest], Response]:
    pairs = [(k.replace("_", "-").lower(), v) for k, v in headers.items()]
    pairs.append(("content-length", str(len(body))))
    return lambda _request: Response(200, pairs, body)


def get(
    edge: Edge, target: str, method: str = "GET", **headers: str
) -> tuple[Response, dict[str, str]]:
    path, _, query = target.partition("?")
    request = ViewerRequest(
        method,
        path,
        parse_query(query),
        [(k.replace("_", "-").lower(), v) for k, v in headers.items()],
    )
    response = asyncio.run(edge.handle(request))
    return response, dict(response.headers)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def functions() -> Iterator[Callable[[list[ViewerFunction]], NodeFunctions]]:
    """Node children started by a test, all stopped when it ends."""
    started: list[NodeFunctions] = []

    def start(defined: list[ViewerFunction]) -> NodeFunctions:
        runner = NodeFunctions(defined)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.close()


# --- path patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/_next/image", "/_next/image", True),
        ("/_next/image", "/_next/image-variants/x", False),  # the whole path, not a prefix
        ("/_next/image", "/_next/IMAGE", False),  # case sensitive
        ("_next/image", "/_next/image", True),  # the leading / is optional
        ("/images/*.jpg", "/images/a/b/c.jpg", True),  # * crosses /
        ("/images/*.jpg", "/images/a.jpeg", False),
        ("*.png", "/deep/down/a.png", True),
        ("/a?c", "/abc", True),  # ? is one character
        ("/a?c", "/ac", False),
        ("/a?c", "/abbc", False),
        ("/a.c", "/abc", False),  # other characters are literal
        ("/_next/image-variants/*", "/_next/image-variants/", True),
        ("*", "/anything/at/all", True),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_first_matching_behaviour_wins_and_the_default_comes_last(tmp_path: Path) -> None:
    distribution = load(
        tmp_path,
        template(
            [behaviour("/static/*.css"), behaviour("/static/*"), behaviour("*.css")],
            {"Policy": cache_policy_resource()},
        ),
    )
    assert [b.path_pattern for b in distribution.behaviours] == [
        "/static/*.css",
        "/static/*",
        "*.css",
        "*",
    ]
    pick = lambda path: select(distribution.behaviours, path).path_pattern  # noqa: E731
    assert pick("/static/site.css") == "/static/*.css"
    assert pick("/static/logo.png") == "/static/*"
    assert pick("/other/site.css") == "*.css"
    assert pick("/other/site.CSS") == "*"


# --- cache key -------------------------------------------------------------------------------


def test_cache_key_holds_only_the_listed_query_strings_and_headers(tmp_path: Path) -> None:
    distribution = load(
        tmp_path,
        template(
            [behaviour("/img", AllowedMethods=["GET", "HEAD"])],
            {"Policy": cache_policy_resource(query=["w", "url"], headers=["Accept"])},
        ),
    )
    origin = FakeOrigin(ok(cache_control="max-age=60"))
    edge = Edge(distribution, {"app": origin})
    _, headers = get(edge, "/img?url=/a.png&w=640", accept="image/avif")
    assert headers["x-cache"] == "Miss from cloudfront"
    # Other parameters, their order, other headers: the same entry.
    _, headers = get(edge, "/img?w=640&utm=x&url=/a.png", accept="image/avif", user_agent="b")
    assert headers["x-cache"] == "Hit from cloudfront"
    # A listed value that differs: another entry.
    for target, accept in (
        ("/img?url=/a.png&w=750", "image/avif"),
        ("/img?url=/a.png&w=640", "*/*"),
    ):
        _, headers = get(edge, target, accept=accept)
        assert headers["x-cache"] == "Miss from cloudfront", (target, accept)
    # Only the policy's values reach the origin (header names lower-cased, as received).
    sent = origin.requests[0]
    assert sent.query == "url=/a.png&w=640"
    forwarded = dict(sent.headers)
    assert forwarded["accept"] == "image/avif"
    assert forwarded["user-agent"] == "Amazon CloudFront"
    assert "utm" not in origin.requests[1].query
    assert len(origin.requests) == 3


def test_accept_normalisations_decide_the_entries(
    tmp_path: Path, functions: Callable[[list[ViewerFunction]], NodeFunctions]
) -> None:
    """Through the real Accept function: browsers that negotiate the same format share an entry,
    different formats do not."""
    distribution = load(
        tmp_path,
        template(
            [
                behaviour(
                    "/_next/image",
                    FunctionAssociations=[
                        {
                            "EventType": "viewer-request",
                            "FunctionARN": {"Fn::GetAtt": ["Accept", "FunctionARN"]},
                        }
                    ],
                )
            ],
            {
                "Policy": cache_policy_resource(query=["url", "w", "q"], headers=["Accept"]),
                "Accept": accept_function_resource(),
            },
        ),
    )
    origin = FakeOrigin(ok(cache_control="max-age=60"))
    edge = Edge(distribution, {"app": origin}, functions(list(distribution.functions)))
    target = "/_next/image?url=/a.png&w=640&q=75"
    outcomes = [
        get(edge, target, accept=accept)[1]["x-cache"]
        for accept in (
            "image/avif,image/webp,*/*",  # Chrome
            "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
            "image/webp,*/*",  # a browser without AVIF
            "image/webp,image/png,*/*;q=0.5",
            "text/html",
        )
    ]
    assert outcomes == [
        "Miss from cloudfront",
        "Hit from cloudfront",
        "Miss from cloudfront",
        "Hit from cloudfront",
        "Miss from cloudfront",
    ]
    assert [dict(r.headers)["accept"] for r in origin.requests] == [
        "image/avif",
        "image/webp",
        "*/*",
    ]


def test_compressed_objects_setting_normalises_accept_encoding() -> None:
    both = CachePolicy("p", 0, 0, 0, gzip=True, brotli=True)
    assert normalized_accept_encoding(both, "gzip, deflate, br, zstd") == "br,gzip"
    assert normalized_accept_encoding(both, "deflate") == "identity"
    gzip_only = CachePolicy("p", 0, 0, 0, gzip=True)
    assert normalized_accept_encoding(gzip_only, "br, gzip") == "gzip"
    assert normalized_accept_encoding(CachePolicy("p", 0, 0, 0), "gzip") is None
    request = ViewerRequest("GET", "/a", headers=[("accept-encoding", "gzip, br")])
    other = ViewerRequest("GET", "/a", headers=[("accept-encoding", "br;q=1, gzip")])
    assert cache_key(both, request, {}, "identity") == cache_key(both, other, {}, "identity")


# --- TTLs ------------------------------------------------------------------------------------


def ttl(
    headers: dict[str, str], min_ttl: int = 0, default: int = 86_400, max_ttl: int = 31_536_000
) -> int:
    policy = CachePolicy("p", min_ttl, default, max_ttl)
    response = Response(200, list(headers.items()))
    return response_ttl(response, policy, {}, now=1_800_000_000.0)


def test_ttl_rules() -> None:
    assert ttl({}) == 86_400  # no header: the default TTL
    assert ttl({}, min_ttl=100_000) == 100_000  # ... or the minimum, if greater
    assert ttl({"cache-control": "max-age=600"}) == 600
    assert ttl({"cache-control": "max-age=600"}, max_ttl=60) == 60  # capped by the maximum
    assert ttl({"cache-control": "max-age=5"}, min_ttl=30) == 30  # raised to the minimum
    assert ttl({"cache-control": "public, max-age=600, s-maxage=20"}) == 20  # s-maxage first
    assert ttl({"cache-control": "no-store"}) == 0
    assert ttl({"cache-control": "private, max-age=600"}) == 0
    assert ttl({"cache-control": "no-cache"}, min_ttl=30) == 30  # the minimum wins over it
    date = "Fri, 15 Jan 2027 08:00:00 GMT"
    later = "Fri, 15 Jan 2027 08:05:00 GMT"
    assert ttl({"date": date, "expires": later}) == 300
    assert ttl({"date": date, "expires": later, "cache-control": "max-age=7"}) == 7
    assert ttl({"expires": "0"}) == 0  # an invalid date is in the past
    assert ttl({"vary": "*", "cache-control": "max-age=60"}) == 0
    assert ttl({}, min_ttl=0, default=0, max_ttl=0) == 0  # Managed-CachingDisabled


def test_error_ttl_rules() -> None:
    policy = CachePolicy("p", 0, 86_400, 31_536_000)

    def error(status: int, minimums: dict[int, int] | None = None, **headers: str) -> int:
        response = Response(status, [(k.replace("_", "-"), v) for k, v in headers.items()])
        return response_ttl(response, policy, minimums or {}, now=1_800_000_000.0)

    assert error(404) == 10  # the error caching minimum TTL
    assert error(502, cache_control="no-store") == 10  # ignored for a 502
    assert error(404, cache_control="no-store") == 0  # respected for a 404
    assert error(503, cache_control="max-age=60") == 60
    assert error(503, cache_control="max-age=5") == 10
    assert error(503, {503: 0}) == 0  # a CustomErrorResponses ErrorCachingMinTTL
    assert error(403) == 0  # only with max-age
    assert error(403, cache_control="max-age=30") == 30
    assert error(401, cache_control="max-age=30") == 0  # never cached
    assert ttl({"cache-control": "max-age=60"}, min_ttl=0) == 60
    assert response_ttl(Response(307), policy, {}, 0.0) == 0  # 307 needs Cache-Control


def test_edge_honours_the_ttl_and_revalidates_with_the_stored_etag(tmp_path: Path) -> None:
    distribution = load(tmp_path, template([behaviour("/a")], {"Policy": cache_policy_resource()}))
    answers = iter(
        [
            Response(200, [("etag", '"v1"'), ("cache-control", "max-age=60")], b"one"),
            Response(304, [("etag", '"v1"'), ("cache-control", "max-age=120")]),
        ]
    )
    origin = FakeOrigin(lambda _request: next(answers))
    clock = Clock()
    edge = Edge(distribution, {"app": origin}, clock=clock)
    assert get(edge, "/a")[1]["x-cache"] == "Miss from cloudfront"
    clock.now += 59
    response, headers = get(edge, "/a")
    assert (headers["x-cache"], headers["age"]) == ("Hit from cloudfront", "59")
    clock.now += 2
    response, headers = get(edge, "/a")
    assert headers["x-cache"] == "RefreshHit from cloudfront"
    assert response.body == b"one"
    assert dict(origin.requests[1].headers)["if-none-match"] == '"v1"'
    clock.now += 100
    assert get(edge, "/a")[1]["x-cache"] == "Hit from cloudfront"  # the 304's max-age=120
    # The viewer's own conditional request is answered at the edge.
    response, headers = get(edge, "/a", if_none_match='W/"v1"')
    assert (response.status, response.body) == (304, b"")
    assert len(origin.requests) == 2


@pytest.mark.parametrize(
    ("cache_control", "minimums", "held"),
    [
        (None, {}, 10),  # no header: CloudFront's default error caching minimum TTL
        ("no-store", {}, 10),  # ignored for a 503 (respected only for 404, 410, 414, 501)
        ("public, max-age=1", {}, 10),  # the larger of max-age and the minimum
        ("max-age=30", {}, 30),
        (None, {503: 1}, 1),  # the template's ErrorCachingMinTTL for 503
        ("no-store", {503: 1}, 1),  # the function's 503 on the construct's distribution
        ("no-store", {503: 0}, 0),  # a minimum of 0: not kept at all
        ("max-age=1", {503: 0}, 1),
        ("no-store", {502: 1, 504: 0}, 10),  # per status: other codes' minimums do not apply
    ],
)
def test_a_503_is_kept_as_cloudfront_keeps_errors(
    tmp_path: Path, cache_control: str | None, minimums: dict[int, int], held: int
) -> None:
    """ "Control how long CloudFront caches errors": an error is kept for the distribution's
    error caching minimum TTL of its status (10 s unless CustomErrorResponses say otherwise),
    or for its max-age if that is longer; no-store only counts for 404, 410, 414 and 501."""
    responses = [{"ErrorCode": code, "ErrorCachingMinTTL": ttl} for code, ttl in minimums.items()]
    config = {"CustomErrorResponses": responses} if responses else {}
    raw = template(default={"CachePolicyId": CACHING_OPTIMIZED}, **config)
    distribution = load(tmp_path, raw)
    headers = [("content-length", "4")]
    headers += [("cache-control", cache_control)] if cache_control else []
    answers = iter(
        [Response(503, headers, b"busy"), Response(200, [("content-length", "2")], b"ok")]
    )
    origin = FakeOrigin(lambda _request: next(answers))
    clock = Clock()
    edge = Edge(distribution, {"app": origin}, clock=clock)
    started = clock.now
    response, first = get(edge, "/_next/image?url=/a.png&w=640&q=75")
    assert (response.status, first["x-cache"]) == (503, "Error from cloudfront")
    if held:
        clock.now = started + held - 0.01  # an injected clock: no waiting
        response, again = get(edge, "/_next/image?url=/a.png&w=640&q=75")
        assert (response.status, again["x-cache"]) == (503, "Error from cloudfront")
        assert len(origin.requests) == 1  # from the edge cache
    clock.now = started + held
    response, after = get(edge, "/_next/image?url=/a.png&w=640&q=75")
    assert (response.status, after["x-cache"]) == (200, "Miss from cloudfront")
    assert len(origin.requests) == 2  # forgotten: asked the origin again


# --- methods ---------------------------------------------------------------------------------


def test_disallowed_methods_get_cloudfronts_403(tmp_path: Path) -> None:
    distribution = load(
        tmp_path,
        template(
            [behaviour("/img", AllowedMethods=["GET", "HEAD"], CachedMethods=["GET", "HEAD"])],
            {"Policy": cache_policy_resource()},
        ),
    )
    origin = FakeOrigin(ok())
    edge = Edge(distribution, {"app": origin})
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        response, headers = get(edge, "/img", method=method)
        assert response.status == 403, method
        assert headers["x-cache"] == "Error from cloudfront"
        assert headers["server"] == "CloudFront"
        assert b"not configured to allow the HTTP request method" in response.body
    assert origin.requests == []
    # The default behaviour allows every method, and caches none of the unsafe ones.
    for _ in range(2):
        response, headers = get(edge, "/form", method="POST")
        assert (response.status, headers["x-cache"]) == (200, "Miss from cloudfront")
    assert [r.method for r in origin.requests] == ["POST", "POST"]
    # HEAD is answered from the GET's entry.
    get(edge, "/img")
    response, headers = get(edge, "/img", method="HEAD")
    assert (response.body, headers["x-cache"], headers["content-length"]) == (
        b"",
        "Hit from cloudfront",
        "5",
    )


# --- refusals --------------------------------------------------------------------------------


def function(event_type: str, code: str = "function handler(e) { return e.request; }") -> dict:
    return {
        "FunctionAssociations": [
            {"EventType": event_type, "FunctionARN": {"Fn::GetAtt": ["Fn", "FunctionARN"]}}
        ],
    }


def legacy_cache_settings() -> dict[str, Any]:
    raw = template(default={"ForwardedValues": {"QueryString": True}, "MinTTL": 0})
    del raw["Resources"]["Dist"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"][
        "CachePolicyId"
    ]
    return raw


def fn_resource(code: str = "function handler(e) { return e.request; }") -> dict[str, Any]:
    return {
        "Fn": {
            "Type": "AWS::CloudFront::Function",
            "Properties": {
                "FunctionCode": code,
                "FunctionConfig": {"Runtime": "cloudfront-js-2.0", "Comment": "x"},
                "Name": "Fn",
            },
        }
    }


def with_behaviour(pattern: str, **settings: Any) -> dict[str, Any]:
    return template(
        [behaviour(pattern, **settings)], {"Policy": cache_policy_resource(), **fn_resource()}
    )


def using_cloudfront_module() -> dict[str, Any]:
    code = "import cf from 'cloudfront';\nfunction handler(e) { return e.request; }"
    return template(
        [behaviour("/kvs", **function("viewer-request"))],
        {"Policy": cache_policy_resource(), **fn_resource(code)},
    )


EDGE_LAMBDA = [{"EventType": "origin-request", "LambdaFunctionARN": "arn:x"}]
GEO = {"GeoRestriction": {"RestrictionType": "whitelist", "Locations": ["FR"]}}
REFUSED = {
    "lambda-edge": (
        with_behaviour("/edge", LambdaFunctionAssociations=EDGE_LAMBDA),
        "'/edge': Lambda@Edge",
    ),
    "viewer-response": (
        with_behaviour("/r", **function("viewer-response")),
        "'/r': viewer-response CloudFront Functions",
    ),
    "signed-urls": (with_behaviour("/s", TrustedKeyGroups=["kg"]), "'/s': signed URLs"),
    "field-level-encryption": (
        with_behaviour("/f", FieldLevelEncryptionId="fle"),
        "'/f': field-level encryption",
    ),
    "origin-groups": (
        template(OriginGroups={"Quantity": 1, "Items": [{"Id": "group"}]}),
        "OriginGroups: origin failover",
    ),
    "geo": (template(Restrictions=GEO), "Restrictions: geo restriction"),
    "waf": (template(WebACLId="arn:waf"), "WebACLId: AWS WAF"),
    "error-code-without-page": (
        template(CustomErrorResponses=[{"ErrorCode": 404, "ResponseCode": 200}]),
        "CustomErrorResponses[404]: ResponseCode without a ResponsePagePath",
    ),
    "unknown-managed-policy": (
        template(default={"CachePolicyId": "00000000-0000-0000-0000-000000000000"}),
        "neither a AWS::CloudFront::CachePolicy in the template nor a managed policy",
    ),
    "legacy-cache": (legacy_cache_settings(), "legacy cache settings"),
    "unknown-key": (template(HttpsMagic=True), "HttpsMagic not understood"),
    "cloudfront-module": (using_cloudfront_module(), "'cloudfront' helper module"),
}


@pytest.mark.parametrize(("raw", "named"), list(REFUSED.values()), ids=list(REFUSED))
def test_refuses_what_it_cannot_emulate(tmp_path: Path, raw: dict[str, Any], named: str) -> None:
    with pytest.raises(Unsupported, match=re.escape(named)):
        load(tmp_path, raw)


def test_a_template_without_refusals_loads(tmp_path: Path) -> None:
    distribution = load(
        tmp_path,
        template(
            [behaviour("/f", **function("viewer-request"))],
            {"Policy": cache_policy_resource(), **fn_resource()},
        ),
    )
    assert [f.name for f in distribution.functions] == ["Fn"]


# --- the Function URL origin -----------------------------------------------------------------


def lambda_origin() -> LambdaUrlOrigin:
    from handler.commands.local_cdn.template import LambdaFunction

    function = LambdaFunction("Fn", "stack-Fn", "arn:aws:lambda:us-east-1:1:function:f", 5, 512, {})
    return LambdaUrlOrigin("fn", "abc.lambda-url.us-east-1.on.aws", function, True, True, 30)


def test_a_lambda_response_over_6_mb_is_a_502() -> None:
    import base64

    def handler_of(size: int) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
            body = base64.b64encode(b"\0" * size).decode()
            return {
                "statusCode": 200,
                "headers": {"content-type": "image/png", "cache-control": "max-age=60"},
                "body": body,
                "isBase64Encoded": True,
            }

        return lambda: handle  # type: ignore[return-value]

    origin = lambda_origin()
    distribution = Distribution("Dist", (_lambda_behaviour(origin),), ())
    inline = 4_400_000  # what the optimizer still answers inline: base64 keeps it under 6 MB
    for size, status in ((inline, 200), (MAX_RESPONSE_BYTES * 3 // 4 + 100, 502)):
        fetcher = LambdaUrlFetcher(origin, handler_of(size))
        edge = Edge(distribution, {"fn": fetcher})
        response, headers = get(edge, "/big")
        assert response.status == status, size
        if status == 200:
            assert len(response.body) == size
        else:
            assert headers["x-cache"] == "Error from cloudfront"
            assert json.loads(response.body) == {"Message": "Internal Server Error"}
        asyncio.run(fetcher.aclose())


def test_function_url_event_is_payload_2() -> None:
    seen: list[dict[str, Any]] = []

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        assert context.get_remaining_time_in_millis() > 4000
        return {"statusCode": 204, "headers": {}, "cookies": ["a=1; Path=/"], "body": ""}

    origin = lambda_origin()
    fetcher = LambdaUrlFetcher(origin, lambda: handle)
    request = OriginRequest(
        "GET",
        "/_next/image",
        "url=%2Fa.png&w=640&w=750",
        [("host", origin.host), ("accept", "image/avif"), ("cookie", "x=1; y=2")],
    )
    response = asyncio.run(fetcher.fetch(request))
    asyncio.run(fetcher.aclose())
    event = seen[0]
    assert event["version"] == "2.0"
    assert event["rawQueryString"] == "url=%2Fa.png&w=640&w=750"
    assert event["queryStringParameters"] == {"url": "/a.png", "w": "640,750"}
    assert event["cookies"] == ["x=1", "y=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["accept"] == "image/avif"
    assert event["requestContext"]["authorizer"]["iam"]["userId"] == "cloudfront.amazonaws.com"
    assert response.status == 204
    assert ("set-cookie", "a=1; Path=/") in response.headers
    assert response.header("content-type") == "application/json"  # what a Function URL adds


def _lambda_behaviour(origin: LambdaUrlOrigin) -> Any:
    from handler.commands.local_cdn.template import Behaviour

    policy = CachePolicy("p", 0, 86_400, 31_536_000, query=Selection("all"))
    return Behaviour(
        "*",
        origin,
        frozenset({"GET", "HEAD"}),
        frozenset({"GET", "HEAD"}),
        policy,
        None,
        None,
        None,
        False,
    )


# --- the CloudFront Function under Node.js ---------------------------------------------------


def test_normalize_accept_runs_under_node(
    functions: Callable[[list[ViewerFunction]], NodeFunctions],
) -> None:
    """The template's function code, in one Node child, on the infra tests' Accept table."""
    cases = json.loads((CLOUDFRONT_DIR / "accept_cases.json").read_text())["cases"]
    formats = ["image/avif", "image/webp"]
    code = render_accept_function(tuple(formats))
    runner = functions([ViewerFunction("NormalizeAccept", code)])
    pid = runner._process.pid
    checked = 0
    for case in (c for c in cases if c["formats"] == formats):
        headers = [] if case["accept"] is None else [("accept", case["accept"])]
        request = ViewerRequest("GET", "/_next/image", parse_query("url=/a.png&w=640"), headers)
        event = viewer_request_event(request, domain="d", distribution_id="E", request_id="r")
        result = apply_result(runner.run("NormalizeAccept", event), request, event)
        assert isinstance(result, ViewerRequest)
        want = case["accept"] if case["expected"] is None else case["expected"]
        assert result.header("accept") == want, case
        assert result.query == request.query
        checked += 1
    assert checked > 10
    request = ViewerRequest(
        "GET", "/_next/image", headers=[("accept", "image/avif,image/webp,*/*")]
    )
    event = viewer_request_event(request, domain="d", distribution_id="E", request_id="r")
    assert runner.run("NormalizeAccept", event)["headers"]["accept"] == {"value": "image/avif"}
    assert runner._process.pid == pid and runner._process.poll() is None  # one long-lived child
    runner.close()
    assert runner._process.poll() is not None


def test_function_results_and_errors(
    tmp_path: Path, functions: Callable[[list[ViewerFunction]], NodeFunctions]
) -> None:
    code = """
    function handler(event) {
      var r = event.request;
      if (r.uri === '/redirect') {
        return { statusCode: 302, statusDescription: 'Found',
                 headers: { location: { value: 'https://example.com/' } } };
      }
      if (r.uri === '/throw') { throw new Error('boom'); }
      r.uri = '/rewritten';
      r.headers['x-added'] = { value: 'yes' };
      r.querystring.tag = { value: 'a', multiValue: [{ value: 'a' }, { value: 'b' }] };
      return r;
    }
    """
    raw = template(
        [behaviour("/*", **function("viewer-request"))],
        {"Policy": cache_policy_resource(headers=["X-Added"], query=["tag"]), **fn_resource(code)},
    )
    distribution = load(tmp_path, raw)
    origin = FakeOrigin(ok())
    edge = Edge(distribution, {"app": origin}, functions(list(distribution.functions)))
    response, headers = get(edge, "/redirect")
    assert (response.status, headers["location"]) == (302, "https://example.com/")
    assert headers["x-cache"] == "FunctionGeneratedResponse from cloudfront"
    response, headers = get(edge, "/throw")
    assert (response.status, headers["x-cache"]) == (503, "FunctionExecutionError from cloudfront")
    response, _ = get(edge, "/page?tag=z")
    assert response.status == 200
    sent = origin.requests[-1]
    assert sent.path == "/rewritten"
    assert sent.query == "tag=a&tag=b"
    assert dict(sent.headers)["x-added"] == "yes"


# --- what the Lambda function ships ----------------------------------------------------------


def test_the_lambda_handler_does_not_import_local_cdn() -> None:
    probe = (
        "import sys, handler.entry.lambda_handler\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('devtools', 'moto') "
        "or m.startswith('handler.commands')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "[]"


def test_edge_cache_evicts_least_recently_used() -> None:
    cache = EdgeCache(max_bytes=10)
    for key in ("a", "b", "c"):
        cache.put((key,), Response(200, body=b"1234"), 60)
    assert cache.get(("a",)) is None
    assert cache.get(("c",)) is not None and len(cache) == 2


def test_edge_compression_range_and_cookies(tmp_path: Path) -> None:
    import gzip

    import brotli

    raw = template(default={"CachePolicyId": CACHING_OPTIMIZED, "Compress": True})
    distribution = load(tmp_path, raw)
    page = b"<p>" + b"hello " * 400 + b"</p>"
    origin = FakeOrigin(
        ok(page, content_type="text/html; charset=utf-8", etag='"v1"', set_cookie="s=1")
    )
    edge = Edge(distribution, {"app": origin})
    response, headers = get(edge, "/", accept_encoding="gzip, deflate, br")
    assert headers["content-encoding"] == "br" and headers["etag"] == 'W/"v1"'
    assert brotli.decompress(response.body) == page
    assert "set-cookie" not in headers  # the cache policy forwards no cookies
    assert dict(origin.requests[0].headers)["accept-encoding"] == "br,gzip"
    response, headers = get(edge, "/", accept_encoding="gzip")
    assert headers["x-cache"] == "Miss from cloudfront"  # another coding, another entry
    assert gzip.decompress(response.body) == page
    response, headers = get(edge, "/")
    assert "content-encoding" not in headers and response.body == page
    response, headers = get(edge, "/", range="bytes=3-7")
    assert (response.status, response.body, headers["content-range"]) == (
        206,
        b"hello",
        f"bytes 3-7/{len(page)}",
    )
    assert get(edge, "/", range="bytes=99999-")[0].status == 416
    assert len(origin.requests) == 3


def test_identical_misses_wait_for_the_first(tmp_path: Path) -> None:
    distribution = load(tmp_path, template(default={"CachePolicyId": CACHING_OPTIMIZED}))
    origin = FakeOrigin(ok(cache_control="max-age=60"))
    slow_fetch = origin.fetch

    async def slow(request: OriginRequest) -> Response:
        await all_blocked()  # the origin answers once every other request waits
        return await slow_fetch(request)

    origin.fetch = slow  # type: ignore[method-assign]
    edge = Edge(distribution, {"app": origin})

    async def many() -> list[str]:
        requests = [ViewerRequest("GET", "/same") for _ in range(5)]
        responses = await asyncio.gather(*(edge.handle(r) for r in requests))
        return [dict(r.headers)["x-cache"] for r in responses]

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        outcomes = runner.run(many())
    assert sorted(outcomes) == ["Hit from cloudfront"] * 4 + ["Miss from cloudfront"]
    assert len(origin.requests) == 1


def test_s3_origin_reads_only_what_the_bucket_policy_grants() -> None:
    import boto3
    from moto import mock_aws

    from handler.commands.local_cdn.s3 import S3Fetcher, create_buckets
    from handler.commands.local_cdn.template import Bucket, S3Origin

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        create_buckets(client, ["variants"])
        client.put_object(Bucket="variants", Key="site/_next/image-variants/k", Body=b"img")
        client.put_object(Bucket="variants", Key="site/_next/image-pointers/k", Body=b"ptr")
        granted = ("_next/image-variants/*",)

        def fetch(path: str, listable: bool = False) -> Response:
            bucket = Bucket("B", "variants", tuple(f"site/{p}" for p in granted), listable)
            fetcher = S3Fetcher(S3Origin("s3", bucket, "site"), client)
            return asyncio.run(fetcher.fetch(OriginRequest("GET", path, "", [])))

        found = fetch("/_next/image-variants/k")
        assert (found.status, found.body) == (200, b"img")
        assert found.header("etag") is not None
        assert fetch("/_next/image-pointers/k").status == 403  # outside the grant
        missing = fetch("/_next/image-variants/none")
        assert (missing.status, b"AccessDenied" in missing.body) == (403, True)
        assert fetch("/_next/image-variants/none", listable=True).status == 404


def test_an_expired_object_is_served_while_the_origin_fails(tmp_path: Path) -> None:
    distribution = load(tmp_path, template(default={"CachePolicyId": CACHING_OPTIMIZED}))
    answers = iter(
        [
            Response(200, [("cache-control", "max-age=60"), ("content-length", "3")], b"old"),
            Response(503, [("content-length", "4")], b"down"),
            Response(503, [("content-length", "4")], b"down"),
        ]
    )
    origin = FakeOrigin(lambda _request: next(answers))
    clock = Clock()
    edge = Edge(distribution, {"app": origin}, clock=clock)
    get(edge, "/a")
    clock.now += 61
    response, _ = get(edge, "/a")
    assert (response.status, response.body) == (200, b"old")  # the origin said 503
    clock.now += 9
    assert get(edge, "/a")[0].body == b"old"  # for the error caching minimum TTL, 10 s
    assert len(origin.requests) == 2
    clock.now += 2
    assert get(edge, "/a")[0].body == b"old"
    assert len(origin.requests) == 3
