"""The CloudFront distribution a synthesized template describes, or why it cannot be served.

Every setting that changes what a viewer gets is emulated or refused with ``Unsupported`` naming
the resource or behaviour (the list: docs/local-cdn.md). Custom error responses are emulated (the
error caching minimum TTL, ``ResponsePagePath`` with its code); settings with no effect on one
local viewer (aliases, certificates, price class, logging) are accepted; what is emulated only in
part is listed in ``Distribution.notes`` and logged at startup."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from handler.commands.local_cdn.intrinsics import Names, Resolver, Unsupported
from handler.commands.local_cdn.policies import (
    DERIVED_CLOUDFRONT_HEADERS,
    MANAGED_CACHE_POLICIES,
    MANAGED_ORIGIN_REQUEST_POLICIES,
    CachePolicy,
    OriginRequestPolicy,
    ResponseHeadersPolicy,
    cache_policy,
    origin_request_policy,
    response_headers_policy,
)

HANDLER = "handler.entry.lambda_handler.handler"
TASK_ROOT = "/var/task"
FUNCTION_RUNTIME = "cloudfront-js-2.0"
_S3_HOST = re.compile(r"^(?P<bucket>[a-z0-9.-]+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$")
# CloudFront's defaults (Developer Guide, "Values that you specify when you create or update a
# distribution"): 30 s response timeout, 10 s connection timeout, 3 connection attempts.
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 3

DISTRIBUTION_KEYS = {
    "Aliases", "CNAMEs", "CacheBehaviors", "Comment", "CustomErrorResponses",
    "DefaultCacheBehavior", "DefaultRootObject", "Enabled", "HttpVersion", "IPV6Enabled",
    "Logging", "Origins", "OriginGroups", "PriceClass", "Restrictions", "ViewerCertificate",
    "WebACLId", "ContinuousDeploymentPolicyId", "Staging", "AnycastIpListId",
}  # fmt: skip
BEHAVIOUR_KEYS = {
    "AllowedMethods", "CachedMethods", "CachePolicyId", "Compress", "FieldLevelEncryptionId",
    "FunctionAssociations", "LambdaFunctionAssociations", "OriginRequestPolicyId", "PathPattern",
    "RealtimeLogConfigArn", "ResponseHeadersPolicyId", "SmoothStreaming", "TargetOriginId",
    "TrustedKeyGroups", "TrustedSigners", "ViewerProtocolPolicy", "GrpcConfig",
    "ForwardedValues", "MinTTL", "DefaultTTL", "MaxTTL",  # legacy: refused below
}  # fmt: skip
ORIGIN_KEYS = {
    "ConnectionAttempts", "ConnectionTimeout", "CustomOriginConfig", "DomainName", "Id",
    "OriginAccessControlId", "OriginCustomHeaders", "OriginPath", "OriginShield",
    "S3OriginConfig",
}  # fmt: skip

# A BucketDeployment's properties that change nothing about which files land under which keys.
DEPLOYMENT_KEYS = {
    "ServiceToken", "SourceBucketNames", "SourceObjectKeys", "SourceMarkers",
    "SourceMarkersConfig", "DestinationBucketName", "DestinationBucketKeyPrefix",
    "DestinationBucketArn", "Prune", "RetainOnDelete", "OutputObjectKeys", "Extract",
    "WaitForDistributionInvalidation", "DistributionId", "DistributionPaths", "SignContent",
}  # fmt: skip

Policy = TypeVar("Policy", CachePolicy, OriginRequestPolicy, ResponseHeadersPolicy)


@dataclass(frozen=True)
class ViewerFunction:
    """A viewer-request CloudFront Function, by its logical ID."""

    name: str
    code: str


@dataclass(frozen=True)
class LambdaFunction:
    """The optimizer function as deployed: its settings and its environment, ``/var/task``
    mapped to the function's code folder in the cloud assembly."""

    logical_id: str
    name: str
    arn: str
    timeout: float
    memory_mib: int
    environment: Mapping[str, str]


