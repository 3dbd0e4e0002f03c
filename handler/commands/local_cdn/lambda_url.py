"""The Function URL origin: the optimizer's Lambda handler, invoked in-process.

The origin request becomes a Function URL's event (payload 2.0: lower-case headers joined with
commas, cookies apart, raw and decoded query, an IAM authorizer for ``AWS_IAM``), the answer its
HTTP response: base64 decoded, ``application/json`` by default, 502 past Lambda's synchronous
payload limit, on a raise or past the timeout ("Lambda quotas", "Invoking Lambda function URLs").
Each instance is a thread with its own event loop running one invocation at a time, like an
execution environment; instances start on demand (a cold start) up to a bound."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.commands.local_cdn.http import Pairs, Response, get
from handler.commands.local_cdn.origins import OriginRequest
from handler.commands.local_cdn.template import LambdaUrlOrigin

# Lambda's synchronous response limit; its error reads "Response payload size exceeded maximum
# allowed payload size (6291556 bytes)".
MAX_RESPONSE_BYTES = 6_291_556
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
log = logging.getLogger("local_cdn")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


@dataclass
class InvocationContext(FakeContext):
    """A Lambda context whose remaining time counts down to the function's timeout."""

    deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.deadline - time.monotonic()) * 1000), 0)


def function_url_event(origin: LambdaUrlOrigin, request: OriginRequest) -> dict[str, Any]:
    """The event the Function URL hands the function for CloudFront's request."""
    headers: dict[str, str] = {}
    for name, value in request.headers:
        if name != "cookie":
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    headers.update(
        {
            "host": origin.host,
            "x-forwarded-for": request.viewer_ip,
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-amzn-trace-id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        }
    )
    url_id = origin.host.split(".", 1)[0]
    now = time.time()
    context: dict[str, Any] = {
        "accountId": "anonymous",
        "apiId": url_id,
        "domainName": origin.host,
        "domainPrefix": url_id,
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": "HTTP/1.1",
            "sourceIp": request.viewer_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if origin.iam_auth:
        context["accountId"] = origin.function.arn.split(":")[4]
        context["authorizer"] = {
            "iam": {
                "accessKey": "ASIA000000000000CLOUDFRONT",
                "accountId": context["accountId"],
                "callerId": "cloudfront.amazonaws.com",
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": "arn:aws:sts::cloudfront:assumed-role/cloudfront",
                "userId": "cloudfront.amazonaws.com",
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    cookies = get(request.headers, "cookie")
    if cookies:
        event["cookies"] = [c.strip() for c in cookies.split(";") if c.strip()]
    if request.query:
        parameters: dict[str, str] = {}
        for part in request.query.split("&"):
            name, _, value = part.partition("=")
            name, value = unquote(name), unquote(value)
            parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
        event["queryStringParameters"] = parameters
    if request.body:
        text = (headers.get("content-type") or "").startswith(_TEXT_TYPES)
        event["body"] = request.body.decode() if text else base64.b64encode(request.body).decode()
        event["isBase64Encoded"] = not text
    return event


def url_error(status: int, message: str, error_type: str) -> Response:
    """An answer of the Function URL itself, not of the function."""
    body = json.dumps({"Message": message}).encode()
    headers: Pairs = [
        ("content-type", "application/json"),
        ("x-amzn-errortype", error_type),
        ("content-length", str(len(body))),
    ]
    return Response(status, headers, body)


def function_url_response(payload: Mapping[str, Any]) -> Response:
    """The HTTP response the Function URL makes of the handler's return value."""
    if len(json.dumps(payload).encode()) > MAX_RESPONSE_BYTES:
        return url_error(502, "Internal Server Error", "Function.ResponseSizeTooLarge")
    headers: Pairs = list(response_headers(payload).items())
    headers += [("set-cookie", cookie) for cookie in payload.get("cookies") or []]
    if not any(name == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    body = response_body(payload)
    if not any(name == "content-length" for name, _ in headers):
        headers.append(("content-length", str(len(body))))
    return Response(int(payload.get("statusCode", 200)), headers, body)


def _new_event_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


class _Instance:
    """One execution environment: its own thread and event loop, its handler built on first use
    (the init phase of a cold start)."""

    def __init__(self, factory: Callable[[], LambdaHandler], deploy: int = 0) -> None:
        self.executor = ThreadPoolExecutor(1, "lambda-instance", initializer=_new_event_loop)
        self.deploy = deploy  # the fetcher's deploy it was started for
        self._factory = factory
        self._handler: LambdaHandler | None = None

    def invoke(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._handler is None:
            self._handler = self._factory()
        return self._handler(event, context)


class LambdaUrlFetcher:
    """Invokes the function for each origin request, as the Function URL does."""

    def __init__(
        self,
        origin: LambdaUrlOrigin,
        factory: Callable[[], LambdaHandler],
        max_instances: int = 2,
    ) -> None:
        self.origin = origin
        self._factory = factory
        self._max_instances = max(max_instances, 1)
        self._idle: list[_Instance] = []
        self._busy = 0
        self._freed: asyncio.Condition | None = None
        self._deploy = 0  # counts redeploys: instances of an earlier one are retired

    def redeploy(self, origin: LambdaUrlOrigin) -> int:
        """A new configuration of the function (its environment, timeout, memory): as Lambda
        does for a new version, later invocations get new instances; idle ones are shut down
        now, busy ones when their invocation ends. Call it on the serving event loop. Returns
        how many instances were retired now."""
        self.origin = origin
        self._deploy += 1
        idle, self._idle = self._idle, []
        for instance in idle:
            instance.executor.shutdown(wait=False)
        return len(idle)

    @property
    def host(self) -> str:
        return self.origin.host

    async def fetch(self, request: OriginRequest) -> Response:
        if self.origin.iam_auth and not self.origin.signed:
            # An unsigned request to an AWS_IAM URL: no origin access control on this origin.
            return url_error(403, "Forbidden", "AccessDeniedException")
        event = function_url_event(self.origin, request)
        function = self.origin.function
        instance = await self._acquire()
        context = InvocationContext(
            function_name=function.name,
            memory_limit_in_mb=function.memory_mib,
            invoked_function_arn=function.arn,
            deadline=time.monotonic() + function.timeout,
        )
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(instance.executor, instance.invoke, event, context)
        try:
            payload = await asyncio.wait_for(asyncio.shield(running), function.timeout)
        except TimeoutError:
            # Lambda ends a timed-out environment; this one keeps its thread until the call ends.
            instance.executor.shutdown(wait=False)
            log.error(
                "%s timed out after %g s (Function URL answers 502)",
                function.name,
                function.timeout,
            )
            await self._release(None)
            return url_error(502, "Internal Server Error", "Sandbox.Timedout")
        except Exception:
            log.exception("%s raised (Function URL answers 502)", function.name)
            await self._release(instance)
            return url_error(502, "Internal Server Error", "Unhandled")
        await self._release(instance)
        return function_url_response(payload)

    async def _acquire(self) -> _Instance:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            while not self._idle and self._busy >= self._max_instances:
                await self._freed.wait()
            self._busy += 1
            return self._idle.pop() if self._idle else _Instance(self._factory, self._deploy)

    async def _release(self, instance: _Instance | None) -> None:
        assert self._freed is not None
        async with self._freed:
            self._busy -= 1
            if instance is not None and instance.deploy == self._deploy:
                self._idle.append(instance)
            elif instance is not None:  # of an earlier deploy: retired
                instance.executor.shutdown(wait=False)
            self._freed.notify()

    async def aclose(self) -> None:
        for instance in self._idle:
            await asyncio.to_thread(instance.executor.shutdown, True)
        self._idle.clear()
