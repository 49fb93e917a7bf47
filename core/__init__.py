"""The central federation service: master directory, imports, per-site deltas, events."""
