"""Relay storage v2: prototypes of append-only designs measured against today's protocol (docs/decisions/035).

Run with ``python -m bench.storage_v2`` (``make bench-storage``); see ``__main__`` for the designs and options.
``python -m bench.storage_v2.order`` plays the one interleaving that makes design (a) sort each batch by id.
Nothing here is product code: the prototypes exist to measure, and to make the ADR's claims checkable.
"""
