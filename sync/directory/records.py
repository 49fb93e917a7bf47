"""Directory records: sites, departments, users, groups, and their validation.

Theory of operation
-------------------
A record is one whole directory entry, a frozen dataclass that validates itself when made, so
an invalid ``User`` cannot exist: the core's store, its imports and an edge parsing a payload
all refuse the same values with the same message (``field: what is wrong``). Text is kept
exactly as given, never normalised, but must be non-empty, at most :data:`MAX_TEXT`
characters, without surrounding whitespace and without control or bidi-override characters
(they make one name display as another). Logins, group names and site ids follow
:mod:`pki.names`, so every login is also valid in a device certificate. ``roles`` and group
``members`` are kept in canonical order, so equal entries compare and encode equal.

:func:`record_to_json` and :func:`record_from_json` map a record to and from the JSON object
of one payload line (``t`` names its type); the payload itself is in :mod:`sync.directory.payload`.
No I/O happens here.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Final

from pki.names import check_login, check_site

MAX_TEXT: Final = 200
MAX_PHONES: Final = 10
MAX_MEMBERS: Final = 100_000

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_PHONE = re.compile(r"\+?[0-9][0-9 ()\-]{0,29}(?: ?(?:x|ext\.?|доб\.?) ?[0-9]{1,6})?")
_EMAIL = re.compile(r"[^\s@]{1,64}@[^\s@]{1,253}")


def check_text(name: str, value: object, *, limit: int = MAX_TEXT) -> str:
    """``value`` if it is non-empty printable text without surrounding space, else raise."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be text, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name}: must not be empty")
    if value != value.strip():
        raise ValueError(f"{name}: {value!r} has leading or trailing whitespace")
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value)} characters long; the limit is {limit}")
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"{name}: contains the control character U+{ord(bad.group()):04X}")
    return value


class UserRole(enum.Enum):
    """What a user may do; canonical order is the order declared here."""

    USER = "user"
    ADMIN = "admin"
    SECURITY_OFFICER = "security_officer"

    @classmethod
    def parse(cls, text: str) -> UserRole:
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(r.value for r in cls)
            raise ValueError(f"roles: unknown role {text!r} (known: {known})") from None


_ROLE_ORDER: Final = {r: i for i, r in enumerate(UserRole)}


@dataclass(frozen=True)
class Site:
    id: str
    name: str

    def __post_init__(self) -> None:
        check_site(self.id)
        check_text("name", self.name)

    @property
    def key(self) -> str:
        return self.id


@dataclass(frozen=True)
class Department:
    name: str

    def __post_init__(self) -> None:
        check_text("department", self.name)

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class User:
    """A user as the whole system sees it. ``roles`` is kept in canonical order."""

    login: str
    display_name: str
    site: str
    department: str | None = None
    phones: tuple[str, ...] = ()
    email: str | None = None
    roles: tuple[UserRole, ...] = (UserRole.USER,)
    enabled: bool = True

    def __post_init__(self) -> None:
        check_login(self.login)
        check_text("display_name", self.display_name)
        check_site(self.site)
        if self.department is not None:
            check_text("department", self.department)
        if not isinstance(self.phones, tuple) or len(self.phones) > MAX_PHONES:
            raise ValueError(f"phones: must be a tuple of at most {MAX_PHONES} numbers")
        for p in self.phones:
            if not isinstance(p, str) or not _PHONE.fullmatch(p):
                raise ValueError(
                    f"phones: {p!r} is not a phone number (digits, spaces, '+', '-', '(', ')', "
                    "optionally 'доб. 123' or 'x123')"
                )
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("phones: a number appears twice")
        if self.email is not None:
            check_text("email", self.email, limit=254)
            if not _EMAIL.fullmatch(self.email):
                raise ValueError(f"email: {self.email!r} is not an address (name@domain)")
        if not isinstance(self.roles, tuple) or not self.roles:
            raise ValueError("roles: at least one role (user, admin, security_officer)")
        if not all(isinstance(r, UserRole) for r in self.roles):
            raise ValueError("roles: must be UserRole values")
        object.__setattr__(
            self, "roles", tuple(sorted(set(self.roles), key=_ROLE_ORDER.__getitem__))
        )
        if not isinstance(self.enabled, bool):
            raise ValueError("enabled: must be true or false")

    @property
    def key(self) -> str:
        return self.login


