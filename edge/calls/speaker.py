"""The active speaker of a room, from the audio levels the SFU already forwards (sans-IO).

Theory of operation
-------------------
Browsers put each Opus packet's level in the ``ssrc-audio-level`` header extension (RFC
6464: 0 is 0 dBov, the loudest, 127 is silence), and the SFU reads it anyway to rewrite the
header for each subscriber, so knowing who speaks costs one addition per audio packet:
:meth:`SpeakerDetector.level`. Every ``tick`` (half a second) the mean loudness of each
participant since the previous tick is compared: the loudest one above ``threshold`` takes
the floor if nobody holds it, if the holder went quiet, or if they are ``margin`` louder
than the holder — but not sooner than ``hold`` after the last change, so two people
talking over each other do not make the tiles flicker. The last speaker keeps the floor
through silence: a room that falls quiet still shows who spoke last.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpeakerDetector:
    threshold: int = 60  # a level (dBov below full scale) this loud or louder is speech
    margin: float = 6.0  # dB louder than the holder to take the floor from them
    hold: float = 1.0  # seconds between two changes at least
    current: str | None = None
    _sums: dict[str, list[int]] = field(default_factory=dict)
    _changed_at: float = float("-inf")

    def level(self, participant: str, level: int) -> None:
        """One packet's level (0 loudest .. 127 silence)."""
        acc = self._sums.get(participant)
        if acc is None:
            acc = self._sums[participant] = [0, 0]
        acc[0] += 127 - min(max(level, 0), 127)
        acc[1] += 1

    def forget(self, participant: str) -> bool:
        """``participant`` left; True if they held the floor (which is now nobody's)."""
        self._sums.pop(participant, None)
        if self.current == participant:
            self.current = None
            return True
        return False

    def tick(self, now: float) -> bool:
        """Decide for the interval since the last tick; True if the speaker changed."""
        means = {p: s / n for p, (s, n) in self._sums.items() if n}
        for acc in self._sums.values():
            acc[0] = acc[1] = 0
        loud = {p: m for p, m in means.items() if m >= 127 - self.threshold}
        if not loud or now - self._changed_at < self.hold:
            return False
        best = max(sorted(loud), key=lambda p: loud[p])
        if best == self.current:
            return False
        holder = loud.get(self.current) if self.current is not None else None
        if holder is not None and loud[best] < holder + self.margin:
            return False
        self.current = best
        self._changed_at = now
        return True
