"""pytest-benchmark micro-benchmarks: ``pytest bench/micro --benchmark-only``.

Not part of ``make test`` (testpaths is tests/). Save a baseline with ``--benchmark-save=NAME``
and catch regressions with ``--benchmark-compare`` (``--benchmark-compare-fail=mean:10%``).
"""
