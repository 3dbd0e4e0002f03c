"""``NextImageOptimizer``: the ``/_next/image`` Lambda, its S3 variant cache and CloudFront wiring.

Add it to any stack, with keyword arguments (the fields of ``NextImageOptimizerProps``). Without
``distribution`` it creates one whose default behaviour goes to the app's origin; with a
``cloudfront.Distribution`` from your own stack it only adds its two behaviours (``/_next/image``
and ``/_next/image-variants/*``) and the permissions scoped to it. The function's code travels in
this package (``function/``), so nothing here reads outside it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aws_cdk import (
    Acknowledgment,
    Annotations,
    CfnResource,
    Duration,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sns as sns
from constructs import Construct, IConstruct

from next_image_cdk.bundled_config import (
    BundledConfig,
    bundle_images_config,
    render_accept_function,
    render_static_site_function,
)
from next_image_cdk.layer_zips import cached_layers, read_manifest
from next_image_cdk.monitoring import METRICS_NAMESPACE, METRICS_SERVICE, OptimizerMonitoring
from next_image_cdk.redeploy import GENERATION_ENV, deploy_generation, invalidate_on_deploy

FUNCTION_CODE = Path(__file__).parent / "function" / "handler"
HANDLER = "handler.entry.lambda_handler.handler"
TASK_ROOT = "/var/task"
CONFIG_DIR = "next-image-config"
IMAGE_PATH = "/_next/image"
VARIANTS_PATH = "/_next/image-variants/*"
VARIANTS = "_next/image-variants/"
POINTERS = "_next/image-pointers/"
SOURCES = "_next/image-sources/"  # private: CloudFront serves only the variants prefix
CACHE_KEY_QUERY = ("url", "w", "q", "dpl")
# Fast first view's produce events are dropped once this old (AWS's default: six hours). The
# viewer got a WebP with max-age=10, so while the AVIF is missing every request for that image
# after ten seconds reaches the function and defers it again: an older event only duplicates a
# newer one. Events age only while the function is throttled (Lambda requeues a throttled event,
# retries or not, backing off from 1 s to 5 min), when it has the least room for extra work;
# five minutes lets a short burst of throttling pass and drops the backlog of a long one.
SELF_INVOKE_MAX_EVENT_AGE = Duration.minutes(5)
# CloudFront keeps a 5xx for 10 s unless told otherwise, and ignores no-store on it: the answers
# to a brief overload, a timeout or a throttle are forgotten after a second instead. Not 0: one
# second still collapses a burst of requests for one hot image into one origin request.
ERROR_CACHING_SECONDS = 1
TRANSIENT_ERRORS = (500, 502, 503, 504)
# A static site's missing page: its 404.html, kept at the edge as long as CloudFront's default.
SITE_NOT_FOUND_SECONDS = 10
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
BUCKET_DEPLOYMENT_FINDINGS = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-"
    "<AWS::AccountId>-<AWS::Region>/*]",
    "AwsSolutions-IAM5[Action::s3:GetObject*]",
    "AwsSolutions-IAM5[Action::s3:GetBucket*]",
    "AwsSolutions-IAM5[Action::s3:List*]",
    "AwsSolutions-IAM5[Action::s3:DeleteObject*]",
    "AwsSolutions-IAM5[Action::s3:Abort*]",
)

DEFAULT_CSP = "script-src 'none'; frame-src 'none'; sandbox;"
# The stand-alone distribution is a starting point; production setups attach the optimizer to
# their own distribution (``distribution=``), where these choices belong to its owner.
CREATED_DISTRIBUTION_FINDINGS = {
    "AwsSolutions-CFR1": "Geo restriction is a business decision of the app, not of the optimizer.",
    "AwsSolutions-CFR2": "WAF is the app's choice; pass your own distribution with a web ACL.",
    "AwsSolutions-CFR3": "Access logs are the app's choice; pass your own distribution with them.",
    "AwsSolutions-CFR4": "The default *.cloudfront.net certificate cannot pin TLS 1.2; a custom "
    "domain with an ACM certificate (your own distribution) can.",
}
Arch = Literal["arm64", "x86_64"]
PythonVersion = Literal["3.12", "3.13", "3.14"]
RUNTIMES: dict[str, lambda_.Runtime] = {
    "3.12": lambda_.Runtime.PYTHON_3_12,
    "3.13": lambda_.Runtime.PYTHON_3_13,
    "3.14": lambda_.Runtime.PYTHON_3_14,
}
LATEST_PYTHON = lambda_.Runtime.PYTHON_3_14
ARCHITECTURES: dict[str, lambda_.Architecture] = {
    "arm64": lambda_.Architecture.ARM_64,
    "x86_64": lambda_.Architecture.X86_64,
}


@dataclass(frozen=True, kw_only=True)
class NextImageOptimizerProps:
    """Everything a deployment chooses; defaults suit a typical Next.js 16 app on arm64."""

    app_origin_domain: str | None = None
    """The app's origin host (``app.example.com``). Relative image URLs are fetched from
    ``https://<host>``; a distribution created here sends everything but images to it."""
    distribution: cloudfront.Distribution | None = None
    """Add the image behaviours to this distribution instead of creating one."""
    images_config: Mapping[str, Any] | None = None
    """The ``images`` object of next.config.js. Alternative: ``next_dir``."""
    next_dir: Path | None = None
    """The built app's ``.next`` folder; its resolved images config is read at synth time."""
    assets_bucket: s3.IBucket | None = None
    """Bucket holding ``public/`` and ``_next/static/media`` for relative URLs (read-only)."""
    assets_prefix: str = ""
    public_dir: Path | None = None
    """Upload this ``public/`` folder (and ``next_dir``'s ``static/media``) to the assets
    bucket, created here if ``assets_bucket`` is not given."""
    architecture: Arch = "arm64"
    python_version: PythonVersion = "3.13"
    memory_mib: int = 2048
    timeout_seconds: int = 25
    request_budget_seconds: float | None = None
    """``NEXT_IMAGE_TIMEOUT``; defaults to five seconds under ``timeout_seconds``."""
    origin_read_timeout_seconds: int = 30
    max_attempts: int | None = None
    variant_expiry_days: int = 30
    variants_prefix: str = ""
    """Key prefix in the variants bucket: empty, or ending in ``/`` (CloudFront's origin path)."""
    snap_start: bool = True
    fast_first_view_seconds: float | None = None
    """``NEXT_IMAGE_FAST_FIRST_VIEW``: an AVIF miss planned to take longer is answered with WebP
    for 10 s, and the AVIF is produced by an asynchronous invocation of the function (granted
    here). None: Next's behaviour, every AVIF miss waits for its AVIF."""
    animated: Literal["passthrough", "webp"] = "passthrough"
    """``NEXT_IMAGE_ANIMATED``: ``webp`` resizes animated GIF and WebP frame by frame to animated
    WebP for browsers that accept WebP; ``passthrough``: Next's behaviour, served as they are."""
    layer_arns: Sequence[str] = ()
    """Published layers holding pyvips and the function's dependencies (first choice)."""
    layer_zips: Sequence[Path] = ()
    """Layer zips, e.g. a release's ``pyvips-arm64-python3.13.zip`` and ``deps-...`` (second)."""
    layers_dir: Path | None = None
    """A folder built by ``python -m layers.build_layer`` (``layers-<arch>.json`` and its zips)."""
    layers_cache_dir: Path | None = None
    """Otherwise the layers are built from the pinned wheels into this cache and reused; default
    ``$NEXT_IMAGE_CDK_CACHE``, else ``$XDG_CACHE_HOME/next-image-cdk``, else ``~/.cache/...``."""
    handler_dir: Path = FUNCTION_CODE
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    origin_shield_region: str | None = None
    """Put CloudFront Origin Shield in this region (the function's, e.g. ``eu-west-1``) in front
    of the function: one more cache layer, so a variant asked for through several regional edge
    caches at once is transformed once. Costs a charge per request that reaches it. None: off."""
    monitoring: bool = True
    """Alarms and a CloudWatch dashboard (``NextImageOptimizer.monitoring``)."""
    alarm_topic: sns.ITopic | None = None
    """Where the alarms notify (alarm and OK); None: they only change state."""
    metrics_service: str = METRICS_SERVICE
    """The ``service`` dimension of the function's EMF metrics (``POWERTOOLS_SERVICE_NAME``),
    which the alarms read: give each optimizer in one account and region its own."""
    static_site_dir: Path | None = None
    """A static export's ``out/`` folder (``output: 'export'``, images with ``next-image
    loader``'s module): uploaded to a private site bucket that the created distribution's
    default behaviour serves (a CloudFront Function maps ``/about`` or ``/about/`` to the file
    ``trailingSlash`` gave it; a missing path answers ``404.html`` with a 404), and read by the
    function as its assets. Instead of ``app_origin_domain``, ``public_dir`` and
    ``distribution``; give ``next_dir`` (the export's ``.next``) for its images config."""

    def __post_init__(self) -> None:
        """Paths may be given as strings, as a CDK app's keyword arguments often are."""
        paths = ("next_dir", "public_dir", "layers_dir", "layers_cache_dir", "handler_dir")
        for name in (*paths, "static_site_dir"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "layer_zips", tuple(Path(z) for z in self.layer_zips))
        object.__setattr__(self, "layer_arns", tuple(self.layer_arns))


