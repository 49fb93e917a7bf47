"""Authentication at the edge: passwords, TOTP, recovery codes, throttling, sessions.

The web layer calls one object, :class:`edge.auth.service.AuthService` (account administration
comes from its base, :class:`edge.auth.accounts.AccountAdmin`; results, reasons and the
configuration are in ``results``). Everything else is either sans-IO policy that takes ``now``
and randomness as arguments (``passwords``, ``totp``, ``throttle``, ``recovery``, ``sessions``)
or the SQLite adapter that persists it (``store``, with ``schema`` for its migrations and
``sealing`` for TOTP secrets at rest). Design, parameters and their measured cost:
``docs/auth.md``.
"""
