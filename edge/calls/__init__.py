"""Calls and meetings: ringing, answering, records, moderation, and the SFU room of each call.

``model`` is the sans-IO state machine (1:1 calls and meetings, who is rung, who is in, how
a call ends); ``speaker`` picks the active speaker from audio levels; ``media`` is the
narrow interface to the SFU's rooms (``MediaRooms``) and ``local_media`` its implementation
in the edge process on :class:`edge.sfu.room.Room`; ``records`` and ``schema`` keep the call
records in ``edge.db``; ``service`` drives it all on the event loop. The web layer's
signalling is :mod:`edge.web.calls`; the design is ``docs/calls.md``.
"""