def validate(props: NextImageOptimizerProps) -> float:
    """Fail at synth on settings that would only break at request time; returns the budget."""
    budget = props.request_budget_seconds
    if budget is None:
        budget = props.timeout_seconds - 5
    if not 0 < budget < props.timeout_seconds < props.origin_read_timeout_seconds:
        raise ValueError(
            "need request budget < function timeout < CloudFront origin read timeout, got "
            f"{budget} < {props.timeout_seconds} < {props.origin_read_timeout_seconds}"
        )
    prefix = props.variants_prefix
    if prefix and (not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix):
        raise ValueError(f"variants_prefix must be empty or like 'site/', got {prefix!r}")
    if props.static_site_dir is not None:
        _validate_static_site(props)
    elif props.distribution is None and not props.app_origin_domain:
        raise ValueError(
            "app_origin_domain is required when the construct creates the distribution"
        )
    if props.app_origin_domain and "/" in props.app_origin_domain:
        raise ValueError("app_origin_domain is a host name, without scheme or path")
    region = props.origin_shield_region
    if region is not None and not REGION.fullmatch(region):
        raise ValueError(f"origin_shield_region is a region code like 'eu-west-1', got {region!r}")
    if props.alarm_topic is not None and not props.monitoring:
        raise ValueError("alarm_topic is given but monitoring is off")
    if props.animated not in ("passthrough", "webp"):
        raise ValueError(f"animated is 'passthrough' or 'webp', got {props.animated!r}")
    return budget