@dataclass(frozen=True)
class LambdaUrlOrigin:
    id: str
    host: str
    function: LambdaFunction
    iam_auth: bool  # the Function URL's AuthType is AWS_IAM
    signed: bool  # an origin access control signs CloudFront's requests
    read_timeout: float
    custom_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Bucket:
    """A bucket and what CloudFront may do in it under the bucket policy."""

    logical_id: str | None
    name: str
    readable: tuple[str, ...] = ()  # key patterns (fnmatch) CloudFront may GetObject
    listable: bool = False  # s3:ListBucket: a missing key is 404, not 403

    def can_read(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.readable)


@dataclass(frozen=True)
class S3Origin:
    id: str
    bucket: Bucket
    path: str  # OriginPath without slashes at either end
    custom_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CustomOrigin:
    """The app's origin (the default behaviour's), served locally by ``--app-origin``."""

    id: str
    domain: str
    path: str  # OriginPath, without a trailing slash
    read_timeout: float
    connect_timeout: float
    attempts: int
    custom_headers: tuple[tuple[str, str], ...] = ()


Origin = LambdaUrlOrigin | S3Origin | CustomOrigin


@dataclass(frozen=True)
class Behaviour:
    path_pattern: str  # "*" for the default behaviour
    origin: Origin
    allowed_methods: frozenset[str]
    cached_methods: frozenset[str]
    cache_policy: CachePolicy
    origin_request_policy: OriginRequestPolicy | None
    response_headers_policy: ResponseHeadersPolicy | None
    viewer_request: ViewerFunction | None
    compress: bool


@dataclass(frozen=True)
class Deployment:
    """A ``BucketDeployment``: what a deploy copies into a bucket, from the cloud assembly.

    Each folder is a source as the synth staged it (``cdk.out/asset.<hash>``, found through the
    stack's ``<stack>.assets.json``): the app's ``public/`` or ``.next/static/media`` as they were
    when the template was synthesized. Its files land under ``prefix``.
    """

    logical_id: str
    bucket: str
    prefix: str
    folders: tuple[Path, ...]


@dataclass(frozen=True)
class ErrorPage:
    """A custom error response's page: served for its error with ``code`` (CloudFront gets
    ``path`` as any object, through the behaviour its path selects)."""

    path: str
    code: int


@dataclass(frozen=True)
class Distribution:
    logical_id: str
    behaviours: tuple[Behaviour, ...]  # in the template's order, the default last
    buckets: tuple[Bucket, ...]
    error_caching_min_ttl: Mapping[int, int] = field(default_factory=dict)
    default_root_object: str = ""
    notes: tuple[str, ...] = ()
    deployments: tuple[Deployment, ...] = ()  # in the template's order
    error_pages: Mapping[int, ErrorPage] = field(default_factory=dict)  # by error status

    @property
    def functions(self) -> tuple[ViewerFunction, ...]:
        found = {
            b.viewer_request.name: b.viewer_request for b in self.behaviours if b.viewer_request
        }
        return tuple(found.values())

    @property
    def lambda_function(self) -> LambdaFunction | None:
        for behaviour in self.behaviours:
            if isinstance(behaviour.origin, LambdaUrlOrigin):
                return behaviour.origin.function
        return None

    @property
    def app_origin(self) -> CustomOrigin | None:
        for behaviour in self.behaviours:
            if isinstance(behaviour.origin, CustomOrigin):
                return behaviour.origin
        return None


def stack_name(template_path: Path) -> str:
    return template_path.name.removesuffix(".json").removesuffix(".template")


def read_template(template_path: Path, region: str = "us-east-1") -> Distribution:
    """Read ``cdk.out/<stack>.template.json``; raises ``Unsupported`` on anything not emulated."""
    template = json.loads(template_path.read_text())
    reader = _Reader(template, Names(stack_name(template_path), region), template_path.parent)
    return reader.distribution()


def _unknown_keys(found: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(found) - known)
    if unknown:
        raise Unsupported(f"{where}: {', '.join(unknown)} not understood by local-cdn")


def _items(value: Any) -> list[Any]:
    """CloudFormation lists, or the API's ``{"Quantity": n, "Items": [...]}`` shape."""
    if isinstance(value, Mapping):
        return list(value.get("Items") or [])
    return list(value or [])


