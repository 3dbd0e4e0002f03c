"""The Lambda handler in this process: an event of each source API Gateway, ALB and Function
URLs send, and a handler built from settings (or a Lambda environment) and invoked as a fresh
instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from handler.commands.invoke import FakeContext, function_url_event
from handler.entry.lambda_handler import LambdaHandler, build_handler, lambda_settings
from handler.entry.settings import Settings

Event = dict[str, Any]
WEBP = "image/webp,*/*"


def function_url(method: str, query: str, headers: dict[str, str]) -> Event:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/_next/image",
        "rawQueryString": query,
        "headers": {"host": "abc.lambda-url.us-east-1.on.aws", **headers},
        "requestContext": {
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": {"method": method, "path": "/_next/image", "sourceIp": "203.0.113.9"},
            "requestId": "r1",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }


def http_api(method: str, query: str, headers: dict[str, str]) -> Event:
    event = function_url(method, query, headers)
    event["routeKey"] = "GET /_next/image"
    event["requestContext"]["domainName"] = "id.execute-api.us-east-1.amazonaws.com"
    return event


def rest_api(method: str, query: str, headers: dict[str, str]) -> Event:
    params = parse_qs(query)
    return {
        "resource": "/_next/image",
        "path": "/_next/image",
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in params.items()},
        "multiValueQueryStringParameters": params,
        "requestContext": {"stage": "prod", "httpMethod": method, "requestId": "r1"},
        "body": None,
        "isBase64Encoded": False,
    }


def alb(method: str, query: str, headers: dict[str, str]) -> Event:
    """Multi-value mode: ALB passes query values still percent-encoded, as the client sent them."""
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        params.setdefault(key, []).append(value)
    return {
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:tg"}},
        "httpMethod": method,
        "path": "/_next/image",
        "multiValueQueryStringParameters": params,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "body": "",
        "isBase64Encoded": False,
    }


SOURCES: dict[str, Callable[[str, str, dict[str, str]], Event]] = {
    "function-url": function_url,
    "http-api": http_api,
    "rest-api": rest_api,
    "alb": alb,
}


def event(query: str, accept: str = WEBP) -> dict[str, Any]:
    return function_url_event(query, accept)


def invoke(settings: Settings, event: Event) -> dict[str, Any]:
    return build_handler(settings)(event, FakeContext())


def lambda_instance(env: dict[str, str]) -> LambdaHandler:
    return build_handler(lambda_settings(env))