def _validate_static_site(props: NextImageOptimizerProps) -> None:
    """A static export is the whole site: its folder is the origin and holds the assets."""
    assert props.static_site_dir is not None
    others = {
        "distribution": "its default behaviour serves the site",
        "app_origin_domain": "the site is served from its bucket",
        "public_dir": "out/ holds public/ and _next/static/media already",
        "assets_bucket": "the site bucket holds the assets",
        "assets_prefix": "the site bucket holds the assets",
    }
    given = [name for name in others if getattr(props, name)]
    if given:
        raise ValueError(f"static_site_dir excludes {given[0]}: {others[given[0]]}")
    if not (props.static_site_dir / "index.html").is_file():
        raise ValueError(
            f"static_site_dir {props.static_site_dir} has no index.html: give the out/ folder "
            "of a `next build` with output: 'export'"
        )


# Left out of the function's code: bytecode, and ``handler/commands`` (the CLI, never run on
# Lambda).
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "commands")


def stage_function_code(handler_dir: Path, config: BundledConfig) -> Path:
    """A folder holding only the ``handler`` package and the images config: the function code."""
    staging = Path(tempfile.mkdtemp(prefix="next-image-code-"))
    shutil.copytree(handler_dir, staging / "handler", ignore=NOT_SHIPPED)
    (staging / CONFIG_DIR).mkdir()
    (staging / CONFIG_DIR / config.filename).write_text(
        json.dumps(config.content, indent=1, sort_keys=True) + "\n"
    )
    return staging


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


