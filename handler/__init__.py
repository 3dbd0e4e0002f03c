"""A Next.js-compatible ``/_next/image`` optimizer: FastAPI + pyvips, runnable on AWS Lambda."""

__version__ = "0.3.0"
