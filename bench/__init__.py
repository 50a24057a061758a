"""Performance and scale benchmark: the real sync path against the XPM simulator and moto server.

``make bench`` (``python -m bench.run``) writes ``bench/results.json``; see ``bench/README.md``.
"""