class NextImageOptimizer(Construct):
    """The function, its buckets, its Function URL and the CloudFront behaviours in front."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        props: NextImageOptimizerProps | None = None,
        **options: Any,
    ) -> None:
        """``options`` are ``NextImageOptimizerProps``'s fields; or pass a ``props`` record."""
        if props is not None and options:
            raise TypeError("pass either props or keyword arguments, not both")
        props = props or NextImageOptimizerProps(**options)
        super().__init__(scope, construct_id)
        budget = validate(props)
        self.props = props
        self.images = bundle_images_config(props.images_config, props.next_dir)
        media = props.next_dir / "static" / "media" if props.next_dir is not None else None
        if props.static_site_dir is not None and props.next_dir and not self.images.export:
            raise ValueError(f"next_dir {props.next_dir} is not a build with output: 'export'")
        public = props.public_dir or props.static_site_dir
        self.generation = deploy_generation(self.images, public, media)
        self.bucket = self._variants_bucket()
        self.site_bucket = self._site_bucket()
        self.assets_bucket = self._assets_bucket()
        self.function = self._function(budget)
        self.alias = self.function.add_alias("live")
        if props.fast_first_view_seconds is not None:
            self._configure_self_invocations()
        self.function_url = self.alias.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.AWS_IAM
        )
        self.distribution = props.distribution or self._distribution()
        self._add_behaviours(self.distribution)
        if self.site_bucket is not None and props.static_site_dir is not None:
            site = [s3deploy.Source.asset(str(props.static_site_dir))]
            prefix = self.images.base_path.lstrip("/") + "/" if self.images.base_path else ""
            self._deploy(self.site_bucket, site, prefix, "DeploySite", self.distribution)
        # A deploy that changed the generation: CloudFront forgets the image answers once the
        # new assets and the new version are in place (next_image_cdk/redeploy.py).
        deploys = ("DeployPublic", "DeployMedia", "DeploySite")
        uploads = [self.node.try_find_child(n) for n in deploys]
        self.invalidation = invalidate_on_deploy(
            self,
            generation=self.generation,
            distribution=self.distribution,
            base_path=self.images.base_path,
            version=self.alias.version,
            after=[self.alias, *(upload for upload in uploads if upload is not None)],
        )
        self.monitoring: OptimizerMonitoring | None = None
        if props.monitoring:
            self.monitoring = OptimizerMonitoring(
                self,
                "Monitoring",
                function=self.function,
                timeout_seconds=props.timeout_seconds,
                service=props.metrics_service,
                distribution=self.distribution,
                alarm_topic=props.alarm_topic,
            )

    def _variants_bucket(self) -> s3.Bucket:
        prefix = self.props.variants_prefix
        expiry = Duration.days(self.props.variant_expiry_days)
        bucket = self._private_bucket(
            "Variants",
            lifecycle_rules=[
                s3.LifecycleRule(id="ExpireVariants", prefix=prefix + VARIANTS, expiration=expiry),
                s3.LifecycleRule(id="ExpirePointers", prefix=prefix + POINTERS, expiration=expiry),
                s3.LifecycleRule(id="ExpireSources", prefix=prefix + SOURCES, expiration=expiry),
                s3.LifecycleRule(
                    id="AbortUploads", abort_incomplete_multipart_upload_after=Duration.days(1)
                ),
            ],
        )
        acknowledge(
            bucket,
            "AwsSolutions-S1",
            "A derived, content-addressed cache: every object can be rebuilt and reads are "
            "already visible in CloudFront and Lambda logs, so S3 access logs add cost, not audit.",
        )
        return bucket

    def _private_bucket(
        self, construct_id: str, lifecycle_rules: list[s3.LifecycleRule] | None = None
    ) -> s3.Bucket:
        """No public access, no ACLs, encrypted, SSL only, kept when the stack goes."""
        return s3.Bucket(
            self,
            construct_id,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=lifecycle_rules,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _site_bucket(self) -> s3.Bucket | None:
        """A static export's files, read by CloudFront (the default behaviour) and the function."""
        if self.props.static_site_dir is None:
            return None
        bucket = self._private_bucket("Site")
        acknowledge(
            bucket,
            "AwsSolutions-S1",
            "Holds the static export's build output, written only by this stack's deployment; "
            "CloudFront's logs (the app's choice) record its reads.",
        )
        return bucket

    def _assets_bucket(self) -> s3.IBucket | None:
        props = self.props
        bucket = props.assets_bucket
        if self.site_bucket is not None:
            return self.site_bucket  # uploaded after the distribution: it invalidates the pages
        if props.public_dir is None:
            return bucket
        if bucket is None:
            created = self._private_bucket("Assets")
            acknowledge(
                created,
                "AwsSolutions-S1",
                "Holds copies of the app's build output, written only by this stack's deployment.",
            )
            bucket = created
        sources = [s3deploy.Source.asset(str(props.public_dir))]
        if props.next_dir is not None and (props.next_dir / "static" / "media").is_dir():
            sources.append(s3deploy.Source.asset(str(props.next_dir / "static" / "media")))
        self._deploy(bucket, sources[:1], props.assets_prefix, "DeployPublic")
        if len(sources) > 1:
            self._deploy(
                bucket, sources[1:], props.assets_prefix + "_next/static/media/", "DeployMedia"
            )
        return bucket

    def _deploy(
        self,
        bucket: s3.IBucket,
        sources: list[s3deploy.ISource],
        prefix: str,
        name: str,
        invalidate: cloudfront.IDistribution | None = None,
    ) -> None:
        """Copy ``sources`` under ``prefix``; with ``invalidate``, CloudFront forgets every path
        once they are there (a static site's pages). Nothing is pruned: a page open in a browser
        still finds the chunks of the build it was served from."""
        deployment = s3deploy.BucketDeployment(
            self,
            name,
            destination_bucket=bucket,
            destination_key_prefix=prefix or None,
            sources=sources,
            prune=False,
            memory_limit=512,
            distribution=invalidate,
            distribution_paths=["/*"] if invalidate is not None else None,
        )
        handler_role = deployment.handler_role
        reason = (
            "CDK's BucketDeployment provider: a deploy-time custom resource that copies the app's "
            "files from the CDK asset bucket; its runtime and policy are managed by aws-cdk-lib."
        )
        for rule in BUCKET_DEPLOYMENT_FINDINGS:
            acknowledge(handler_role, rule, reason)
        if invalidate is not None:
            acknowledge(
                handler_role,
                "AwsSolutions-IAM5[Resource::*]",
                "CDK's BucketDeployment creates and reads the site's CloudFront invalidation; "
                "CloudFront's invalidation actions take no narrower resource in its policy.",
            )
        if handler_role.node.scope is not None:
            acknowledge(handler_role.node.scope, "AwsSolutions-L1", reason)
        arn = self._arn_in_findings(bucket, bucket.bucket_arn)
        acknowledge(handler_role, f"AwsSolutions-IAM5[Resource::{arn}/*]", reason)

    def _function(self, budget: float) -> lambda_.Function:
        props = self.props
        runtime = RUNTIMES[props.python_version]
        architecture = ARCHITECTURES[props.architecture]
        layers = self._layers(runtime, architecture)
        log_group = logs.LogGroup(
            self, "Logs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="next-image optimizer: its log group and its S3 prefixes, nothing else",
        )
        log_group.grant_write(role)
        self._grant_s3(role)
        environment = {
            "NEXT_IMAGE_STORE": "s3",
            "NEXT_IMAGE_BUCKET": self.bucket.bucket_name,
            "NEXT_IMAGE_PREFIX": props.variants_prefix,
            "NEXT_IMAGE_CONFIG": f"{TASK_ROOT}/{CONFIG_DIR}/{self.images.filename}",
            "NEXT_IMAGE_TIMEOUT": f"{budget:g}",
            GENERATION_ENV: self.generation,
            # The handler's defaults, stated: the alarms read the metrics under these names.
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_SERVICE_NAME": props.metrics_service,
        }
        if props.app_origin_domain:
            environment["NEXT_IMAGE_ORIGIN"] = f"https://{props.app_origin_domain}"
        if self.assets_bucket is not None:
            environment["NEXT_IMAGE_ASSETS_BUCKET"] = self.assets_bucket.bucket_name
            environment["NEXT_IMAGE_ASSETS_PREFIX"] = props.assets_prefix
        if props.max_attempts is not None:
            environment["NEXT_IMAGE_MAX_ATTEMPTS"] = str(props.max_attempts)
        if props.fast_first_view_seconds is not None:
            environment["NEXT_IMAGE_FAST_FIRST_VIEW"] = f"{props.fast_first_view_seconds:g}"
        if props.animated != "passthrough":
            environment["NEXT_IMAGE_ANIMATED"] = props.animated
        function = lambda_.Function(
            self,
            "Function",
            runtime=runtime,
            architecture=architecture,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(stage_function_code(props.handler_dir, self.images))),
            layers=layers,
            memory_size=props.memory_mib,
            timeout=Duration.seconds(props.timeout_seconds),
            environment=environment,
            role=role,
            log_group=log_group,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if props.snap_start else None,
            description="Next.js /_next/image optimizer (FastAPI + pyvips)",
        )
        if props.fast_first_view_seconds is not None:
            self._grant_self_invoke(function, role)
        Annotations.of(function).acknowledge_warning(
            "@aws-cdk/aws-lambda:snapStartRequirePublish",
            "Versions are published: the 'live' alias that CloudFront invokes points at one.",
        )
        if runtime.name != LATEST_PYTHON.name:
            acknowledge(
                function,
                "AwsSolutions-L1",
                f"python{props.python_version} is chosen to match the layers built for it "
                "(make layer PYTHON_VERSION=...); any 3.12+ runtime works with pyvips-binary.",
            )
        return function

    def _layers(
        self, runtime: lambda_.Runtime, architecture: lambda_.Architecture
    ) -> list[lambda_.ILayerVersion]:
        """The user's layer ARNs, else the user's zips, else a built folder, else the cache."""
        props = self.props
        if props.layer_arns:
            return [
                lambda_.LayerVersion.from_layer_version_arn(self, f"Layer{index}", arn)
                for index, arn in enumerate(props.layer_arns)
            ]
        if props.layer_zips:
            zips = {zip_path.stem: zip_path for zip_path in props.layer_zips}
        elif props.layers_dir is not None:
            zips = read_manifest(props.layers_dir, props.architecture, props.python_version)
        else:
            zips = cached_layers(props.architecture, props.python_version, props.layers_cache_dir)
        return [
            lambda_.LayerVersion(
                self,
                f"{name.split('-', 1)[0].capitalize()}Layer",
                code=lambda_.Code.from_asset(str(zip_path)),
                compatible_runtimes=[runtime],
                compatible_architectures=[architecture],
                description=f"{name} for python{props.python_version} on {props.architecture}",
            )
            for name, zip_path in zips.items()
        ]

    def _grant_self_invoke(self, function: lambda_.Function, role: iam.Role) -> None:
        """Fast first view: the function queues the deferred AVIF as an asynchronous invocation
        of its own running version. A policy of its own (not the role's default policy, which
        the function depends on) keeps the template free of a dependency cycle."""
        policy = iam.Policy(
            self,
            "InvokeSelf",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"],
                    resources=[function.function_arn, f"{function.function_arn}:*"],
                )
            ],
        )
        arn = self._arn_in_findings(function, function.function_arn)
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{arn}:*]",
            "The function's own versions and aliases: it invokes the version that is running.",
        )

    def _configure_self_invocations(self) -> None:
        """No retries and a short life for the produce events, on the version that is invoked.

        The handler (``handler/entry/self_invoke.py``) invokes the version it runs as
        (``AWS_LAMBDA_FUNCTION_VERSION``): the published version behind ``live``, so the
        settings go on that qualifier; settings on the alias or the bare function would not apply
        to it. ``$LATEST`` gets the same, for a function invoked unqualified (a console test).
        A failed produce is not retried: the next request for the image defers it again. (A
        deploy moves the config to the new version; the few events an old instance queues for
        its own version in the minute after get Lambda's defaults.)
        """
        for target in (self.alias.version, self.function):
            target.configure_async_invoke(retry_attempts=0, max_event_age=SELF_INVOKE_MAX_EVENT_AGE)

    def _grant_s3(self, role: iam.Role) -> None:
        """Read/write on the three variant-store prefixes, read on the assets prefix; no more."""
        prefix = self.props.variants_prefix
        self._grant_prefixes(
            role,
            self.bucket,
            [prefix + VARIANTS, prefix + POINTERS, prefix + SOURCES],
            ["s3:GetObject", "s3:PutObject"],
        )
        if self.assets_bucket is not None:
            self._grant_prefixes(
                role, self.assets_bucket, [self.props.assets_prefix], ["s3:GetObject"]
            )

    def _grant_prefixes(
        self, role: iam.Role, bucket: s3.IBucket, prefixes: list[str], actions: list[str]
    ) -> None:
        patterns = [p + "*" for p in prefixes]
        role.add_to_policy(
            iam.PolicyStatement(
                actions=actions, resources=[bucket.arn_for_objects(p) for p in patterns]
            )
        )
        # ListBucket, limited to the same prefixes, makes a missing key a 404 instead of a 403.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": patterns}},
            )
        )
        arn = self._arn_in_findings(bucket, bucket.bucket_arn)
        for pattern in patterns:
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{arn}/{pattern}]",
                "Keys are content hashes or app asset paths under this one prefix; the wildcard "
                "is the prefix boundary, not a wider grant.",
            )

    def _arn_in_findings(self, resource: IConstruct, arn: str) -> str:
        """How cdk-nag spells an ARN in a finding: ``<LogicalId.Arn>`` or the literal."""
        stack = Stack.of(self)
        child = resource.node.default_child
        if isinstance(child, CfnResource):
            return f"<{stack.resolve(stack.get_logical_id(child))}.Arn>"
        return str(stack.resolve(arn))

    def _distribution(self) -> cloudfront.Distribution:
        default, comment = self._site_behaviour(), "Next.js static export with /_next/image"
        if default is None:
            comment = "Next.js app with /_next/image on Lambda"
            origin = origins.HttpOrigin(
                self.props.app_origin_domain or "",
                protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            )
            default = cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
            )
        # Distribution-wide (CloudFront has no per-behaviour error caching), so only on the
        # distribution created here: a user's own keeps its error responses.
        errors = [
            cloudfront.ErrorResponse(
                http_status=status, ttl=Duration.seconds(ERROR_CACHING_SECONDS)
            )
            for status in TRANSIENT_ERRORS
        ]
        if self.site_bucket is not None:  # a static host's 404 page (every path: an image too)
            errors.insert(
                0,
                cloudfront.ErrorResponse(
                    http_status=404,
                    response_http_status=404,
                    response_page_path=f"{self.images.base_path}/404.html",
                    ttl=Duration.seconds(SITE_NOT_FOUND_SECONDS),
                ),
            )
        distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=comment,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            default_behavior=default,
            error_responses=errors,
        )
        for rule, reason in CREATED_DISTRIBUTION_FINDINGS.items():
            acknowledge(distribution, rule, reason)
        return distribution

    def _site_behaviour(self) -> cloudfront.BehaviorOptions | None:
        """A static export's default behaviour: its bucket (read and list, so a missing key is
        a 404, not a 403) behind the function that maps paths to the export's files."""
        if self.site_bucket is None:
            return None
        paths = cloudfront.Function(
            self,
            "StaticSitePaths",
            code=cloudfront.FunctionCode.from_inline(
                render_static_site_function(self.images.trailing_slash, self.images.base_path)
            ),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            comment="A static export's paths -> its files (/about -> about.html)",
        )
        return cloudfront.BehaviorOptions(
            origin=origins.S3BucketOrigin.with_origin_access_control(
                self.site_bucket,
                origin_access_levels=[cloudfront.AccessLevel.READ, cloudfront.AccessLevel.LIST],
            ),
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
            cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD,
            cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
            compress=True,
            function_associations=[
                cloudfront.FunctionAssociation(
                    function=paths, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                )
            ],
        )

    def _add_behaviours(self, distribution: cloudfront.Distribution) -> None:
        props = self.props
        accept = cloudfront.Function(
            self,
            "NormalizeAccept",
            code=cloudfront.FunctionCode.from_inline(
                render_accept_function(self.images.formats, animated_webp=props.animated == "webp")
            ),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            comment="Accept -> the one format Next would negotiate (cache key)",
        )
        image_policy = cloudfront.CachePolicy(
            self,
            "ImageCachePolicy",
            comment="/_next/image: url, w, q, dpl and the normalised Accept",
            query_string_behavior=cloudfront.CacheQueryStringBehavior.allow_list(*CACHE_KEY_QUERY),
            header_behavior=cloudfront.CacheHeaderBehavior.allow_list("Accept"),
            cookie_behavior=cloudfront.CacheCookieBehavior.none(),
            min_ttl=Duration.seconds(0),
            default_ttl=Duration.days(1),
            max_ttl=Duration.days(365),
            enable_accept_encoding_gzip=False,
            enable_accept_encoding_brotli=False,
        )
        distribution.add_behavior(
            self.images.base_path + IMAGE_PATH,
            origins.FunctionUrlOrigin.with_origin_access_control(
                self.function_url,
                read_timeout=Duration.seconds(props.origin_read_timeout_seconds),
                # Not on the variants' S3 origin: an S3 GET costs less than Origin Shield's
                # request charge, and S3 needs no shielding from a few parallel reads.
                origin_shield_region=props.origin_shield_region,
            ),
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
            cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD,
            cache_policy=image_policy,
            compress=False,
            function_associations=[
                cloudfront.FunctionAssociation(
                    function=accept, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                )
            ],
        )
        self._add_variants_behaviour(distribution)

    def _add_variants_behaviour(self, distribution: cloudfront.Distribution) -> None:
        """Oversize variants: the function answers 302 here and CloudFront reads them from S3."""
        prefix = self.props.variants_prefix.rstrip("/")
        # An imported view of the bucket, so CDK does not add its bucket-wide read grant;
        # the statement below allows only the variants prefix, and only to this distribution.
        view = s3.Bucket.from_bucket_attributes(
            self,
            "VariantsForCloudFront",
            bucket_arn=self.bucket.bucket_arn,
            bucket_regional_domain_name=self.bucket.bucket_regional_domain_name,
        )
        Annotations.of(distribution).acknowledge_warning(
            "@aws-cdk/aws-cloudfront-origins:updateImportedBucketPolicyOac",
            "NextImageOptimizer grants CloudFront read on the variants prefix itself.",
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudfront.amazonaws.com")],
                actions=["s3:GetObject"],
                resources=[
                    self.bucket.arn_for_objects(self.props.variants_prefix + VARIANTS + "*")
                ],
                conditions={"StringEquals": {"AWS:SourceArn": distribution.distribution_arn}},
            )
        )
        policy = cloudfront.CachePolicy(
            self,
            "VariantsCachePolicy",
            comment="Stored image variants: immutable, keyed on the path only",
            query_string_behavior=cloudfront.CacheQueryStringBehavior.none(),
            header_behavior=cloudfront.CacheHeaderBehavior.none(),
            cookie_behavior=cloudfront.CacheCookieBehavior.none(),
            min_ttl=Duration.seconds(0),
            default_ttl=Duration.days(365),
            max_ttl=Duration.days(365),
        )
        csp = str(self.images.images.get("contentSecurityPolicy", DEFAULT_CSP))
        headers = cloudfront.ResponseHeadersPolicy(
            self,
            "VariantsHeaders",
            comment="The headers Next sends with an image that S3 metadata cannot carry",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=csp, override=True
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
            ),
        )
        distribution.add_behavior(
            VARIANTS_PATH,
            origins.S3BucketOrigin.with_origin_access_control(
                view,
                origin_path=f"/{prefix}" if prefix else None,
                origin_access_levels=[cloudfront.AccessLevel.READ],
            ),
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
            cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD,
            cache_policy=policy,
            response_headers_policy=headers,
            compress=False,
        )
