"""Alarms and a dashboard for the optimizer: the function's Lambda metrics and its own EMF.

The EMF metrics are the ones ``handler/http/observability.py`` writes: namespace ``NextImage``,
one dimension, ``service`` (``POWERTOOLS_METRICS_NAMESPACE`` / ``POWERTOOLS_SERVICE_NAME``, which
the construct sets on the function to the values read here), and the names of the EMF views in
``handler/http/metrics.py``. ``tests/system/test_infra.py`` holds these names to that module, so
a renamed metric fails the synth tests instead of leaving an alarm that never fires.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

METRICS_NAMESPACE = "NextImage"  # handler.http.observability.NAMESPACE
METRICS_SERVICE = (
    "next-image"  # handler.http.observability.SERVICE: the EMF's one dimension's value
)
SERVICE_DIMENSION = "service"  # the dimension Powertools gives every metric
# EMF views of handler/http/metrics.py: REQUESTS (all, by cache result, by status) ...
REQUESTS = "Requests"
HITS = "Hits"
MISSES = "Misses"
SERVER_ERRORS = "Errors"  # status 5..
REDIRECTS = "Redirects"
# ... ERRORS (one per category of handler/contract/errors.py, "<Category>Errors") ...
OVERLOAD_ERRORS = "OverloadErrors"  # 503 busy, from admission control
STORE_ERRORS = "StoreErrors"  # 503: an oversize variant the store could not confirm
CATEGORY_ERRORS = (
    "ValidationErrors",
    "UpstreamErrors",
    "TimeoutErrors",
    OVERLOAD_ERRORS,
    "PipelineErrors",
    STORE_ERRORS,
    "InternalErrors",
)
# ... and the time histograms.
TOTAL_MS = "TotalMs"
TRANSFORM_MS = "TransformMs"

PERIOD = Duration.minutes(5)
DURATION_SHARE = 0.8  # p99 duration above this share of the timeout
SERVER_ERROR_PERCENT = 5.0
OVERLOAD_PERCENT = 1.0
MIN_REQUESTS = 20  # per period: below it a rate is not computed (one 5xx in 3 is not 33%)


class OptimizerMonitoring(Construct):
    """Six alarms (``alarms``, by name) and a ``dashboard`` showing them and what they read."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.Function,
        timeout_seconds: int,
        service: str = METRICS_SERVICE,
        distribution: cloudfront.IDistribution | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.service = service
        self._action = cloudwatch_actions.SnsAction(alarm_topic) if alarm_topic else None
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        timeout_ms = timeout_seconds * 1000
        self._alarm(
            "FunctionErrors",
            function.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="The function failed outright: a crash, an out-of-memory kill or a "
            "timeout. It answers every failure it handles itself, so each of these is a bug or "
            "a memory or time setting too small.",
        )
        self._alarm(
            "Throttles",
            function.metric_throttles(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="Lambda refused invocations for want of concurrency: viewers got errors "
            "for images. Raise the account's or the function's concurrency.",
        )
        self._alarm(
            "Duration",
            function.metric_duration(period=PERIOD, statistic="p99"),
            threshold=DURATION_SHARE * timeout_ms,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            datapoints=2,
            description=f"p99 duration above {DURATION_SHARE:.0%} of the {timeout_seconds} s "
            "timeout: requests are running into their time budget. More memory (more CPU) or "
            "smaller sources.",
        )
        self.server_error_rate = self._rate_alarm(
            "ServerErrorRate",
            ("5xx %", SERVER_ERRORS, SERVER_ERROR_PERCENT),
            f"More than {SERVER_ERROR_PERCENT:g}% of /_next/image requests answered 5xx (of at "
            f"least {MIN_REQUESTS} requests in 5 minutes): a failing source (502), timeouts "
            "(504), overload (503) or a bug (500). The log lines' error_category says which.",
        )
        self.overload_rate = self._rate_alarm(
            "OverloadRate",
            ("503 busy %", OVERLOAD_ERRORS, OVERLOAD_PERCENT),
            f"More than {OVERLOAD_PERCENT:g}% of requests refused as busy (503): an instance "
            "cannot transform these images within their budget. More memory, or a longer timeout.",
        )
        self._alarm(
            "StoreErrors",
            self._emf(STORE_ERRORS),
            threshold=1,
            description="An oversize variant could not be stored in S3, so its request got a "
            "503 instead of a redirect: S3 failing or denying writes.",
        )
        self.dashboard = self._dashboard(function, timeout_ms, distribution)

    def _emf(self, name: str, statistic: str = "Sum") -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={SERVICE_DIMENSION: self.service},
            statistic=statistic,
            period=PERIOD,
            label=name,
        )

    def _rate(self, label: str, errors: str) -> cloudwatch.MathExpression:
        """Percent of requests; nothing below ``MIN_REQUESTS``, where a rate says little."""
        part = errors.lower()  # ids are per graph: the two rates share one
        return cloudwatch.MathExpression(
            expression=f"IF(requests >= {MIN_REQUESTS}, 100 * FILL({part}, 0) / requests, 0)",
            using_metrics={"requests": self._emf(REQUESTS), part: self._emf(errors)},
            label=label,
            period=PERIOD,
        )

    def _rate_alarm(
        self, name: str, rate: tuple[str, str, float], description: str
    ) -> cloudwatch.MathExpression:
        """An alarm on ``(label, errors, percent)``: more than ``percent`` of requests answered
        ``errors``, in two of the last three periods. Returns the rate, for the dashboard."""
        label, errors, percent = rate
        metric = self._rate(label, errors)
        self._alarm(
            name,
            metric,
            threshold=percent,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            datapoints=2,
            description=description,
        )
        return metric

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        ),
        datapoints: int = 1,
    ) -> None:
        """``datapoints`` of the last three 5-minute periods (one: of the last one)."""
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=3 if datapoints > 1 else 1,
            datapoints_to_alarm=datapoints,
            # No requests, no errors: the EMF counts are written only when something happened.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        if self._action is not None:
            alarm.add_alarm_action(self._action)
            alarm.add_ok_action(self._action)
        self.alarms[name] = alarm

    def _dashboard(
        self,
        function: lambda_.Function,
        timeout_ms: int,
        distribution: cloudfront.IDistribution | None,
    ) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(6))
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="next-image alarms", alarms=list(self.alarms.values()), width=24, height=3
            )
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="/_next/image requests",
                left=[self._emf(name) for name in (REQUESTS, HITS, MISSES, REDIRECTS)],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="5xx and 503 busy, % of requests",
                left=[self.server_error_rate, self.overload_rate],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=SERVER_ERROR_PERCENT, label="5xx alarm"),
                    cloudwatch.HorizontalAnnotation(value=OVERLOAD_PERCENT, label="busy alarm"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Errors by category",
                left=[self._emf(name) for name in CATEGORY_ERRORS],
                stacked=True,
                width=8,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Function invocations, errors, throttles",
                left=[
                    function.metric_invocations(period=PERIOD, statistic="Sum"),
                    function.metric_errors(period=PERIOD, statistic="Sum"),
                    function.metric_throttles(period=PERIOD, statistic="Sum"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Function duration (ms)",
                left=[
                    function.metric_duration(period=PERIOD, statistic=statistic)
                    for statistic in ("p50", "p99", "Maximum")
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=DURATION_SHARE * timeout_ms, label="duration alarm"
                    ),
                    cloudwatch.HorizontalAnnotation(value=timeout_ms, label="timeout"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Request and transform time (ms)",
                left=[
                    self._emf(name, statistic)
                    for name in (TOTAL_MS, TRANSFORM_MS)
                    for statistic in ("p50", "p99")
                ],
                width=8,
            ),
        )
        if distribution is not None:
            dashboard.add_widgets(*self._cloudfront_widgets(distribution))
        return dashboard

    def _cloudfront_widgets(
        self, distribution: cloudfront.IDistribution
    ) -> list[cloudwatch.IWidget]:
        """What viewers saw, the app's paths included (CloudFront's metrics are per
        distribution, and live in us-east-1, so they can be shown here but not alarmed on)."""

        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/CloudFront",
                metric_name=name,
                dimensions_map={"DistributionId": distribution.distribution_id, "Region": "Global"},
                region="us-east-1",
                statistic=statistic,
                period=PERIOD,
            )

        return [
            cloudwatch.GraphWidget(
                title="Distribution requests (all paths)",
                left=[metric("Requests", "Sum")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Distribution error rates % (all paths)",
                left=[metric("5xxErrorRate", "Average"), metric("4xxErrorRate", "Average")],
                width=12,
            ),
        ]
