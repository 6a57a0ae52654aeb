"""One adapter per runtime (see clova_edge.benchmarks.protocol.Adapter), each run in its own process by
runner.py.

A peer module imports its runtime lazily inside `make_adapter`, so listing peers needs none of them installed.
"""
