"""Reusable CDK constructs for serving Next.js ``/_next/image`` from Lambda."""

from infra.next_image.construct import NextImageOptimizer, NextImageOptimizerProps
from infra.next_image.stack import NextImageStack

__all__ = ["NextImageOptimizer", "NextImageOptimizerProps", "NextImageStack"]
