"""``next-image warm``: store the variants an app will ask for before its first visitor does.

One module per job: ``images`` (which images, and the variant requests a browser would make for
each), ``worker`` (one process's optimizer, asked for one variant as a request would) and
``command`` (the worker processes, progress bar, summary and exit code).
"""
