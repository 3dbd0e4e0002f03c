"""The ``next-image`` commands (serve, warm, invoke, local-cdn, purge, loader).

Not needed at run time: the function's code is ``handler/`` without this package."""
