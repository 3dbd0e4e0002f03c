"""Where pointers, variants and kept sources live: one backend per module, named in
``registry.py``, each reached through ``guarded.py``."""
