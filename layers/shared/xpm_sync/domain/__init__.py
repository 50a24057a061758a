"""The rules of the sync, as plain Python: no I/O, no AWS, no HTTP, no environment.

Everything here can be read against SPEC A and tested with plain values; ``xpm_sync.adapters``
talks to the outside, and ``xpm_sync.sync`` and ``xpm_sync.api`` put the two together.
"""
