"""A Next.js-compatible ``/_next/image`` optimizer: Starlette + pyvips, runnable on AWS Lambda."""
