"""``next-image local-cdn``: the CloudFront distribution of a synthesized template, on one machine
(docs/local-cdn.md).

One module per job: ``intrinsics``, ``policies``, ``template`` (what can be emulated), ``paths``
(behaviours), ``cache``, ``functions`` (CloudFront Functions under Node.js), ``http``, ``origins``,
``lambda_url`` (the Function URL origin), ``s3``, ``edge`` (one request), ``server`` (ASGI and
uvicorn) and ``command`` (the CLI entry)."""
