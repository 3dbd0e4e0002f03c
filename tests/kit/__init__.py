"""The tests' shared kit: every helper more than one test module uses (fixtures stay in
``tests/conftest.py``). ``tests/`` is on ``sys.path`` (the rootdir conftest), so a test in any
tier imports ``from kit.support import MakeApp`` or ``from kit import imagegen``.

Tools the benches use as well live in ``devtools/`` instead (``devtools.pictures``,
``devtools.fault_proxy``): ``bench/`` imports nothing from ``tests/``.
"""
