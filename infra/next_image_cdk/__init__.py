"""``NextImageOptimizer``: Next.js ``/_next/image`` on Lambda behind CloudFront, for any CDK app.

from next_image_cdk import NextImageOptimizer
NextImageOptimizer(self, "Images", distribution=my_distribution,
                   app_origin_domain="app.example.com", next_dir="web/.next")
"""

from next_image_cdk.construct import NextImageOptimizer, NextImageOptimizerProps
from next_image_cdk.stack import NextImageStack

__version__ = "0.3.0"

__all__ = ["NextImageOptimizer", "NextImageOptimizerProps", "NextImageStack", "__version__"]