class _Reader:
    def __init__(self, template: Mapping[str, Any], names: Names, assembly: Path) -> None:
        self.template = template
        self.names = names
        self.assembly = assembly
        self.resolver = Resolver(template, names)
        self.resources: Mapping[str, Any] = template.get("Resources", {})
        self.notes: list[str] = []
        self.plain_http: list[str] = []
        self.buckets = {
            self.resolver.ref(logical_id, logical_id): logical_id
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == "AWS::S3::Bucket"
        }

    def of_type(self, kind: str) -> dict[str, Any]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == kind}

    def distribution(self) -> Distribution:
        found = self.of_type("AWS::CloudFront::Distribution")
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise Unsupported(f"local-cdn serves one AWS::CloudFront::Distribution; found {names}")
        (logical_id, resource), *_ = found.items()
        config = resource.get("Properties", {}).get("DistributionConfig", {})
        where = f"{logical_id}.DistributionConfig"
        _unknown_keys(config, DISTRIBUTION_KEYS, where)
        self._refuse_distribution_settings(config, where)
        origins = {
            o["Id"]: o for o in (self.resolver.resolve(o, where) for o in config.get("Origins", []))
        }
        default = dict(config.get("DefaultCacheBehavior", {}), PathPattern="*")
        raw = [*config.get("CacheBehaviors", []), default]
        app_domain = str(origins.get(default.get("TargetOriginId"), {}).get("DomainName", ""))
        behaviours = tuple(self._behaviour(b, origins, app_domain, logical_id) for b in raw)
        functions = {
            b.origin.function.logical_id
            for b in behaviours
            if isinstance(b.origin, LambdaUrlOrigin)
        }
        if len(functions) > 1:
            raise Unsupported(
                f"local-cdn runs one Lambda function in-process; behaviours use {sorted(functions)}"
            )
        if self.plain_http:
            self.notes.append(
                "the local listener is plain HTTP: the viewer protocol policy of "
                f"{', '.join(self.plain_http)} is not enforced"
            )
        deployments = self._deployments()
        return Distribution(
            logical_id,
            behaviours,
            tuple(Bucket(logical_id, name) for name, logical_id in self.buckets.items()),
            self._error_caching(config, where),
            str(config.get("DefaultRootObject", "")),
            tuple(self.notes),
            deployments,
            error_pages=self._error_pages(config, where),
        )

    def _deployments(self) -> tuple[Deployment, ...]:
        """The BucketDeployments local-cdn can run as a deploy would; a note for each other."""
        found = []
        for logical_id, resource in self.of_type("Custom::CDKBucketDeployment").items():
            try:
                found.append(self._deployment(logical_id, resource.get("Properties") or {}))
            except Unsupported as exc:
                self.notes.append(f"{exc}: it is not run (upload its files with --seed-public)")
        return tuple(found)

    def _deployment(self, logical_id: str, props: Mapping[str, Any]) -> Deployment:
        where = f"BucketDeployment {logical_id}"
        unknown = sorted(set(props) - DEPLOYMENT_KEYS)
        if unknown:
            raise Unsupported(f"{where}: {', '.join(unknown)} not emulated")
        if str(props.get("Extract", True)).lower() == "false":
            raise Unsupported(f"{where}: Extract false (zips copied as they are) not emulated")
        if any(props.get("SourceMarkers") or []):
            raise Unsupported(f"{where}: sources with deploy-time values not emulated")
        bucket = self.resolver.text(props.get("DestinationBucketName"), where)
        prefix = props.get("DestinationBucketKeyPrefix")
        keys = self.resolver.resolve(props.get("SourceObjectKeys") or [], where)
        return Deployment(
            logical_id,
            bucket,
            self.resolver.text(prefix, where) if prefix is not None else "",
            tuple(self._asset_folder(self.resolver.text(key, where), where) for key in keys),
        )

    def _asset_folder(self, key: str, where: str) -> Path:
        """A source of a BucketDeployment: a folder the synth staged in the cloud assembly."""
        source = (self._asset(key) or {}).get("source") or {}
        if source.get("packaging") != "zip" or not source.get("path"):
            raise Unsupported(f"{where}: its source {key} is not a folder asset of {self.assembly}")
        folder = self.assembly / str(source["path"])
        if not folder.is_dir():
            raise Unsupported(f"{where}: {folder} is missing (synthesize again)")
        return folder

    def _asset(self, key: str) -> Mapping[str, Any] | None:
        """The asset manifest's entry for an object key of the CDK assets bucket."""
        manifest = self.assembly / f"{self.names.stack}.assets.json"
        if not manifest.exists():
            return None
        files = json.loads(manifest.read_text()).get("files", {})
        found = files.get(key.removesuffix(".zip"))
        return found if isinstance(found, Mapping) else None

    def _refuse_distribution_settings(self, config: Mapping[str, Any], where: str) -> None:
        if _items(config.get("OriginGroups")):
            raise Unsupported(f"{where}.OriginGroups: origin failover is not emulated")
        geo = (config.get("Restrictions") or {}).get("GeoRestriction") or {}
        if geo.get("RestrictionType", "none") != "none":
            raise Unsupported(f"{where}.Restrictions: geo restriction needs viewer locations")
        if config.get("WebACLId"):
            raise Unsupported(f"{where}.WebACLId: AWS WAF rules are not emulated")
        if config.get("ContinuousDeploymentPolicyId") or config.get("Staging"):
            raise Unsupported(f"{where}: continuous deployment (staging) is not emulated")
        if config.get("Logging"):
            self.notes.append("standard logging (Logging) is not written locally")

    def _error_caching(self, config: Mapping[str, Any], where: str) -> dict[int, int]:
        ttls: dict[int, int] = {}
        for item in _items(config.get("CustomErrorResponses")):
            if "ErrorCachingMinTTL" in item:
                ttls[int(item["ErrorCode"])] = int(item["ErrorCachingMinTTL"])
        return ttls

    def _error_pages(self, config: Mapping[str, Any], where: str) -> dict[int, ErrorPage]:
        pages: dict[int, ErrorPage] = {}
        for item in _items(config.get("CustomErrorResponses")):
            status, path = int(item["ErrorCode"]), item.get("ResponsePagePath")
            if not path:
                if item.get("ResponseCode"):
                    raise Unsupported(
                        f"{where}.CustomErrorResponses[{status}]: ResponseCode without a "
                        "ResponsePagePath"
                    )
                continue
            code = int(item.get("ResponseCode") or status)
            pages[status] = ErrorPage(self.resolver.text(path, where), code)
        return pages

    def _behaviour(
        self,
        raw: Mapping[str, Any],
        origins: Mapping[str, Mapping[str, Any]],
        app_domain: str,
        distribution_id: str,
    ) -> Behaviour:
        pattern = str(raw["PathPattern"])
        where = f"{distribution_id} behaviour {pattern!r}"
        _unknown_keys(raw, BEHAVIOUR_KEYS, where)
        if _items(raw.get("LambdaFunctionAssociations")):
            raise Unsupported(f"{where}: Lambda@Edge associations are not emulated")
        if _items(raw.get("TrustedKeyGroups")) or _items(raw.get("TrustedSigners")):
            raise Unsupported(f"{where}: signed URLs and cookies (trusted key groups, signers)")
        if raw.get("FieldLevelEncryptionId"):
            raise Unsupported(f"{where}: field-level encryption is not emulated")
        if raw.get("SmoothStreaming"):
            raise Unsupported(f"{where}: Smooth Streaming is not emulated")
        if (raw.get("GrpcConfig") or {}).get("Enabled"):
            raise Unsupported(f"{where}: gRPC is not emulated")
        if "CachePolicyId" not in raw:
            raise Unsupported(f"{where}: legacy cache settings (no cache policy) are not emulated")
        if raw.get("RealtimeLogConfigArn"):
            self.notes.append(f"behaviour {pattern!r}: real-time logs are not written locally")
        protocol = raw.get("ViewerProtocolPolicy", "allow-all")
        if protocol != "allow-all":
            self.plain_http.append(f"{pattern} ({protocol})")
        target = str(raw.get("TargetOriginId"))
        if target not in origins:
            raise Unsupported(f"{where}: TargetOriginId {target} is not one of the origins")
        origin_request = self._policy(
            raw.get("OriginRequestPolicyId"),
            "AWS::CloudFront::OriginRequestPolicy",
            "OriginRequestPolicyConfig",
            MANAGED_ORIGIN_REQUEST_POLICIES,
            origin_request_policy,
            f"{where}.OriginRequestPolicyId",
        )
        if origin_request is not None:
            missing = sorted(origin_request.cloudfront_headers - DERIVED_CLOUDFRONT_HEADERS)
            if missing:
                self.notes.append(
                    f"behaviour {pattern!r}: {origin_request.name} also forwards device and "
                    f"geolocation headers; local-cdn cannot derive them and leaves them out "
                    f"({', '.join(missing)})"
                )
        cache = self._policy(
            raw["CachePolicyId"],
            "AWS::CloudFront::CachePolicy",
            "CachePolicyConfig",
            MANAGED_CACHE_POLICIES,
            cache_policy,
            f"{where}.CachePolicyId",
        )
        assert cache is not None
        return Behaviour(
            path_pattern=pattern,
            origin=self._origin(origins[target], app_domain, where),
            allowed_methods=frozenset(raw.get("AllowedMethods", ["GET", "HEAD"])),
            cached_methods=frozenset(raw.get("CachedMethods", ["GET", "HEAD"])),
            cache_policy=cache,
            origin_request_policy=origin_request,
            response_headers_policy=self._policy(
                raw.get("ResponseHeadersPolicyId"),
                "AWS::CloudFront::ResponseHeadersPolicy",
                "ResponseHeadersPolicyConfig",
                {},
                response_headers_policy,
                f"{where}.ResponseHeadersPolicyId",
            ),
            viewer_request=self._viewer_function(raw.get("FunctionAssociations"), where),
            compress=bool(raw.get("Compress", False)),
        )

    def _policy(
        self,
        value: Any,
        kind: str,
        config_key: str,
        managed: Mapping[str, Policy],
        parse: Callable[[Mapping[str, Any], str], Policy],
        where: str,
    ) -> Policy | None:
        if value is None:
            return None
        policy_id = self.resolver.text(value, where)
        if policy_id in managed:
            return managed[policy_id]
        resource = self.resources.get(policy_id)
        if resource is None or resource.get("Type") != kind:
            raise Unsupported(
                f"{where}: {policy_id} is neither a {kind} in the template nor a managed "
                "policy whose settings local-cdn knows"
            )
        config = self.resolver.resolve(resource.get("Properties", {}).get(config_key, {}), where)
        return parse(config, f"{kind.rsplit('::', 1)[1]} {policy_id}")

    def _viewer_function(self, associations: Any, where: str) -> ViewerFunction | None:
        found: ViewerFunction | None = None
        for association in _items(associations):
            event = association.get("EventType")
            if event != "viewer-request":
                raise Unsupported(f"{where}: {event} CloudFront Functions are not emulated")
            arn = self.resolver.text(association.get("FunctionARN"), where)
            logical_id = arn.rsplit("/", 1)[-1]
            resource = self.resources.get(logical_id, {})
            if resource.get("Type") != "AWS::CloudFront::Function":
                raise Unsupported(f"{where}: function {arn} is not defined in the template")
            props = resource.get("Properties", {})
            runtime = (props.get("FunctionConfig") or {}).get("Runtime")
            if runtime != FUNCTION_RUNTIME:
                raise Unsupported(f"{logical_id}: runtime {runtime}; local-cdn runs js-2.0 only")
            if (props.get("FunctionConfig") or {}).get("KeyValueStoreAssociations"):
                raise Unsupported(f"{logical_id}: KeyValueStore associations are not emulated")
            code = self.resolver.text(props.get("FunctionCode"), f"{logical_id}.FunctionCode")
            if re.search(r"""(?:from|require\()\s*['"]cloudfront['"]""", code):
                raise Unsupported(f"{logical_id}: the 'cloudfront' helper module is not emulated")
            found = ViewerFunction(logical_id, code)
        return found

    def _origin(self, raw: Mapping[str, Any], app_domain: str, where: str) -> Origin:
        origin_id = str(raw["Id"])
        where = f"{where} origin {origin_id}"
        _unknown_keys(raw, ORIGIN_KEYS, where)
        domain = str(raw["DomainName"])
        headers = tuple(
            (str(h["HeaderName"]).lower(), str(h["HeaderValue"]))
            for h in _items(raw.get("OriginCustomHeaders"))
        )
        custom = raw.get("CustomOriginConfig") or {}
        read_timeout = float(custom.get("OriginReadTimeout", DEFAULT_READ_TIMEOUT))
        access = self._access_control(raw.get("OriginAccessControlId"), where)
        for logical_id, resource in self.of_type("AWS::Lambda::Url").items():
            if self.names.lambda_url_host(logical_id) == domain:
                return self._lambda_origin(
                    origin_id, logical_id, resource, access, read_timeout, headers
                )
        s3_host = _S3_HOST.match(domain)
        if s3_host and (access == "s3" or "S3OriginConfig" in raw):
            path = str(raw.get("OriginPath", "")).strip("/")
            oai = bool((raw.get("S3OriginConfig") or {}).get("OriginAccessIdentity"))
            bucket = self._bucket(s3_host.group("bucket"), oac=access == "s3", oai=oai)
            return S3Origin(origin_id, bucket, path, headers)
        if custom and domain == app_domain:
            return CustomOrigin(
                origin_id,
                domain,
                str(raw.get("OriginPath", "")).rstrip("/"),
                read_timeout,
                float(raw.get("ConnectionTimeout", DEFAULT_CONNECT_TIMEOUT)),
                int(raw.get("ConnectionAttempts", DEFAULT_ATTEMPTS)),
                headers,
            )
        raise Unsupported(
            f"{where}: {domain} is neither a Function URL nor a bucket of this template, nor the "
            "default behaviour's origin (which --app-origin stands in for)"
        )

    def _access_control(self, value: Any, where: str) -> str | None:
        """The origin type an OAC signs for (``s3``, ``lambda``), or None without one."""
        if not value:
            return None
        logical_id = self.resolver.text(value, where)
        resource = self.resources.get(logical_id, {})
        if resource.get("Type") != "AWS::CloudFront::OriginAccessControl":
            raise Unsupported(f"{where}: origin access control {logical_id} is not in the template")
        config = resource.get("Properties", {}).get("OriginAccessControlConfig", {})
        if config.get("SigningBehavior") == "never":
            return None
        return str(config.get("OriginAccessControlOriginType"))

    def _lambda_origin(
        self,
        origin_id: str,
        url_id: str,
        url: Mapping[str, Any],
        access: str | None,
        read_timeout: float,
        headers: tuple[tuple[str, str], ...],
    ) -> LambdaUrlOrigin:
        props = url.get("Properties", {})
        if props.get("Cors"):
            raise Unsupported(f"{url_id}: Function URL CORS settings are not emulated")
        if props.get("InvokeMode", "BUFFERED") != "BUFFERED":
            raise Unsupported(f"{url_id}: response streaming is not emulated")
        arn = self.resolver.text(props.get("TargetFunctionArn"), f"{url_id}.TargetFunctionArn")
        name = arn.split(":")[6] if arn.startswith("arn:") else arn
        for logical_id in self.of_type("AWS::Lambda::Function"):
            if self.resolver.ref(logical_id, url_id) == name:
                function = self._function(logical_id, arn)
                break
        else:
            raise Unsupported(f"{url_id}: its function {arn} is not defined in the template")
        return LambdaUrlOrigin(
            origin_id,
            self.names.lambda_url_host(url_id),
            function,
            iam_auth=props.get("AuthType") == "AWS_IAM",
            signed=access == "lambda",
            read_timeout=read_timeout,
            custom_headers=headers,
        )

    def _function(self, logical_id: str, arn: str) -> LambdaFunction:
        props = self.resources[logical_id].get("Properties", {})
        if props.get("Handler") != HANDLER:
            raise Unsupported(
                f"{logical_id}: handler {props.get('Handler')}; local-cdn runs {HANDLER} in-process"
            )
        where = f"{logical_id}.Environment"
        raw = self.resolver.resolve((props.get("Environment") or {}).get("Variables", {}), where)
        environment = {str(k): str(v) for k, v in raw.items()}
        code_dir = self._code_dir(props.get("Code") or {})
        for key, value in environment.items():
            if value == TASK_ROOT or value.startswith(TASK_ROOT + "/"):
                if code_dir is None:
                    raise Unsupported(
                        f"{where}.{key}: {value} is in the function's code, which is not a "
                        f"folder in {self.assembly} (synthesize again, or set it with --env-file)"
                    )
                environment[key] = str(code_dir) + value.removeprefix(TASK_ROOT)
        return LambdaFunction(
            logical_id,
            self.resolver.ref(logical_id, logical_id),
            arn.rsplit(":", 1)[0] if arn.count(":") > 6 else arn,
            float(props.get("Timeout", 3)),
            int(props.get("MemorySize", 128)),
            environment,
        )

    def _code_dir(self, code: Mapping[str, Any]) -> Path | None:
        """The staged function code in the cloud assembly, found through its asset manifest."""
        key = code.get("S3Key")
        asset = self._asset(key) if isinstance(key, str) else None
        if not asset:
            return None
        folder = self.assembly / asset["source"]["path"]
        return folder if folder.is_dir() else None

    def _bucket(self, name: str, oac: bool, oai: bool) -> Bucket:
        """The bucket named ``name`` with the keys CloudFront may read under its policy."""
        logical_id = self.buckets.get(name)
        if logical_id is None:
            self.notes.append(f"bucket {name} is not in the template: every key is readable")
            return Bucket(None, name, ("*",))
        readable: list[str] = []
        listable = False
        props = self.resources[logical_id].get("Properties", {})
        public_blocked = (props.get("PublicAccessBlockConfiguration") or {}).get(
            "RestrictPublicBuckets", False
        )
        for policy_id, policy in self.of_type("AWS::S3::BucketPolicy").items():
            policy_props = self.resolver.resolve(policy.get("Properties", {}), policy_id)
            if policy_props.get("Bucket") != name:
                continue
            for index, statement in enumerate(policy_props["PolicyDocument"]["Statement"]):
                where = f"{policy_id} statement {index}"
                grants = self._grants(statement, oac, oai, public_blocked, where)
                for action, resource in grants:
                    if _action_matches(action, "s3:GetObject") and resource.startswith(
                        f"arn:aws:s3:::{name}/"
                    ):
                        readable.append(resource.removeprefix(f"arn:aws:s3:::{name}/"))
                    if _action_matches(action, "s3:ListBucket") and resource == (
                        f"arn:aws:s3:::{name}"
                    ):
                        listable = True
        return Bucket(logical_id, name, tuple(readable), listable)

    def _grants(
        self,
        statement: Mapping[str, Any],
        oac: bool,
        oai: bool,
        public_blocked: bool,
        where: str,
    ) -> list[tuple[str, str]]:
        """(action, resource) pairs the statement allows CloudFront's requests."""
        conditions = statement.get("Condition") or {}
        if statement.get("Effect") == "Deny":
            if conditions == {"Bool": {"aws:SecureTransport": "false"}}:
                return []  # CloudFront reaches S3 over TLS
            raise Unsupported(f"{where}: Deny statements other than SSL-only are not evaluated")
        if not _principal_is_cloudfront(statement.get("Principal"), oac, oai, public_blocked):
            return []
        for operator, keys in conditions.items():
            if operator not in ("StringEquals", "ArnLike", "ArnEquals", "StringLike") or any(
                key.lower() != "aws:sourcearn" for key in keys
            ):
                raise Unsupported(f"{where}: condition {operator} {sorted(keys)} not evaluated")
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        return [
            (action, resource)
            for action in ([actions] if isinstance(actions, str) else actions)
            for resource in ([resources] if isinstance(resources, str) else resources)
        ]


def _action_matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _principal_is_cloudfront(principal: Any, oac: bool, oai: bool, public_blocked: bool) -> bool:
    """Whether CloudFront's request to S3 is made as this principal."""
    if principal == "*" or (isinstance(principal, Mapping) and principal.get("AWS") == "*"):
        return not public_blocked
    if not isinstance(principal, Mapping):
        return False
    services = principal.get("Service", [])
    if oac and "cloudfront.amazonaws.com" in (
        [services] if isinstance(services, str) else services
    ):
        return True
    identities = json.dumps([principal.get("AWS"), principal.get("CanonicalUser")])
    return oai and (
        "CloudFront Origin Access Identity" in identities or "CanonicalUser" in principal
    )
