"""crosslab's benchmarks: scripts, not tests. Run them with ``python -m benchmarks.run``.

Each ``bench_*.py`` module exposes ``run(quick: bool, ...) -> dict | list``; ``run.py``
collects the figures, writes ``results.json`` and renders ``RESULTS.md`` from it.
"""
