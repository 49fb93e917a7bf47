"""The edge's web server: the Quart app on Hypercorn, its HTTP API, WebSocket push, and the
device listener for client-certificate logins. How it runs and why: ``docs/edge-server.md``.

``app`` builds the app from :class:`~edge.web.api.Component` route tables (``login``,
``admin``, ``directory``, ``ws``, ``health``, ``client``, ``chat``, ``chat_messages``,
``uploads``, ``presence_api``); ``api`` holds the route table, the request gate (Origin,
session, role, CSRF, body) and the OpenAPI document; ``state`` what a running app holds;
``hub`` and ``frames`` the WebSocket push; ``chat_views`` and ``chat_push`` the chat's JSON
and frames; ``presence_live`` presence wired to the hub; ``workers`` and ``checkpoint`` the
threads that keep SQLite off the event loop; ``device`` the client-certificate listener;
``inbound`` what the federation calls; ``server`` runs it all.
"""
