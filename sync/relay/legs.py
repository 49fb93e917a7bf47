"""The relay's call-leg table (sans-IO): which two plants share a leg, and what each may do.

Theory of operation. A bridge leg joins the SFUs of two plants for one call; its media go
through the relay host's coturn, relay-only, and coturn takes only credentials the relay
mints (``sync.turn``). This module decides when the relay mints one. It holds no socket, no
thread and no clock: the signalling hub (``signalling.py``) feeds it each leg frame with the
sender's site, what the relay knows of the sites (role from a valid certificate, connected or
not) and ``now``, and turns each decision into frames, a credential and an audit entry
(:func:`audit_entry`).

- **Open**: site A asks for leg L with peer B (``LegRequest`` without ``join``) and L is
  unknown. Granted if both are certified edges, the ``[calls]`` policy allows the pair
  (symmetric; fail closed: no pair, no leg), B is connected now (a call to a plant the relay
  cannot reach is refused at once, with that reason), neither side is at its leg limit, and A
  is within its request rate. The leg is recorded: (L, A, B, call reference, time).
- **Join**: B asks for L with peer A (after A's end-to-end offer told it L). Granted only if
  L exists with exactly A and B and the same call reference. With ``join`` a request for an
  unknown leg is refused (it does not open one); without it, the first request opens the
  leg, so two sides that ask at the same time both succeed.
- **Renew**: either side asks again for a leg it is in: a fresh credential (the edge renews
  before expiry and re-establishes a dropped leg). The policy and roles are checked again on
  every request, so a revoked plant or a narrowed policy stops renewals at once.
- **Close**: either side's ``LegClose`` removes the leg; the hub tells the other site.
- **Grace**: when a site's last signalling channel drops, its legs live on for
  ``grace_seconds`` (the edge reconnects); a site still away then has its legs closed with the
  reason "site disconnected" (:meth:`LegTable.expire`).

Everything else is refused with a reason: a third site naming someone else's leg, a wrong
peer or call, a leg with oneself, a core, a site no valid certificate names, too many legs,
too many requests (and past twice the rate the hub closes the channel: ``Refused.abusive``).
The table lives in memory: a relay restart ends every leg (every channel drops with it), and
the edges ask again. Nothing here is secret or payload: leg ids and call references are
opaque tokens the edges chose.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from pki.names import Role
from sync.relay.audit import AuditEntry, AuditEvent, Verdict, clean_reason
from sync.relay.config import CallPolicy
from sync.signal import LegClose, LegRequest

DISCONNECTED = "site disconnected"


class GrantKind(enum.Enum):
    OPENED = "opened"  # the first request of a leg: it now exists
    JOINED = "joined"  # the other side's first request
    RENEWED = "renewed"  # a side asked again: a fresh credential


@dataclass(frozen=True)
class Leg:
    leg: str
    a: str  # the site that opened it
    b: str  # its peer
    call: str
    opened: dt.datetime
    joined: bool = False

    def has(self, site: str) -> bool:
        return site in (self.a, self.b)

    def other(self, site: str) -> str:
        return self.b if site == self.a else self.a


@dataclass(frozen=True)
class Granted:
    site: str
    peer: str
    leg: str
    call: str
    kind: GrantKind
    at: dt.datetime


@dataclass(frozen=True)
class Refused:
    site: str
    peer: str  # "" when the request was too malformed to name one
    leg: str  # likewise
    call: str
    reason: str
    at: dt.datetime
    abusive: bool = False  # far past the request rate: the hub closes the channel


@dataclass(frozen=True)
class Closed:
    leg: Leg
    by: str  # the site that closed it, or the one that stayed away
    reason: str
    at: dt.datetime

    @property
    def other(self) -> str:
        return self.leg.other(self.by)

    @property
    def duration(self) -> dt.timedelta:
        return max(dt.timedelta(0), self.at - self.leg.opened)


Decision = Granted | Refused | Closed


def _minute(now: dt.datetime) -> int:
    return int(now.timestamp()) // 60


class LegTable:
    """Every open leg of this relay, and the decisions on leg frames (one owner at a time)."""

    def __init__(self, policy: CallPolicy) -> None:
        self.policy = policy
        self.legs: dict[str, Leg] = {}
        self._away: dict[str, dt.datetime] = {}  # site -> when its last channel dropped
        self._rates: dict[str, tuple[int, int]] = {}  # site -> (minute, frames in it)

    def legs_of(self, site: str) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.has(site)]

    def _count(self, site: str, now: dt.datetime) -> tuple[bool, bool]:
        """Count one leg frame of ``site``: (over the rate, far over it)."""
        minute = _minute(now)
        last, n = self._rates.get(site, (minute, 0))
        n = n + 1 if last == minute else 1
        self._rates[site] = (minute, n)
        limit = self.policy.requests_per_minute
        return n > limit, n > 2 * limit

    def _rate_refusal(
        self, site: str, peer: str, leg: str, call: str, now: dt.datetime
    ) -> Refused | None:
        over, abusive = self._count(site, now)
        if not over:
            return None
        limit = self.policy.requests_per_minute
        why = f"rate: more than {limit} leg requests a minute from {site}; retry later"
        return Refused(site, peer, leg, call, why, now, abusive)

    def _not_allowed(
        self, site: str, site_role: Role | None, peer: str, peer_role: Role | None
    ) -> str:
        """Why ``site`` and ``peer`` may not share a leg, or an empty string."""
        if peer == site:
            return f"a leg joins two different sites, not {site} with itself"
        if site_role is not Role.EDGE:
            what = "no valid certificate" if site_role is None else f"a {site_role.value}"
            return f"only edges take part in call legs; {site} has {what}"
        if peer_role is None:
            return f"{peer} is not a certified site of this relay"
        if peer_role is not Role.EDGE:
            return f"only edges take part in call legs; {peer} is a {peer_role.value}"
        if not self.policy.allows((site_role, site), (peer_role, peer)):
            return f"policy: {site} and {peer} may not call each other"
        return ""

    def request(
        self,
        site: str,
        req: LegRequest,
        *,
        site_role: Role | None,
        peer_role: Role | None,
        peer_connected: bool,
        now: dt.datetime,
    ) -> Granted | Refused:
        def refuse(reason: str) -> Refused:
            return Refused(site, req.peer, req.leg, req.call, reason, now)

        limited = self._rate_refusal(site, req.peer, req.leg, req.call, now)
        if limited is not None:
            return limited
        existing = self.legs.get(req.leg)
        if existing is not None:
            if not existing.has(site) or existing.other(site) != req.peer:
                return refuse(f"leg {req.leg} is not a leg between {site} and {req.peer}")
            if existing.call != req.call:
                return refuse(f"leg {req.leg} belongs to another call")
            if req.join and site != existing.b:
                return refuse(f"leg {req.leg} was opened by {site}, which cannot join it")
        elif req.join:
            return refuse(
                f"no leg {req.leg} between {req.peer} and {site} to join "
                "(not opened yet, or closed)"
            )
        why = self._not_allowed(site, site_role, req.peer, peer_role)
        if why:
            return refuse(why)
        if existing is not None:
            kind = GrantKind.RENEWED
            if site == existing.b and not existing.joined:
                kind = GrantKind.JOINED
                self.legs[req.leg] = Leg(
                    existing.leg, existing.a, existing.b, existing.call, existing.opened, True
                )
            return Granted(site, req.peer, req.leg, req.call, kind, now)
        if not peer_connected:
            return refuse(f"{req.peer} is not connected to the relay")
        limit = self.policy.max_legs_per_site
        for s in (site, req.peer):
            if len(self.legs_of(s)) >= limit:
                return refuse(f"limit: {s} takes part in {limit} legs already")
        self.legs[req.leg] = Leg(req.leg, site, req.peer, req.call, now)
        return Granted(site, req.peer, req.leg, req.call, GrantKind.OPENED, now)

    def close(self, site: str, msg: LegClose, now: dt.datetime) -> Closed | Refused:
        limited = self._rate_refusal(site, "", msg.leg, "", now)
        if limited is not None:
            return limited
        leg = self.legs.get(msg.leg)
        if leg is None or not leg.has(site):
            return Refused(site, "", msg.leg, "", f"no leg {msg.leg} of {site} to close", now)
        del self.legs[msg.leg]
        return Closed(leg, site, msg.reason, now)

    def malformed(self, site: str, reason: str, now: dt.datetime) -> Refused:
        """A leg frame that did not parse (the hub closes the channel): counted, refused."""
        _, abusive = self._count(site, now)
        return Refused(site, "", "", "", f"malformed: {reason}", now, abusive)

    def disconnected(self, site: str, now: dt.datetime) -> None:
        """``site``'s last signalling channel closed: its legs' grace period starts."""
        self._away.setdefault(site, now)

    def reconnected(self, site: str) -> None:
        self._away.pop(site, None)

    def expire(self, now: dt.datetime) -> list[Closed]:
        """Close the legs of every site away for longer than the grace period."""
        grace = dt.timedelta(seconds=self.policy.grace_seconds)
        closed = []
        for site, since in list(self._away.items()):
            if now - since < grace:
                continue
            del self._away[site]
            for leg in self.legs_of(site):
                del self.legs[leg.leg]
                closed.append(Closed(leg, site, DISCONNECTED, now))
        return closed


def audit_entry(decision: Decision) -> AuditEntry:
    """The audit entry of a decision: metadata only (sites, leg id, call reference, reason,
    duration), never a credential."""
    if isinstance(decision, Granted):
        return AuditEntry(
            decision.at,
            AuditEvent.LEG_GRANTED,
            decision.site,
            decision.peer,
            verdict=Verdict.ACCEPTED,
            reason=decision.kind.value,
            leg=decision.leg,
            call=decision.call,
        )
    if isinstance(decision, Refused):
        return AuditEntry(
            decision.at,
            AuditEvent.LEG_REFUSED,
            decision.site,
            decision.peer,
            verdict=Verdict.REJECTED,
            reason=clean_reason(decision.reason),
            leg=decision.leg,
            call=decision.call,
        )
    return AuditEntry(
        decision.at,
        AuditEvent.LEG_CLOSED,
        decision.by,
        decision.other,
        reason=clean_reason(decision.reason),
        leg=decision.leg.leg,
        call=decision.leg.call,
        duration_ms=decision.duration // dt.timedelta(milliseconds=1),
    )
