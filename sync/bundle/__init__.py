"""Bundles: the signed, end-to-end-encrypted envelope everything that leaves a plant travels in.

See ``docs/bundle-format.md`` for the byte layout. Modules: ``wire`` (field encoding),
``header`` and ``manifest`` (records), ``codec`` (seal / verify / decrypt), ``items``
(acks, heartbeats), ``stream`` (the sans-IO exactly-once state machine), ``store`` (its
SQLite adapter), ``cli`` (``zastava bundle``).
"""
