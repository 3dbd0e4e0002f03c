"""``next-image local-cdn``: the CloudFront distribution of a synthesized template, on one machine.

One module per job: ``intrinsics`` (CloudFormation functions), ``policies`` (cache, origin request
and response headers policies), ``template`` (reading the distribution, refusing what cannot be
emulated), ``paths`` (behaviour selection), ``cache`` (cache key, TTL, the edge cache),
``functions`` (CloudFront Functions under Node.js), ``http`` (requests and responses),
``origins`` (the app's custom origin), ``lambda_url`` (the Function URL origin), ``s3`` (buckets
and the S3 origin), ``edge`` (what CloudFront does with one request), ``server`` (ASGI and
uvicorn) and ``command`` (the CLI entry).
"""
