"""A stack with a new distribution in front of the app's origin and the optimizer behind it."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from next_image_cdk.construct import NextImageOptimizer, NextImageOptimizerProps


class NextImageStack(Stack):
    """What ``cdk deploy`` creates; the optimizer's outputs are the ones a deployer needs."""

    def __init__(
        self, scope: Construct, construct_id: str, props: NextImageOptimizerProps, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.optimizer = NextImageOptimizer(self, "NextImage", props=props)
        distribution = self.optimizer.distribution
        CfnOutput(
            self,
            "DistributionDomainName",
            value=distribution.distribution_domain_name,
            description="Point your domain (CNAME/alias) here, or use it as is",
        )
        CfnOutput(self, "DistributionId", value=distribution.distribution_id)
        CfnOutput(self, "FunctionName", value=self.optimizer.function.function_name)
        CfnOutput(self, "VariantsBucketName", value=self.optimizer.bucket.bucket_name)
        if self.optimizer.site_bucket is not None:
            CfnOutput(self, "SiteBucketName", value=self.optimizer.site_bucket.bucket_name)