@dataclass(frozen=True)
class Group:
    """A named set of users; ``members`` is kept sorted and without repeats."""

    name: str
    title: str | None = None
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_group_name(self.name)
        if self.title is not None:
            check_text("title", self.title)
        if not isinstance(self.members, tuple) or len(self.members) > MAX_MEMBERS:
            raise ValueError(f"members: must be a tuple of at most {MAX_MEMBERS} logins")
        for m in self.members:
            check_login(m)
        object.__setattr__(self, "members", tuple(sorted(set(self.members))))

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class GroupRemoved:
    """In a change set only: the group no longer exists."""

    name: str

    def __post_init__(self) -> None:
        _check_group_name(self.name)

    @property
    def key(self) -> str:
        return self.name


def _check_group_name(name: str) -> None:
    try:
        check_login(name)
    except ValueError:
        raise ValueError(
            f"group: invalid name {name!r}: use 1-64 lowercase letters, digits, '.', '_', '-'"
        ) from None


Record = Site | Department | User | Group | GroupRemoved
_RANK: Final[dict[type, int]] = {Site: 0, Department: 1, User: 2, Group: 3, GroupRemoved: 3}
_TYPE: Final[dict[type, str]] = {
    Site: "site",
    Department: "department",
    User: "user",
    Group: "group",
    GroupRemoved: "group.removed",
}


def sort_key(record: Record) -> tuple[int, str]:
    return _RANK[type(record)], record.key


def record_to_json(r: Record) -> dict[str, Any]:
    t = _TYPE[type(r)]
    if isinstance(r, Site):
        return {"t": t, "id": r.id, "name": r.name}
    if isinstance(r, Department | GroupRemoved):
        return {"t": t, "name": r.name}
    if isinstance(r, Group):
        return {"t": t, "name": r.name, "title": r.title, "members": list(r.members)}
    return {
        "t": t,
        "login": r.login,
        "display_name": r.display_name,
        "site": r.site,
        "department": r.department,
        "phones": list(r.phones),
        "email": r.email,
        "roles": [x.value for x in r.roles],
        "enabled": r.enabled,
    }


def _str_list(obj: object, name: str) -> tuple[str, ...]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise ValueError(f"{name}: must be a list of strings")
    return tuple(obj)


def _str(obj: object, name: str) -> str:
    if not isinstance(obj, str):
        raise ValueError(f"{name}: must be a string")
    return obj


def _opt_str(obj: object, name: str) -> str | None:
    if obj is not None and not isinstance(obj, str):
        raise ValueError(f"{name}: must be a string or null")
    return obj


_FIELDS: Final = {
    "site": {"t", "id", "name"},
    "department": {"t", "name"},
    "user": {"t", "login", "display_name", "site", "department", "phones", "email", "roles"}
    | {"enabled"},
    "group": {"t", "name", "title", "members"},
    "group.removed": {"t", "name"},
}


def record_from_json(obj: object) -> Record:
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    t = obj.get("t")
    if not isinstance(t, str) or t not in _FIELDS:
        raise ValueError(f"unknown record type {t!r}")
    if set(obj) != _FIELDS[t]:
        raise ValueError(f"{t} record: fields {sorted(obj)}, expected {sorted(_FIELDS[t])}")
    if t == "site":
        return Site(_str(obj["id"], "id"), _str(obj["name"], "name"))
    if t == "department":
        return Department(_str(obj["name"], "department"))
    if t == "group":
        name, title = _str(obj["name"], "group"), _opt_str(obj["title"], "title")
        return Group(name, title, _str_list(obj["members"], "members"))
    if t == "group.removed":
        return GroupRemoved(_str(obj["name"], "group"))
    return User(
        login=_str(obj["login"], "login"),
        display_name=_str(obj["display_name"], "display_name"),
        site=_str(obj["site"], "site"),
        department=_opt_str(obj["department"], "department"),
        phones=_str_list(obj["phones"], "phones"),
        email=_opt_str(obj["email"], "email"),
        roles=tuple(UserRole.parse(x) for x in _str_list(obj["roles"], "roles")),
        enabled=obj["enabled"],
    )
