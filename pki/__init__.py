"""Zastava's public-key infrastructure.

An offline root CA certifies an issuing CA, which certifies every node's keys (TLS, bundle
signing, bundle receiving) and users' managed devices. Nodes enroll by files, as on an
air-gapped site. Every other package verifies identities through :mod:`pki.trust` only.
"""
