"""The edge's selective forwarding unit: RTP forwarded packet by packet, never decoded.

A sans-IO core (``packets``, ``vp8``, ``rewrite``, ``history``, ``feedback``, ``forwarder``)
takes parsed packets and ``now`` in and gives bytes and events out; ``legs`` adapts it to
aiortc's peer connections through the private attributes named in ``hooks``; ``room`` is the
publish/subscribe API the signalling layer drives. The design is in ``docs/sfu.md``.
"""

from edge.sfu import native

native.activate(__path__)
