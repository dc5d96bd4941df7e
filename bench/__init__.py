"""SeqVault benchmarks against RocksDB "LastN" stores (issue 6).

Layout, one idea a module:

- ``workload``         deterministic behaviour-log generator (fixed seed, realistic shapes)
- ``rocks_baselines``  the two RocksDB LastN layouts (blob per user, key per event)
- ``seqvault_adapter`` SeqVault behind the same small interface
- ``measure``          percentiles, process CPU, peak RSS, bytes on disk, machine facts
- ``scenarios``        the workloads, run against one system in one process
- ``report``           Markdown tables, ratios, targets and PNG plots
- ``run``              ``python -m bench.run [--full] [--out DIR]``: one subprocess per system

Micro-benchmarks (pytest-benchmark) live in ``bench/micro``.
"""
