"""The edge's web server: the Quart app on Hypercorn, its HTTP API, WebSocket push, and the
device listener for client-certificate logins. How it runs and why: ``docs/edge-server.md``.

``app`` builds the app from :class:`~edge.web.api.Component` route tables (``login``,
``admin``, ``directory``, ``ws``, ``health``, ``client``); ``api`` holds the route table, the
request gate (Origin, session, role, CSRF, body) and the OpenAPI document; ``state`` what a
running app holds; ``hub`` and ``frames`` the WebSocket push; ``device`` the client-certificate
listener; ``inbound`` what the federation calls; ``server`` runs it all.
"""
