"""The plant node: web app, auth, directory and presence, chat, SFU, sync outbox/inbox."""
