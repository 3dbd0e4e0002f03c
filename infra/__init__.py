"""The CDK app (``infra.app``) and the reusable ``NextImageOptimizer`` construct."""
