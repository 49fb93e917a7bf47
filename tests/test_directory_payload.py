"""Directory records and payloads on their own: validation, hostile bytes, canonical order."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.directory import Group, Payload, PayloadKind, Site, User, UserRole

DATA = Path(__file__).parent / "data" / "core"


def ivanov(**changes: object) -> User:
    values: dict[str, object] = {
        "login": "ivanov",
        "display_name": "Иванов Иван Ильич",
        "site": "plant-a",
        "department": "Цех №1",
        "phones": ("+7 (8202) 53-12-34", "4-12-34"),
        "email": "ivanov@example.ru",
    }
    return User(**(values | changes))  # type: ignore[arg-type]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"login": "Ivanov"}, "invalid login 'Ivanov'"),
        ({"login": ""}, "invalid login ''"),
        ({"login": "a" * 65}, "invalid login"),
        ({"display_name": ""}, "display_name: must not be empty"),
        ({"display_name": "   "}, "display_name: must not be empty"),
        ({"display_name": " Иванов"}, "display_name: ' Иванов' has leading or trailing whitespace"),
        ({"display_name": "Ива\nнов"}, "display_name: contains the control character U+000A"),
        ({"display_name": "Ива\u202eнов"}, "display_name: contains the control character U+202E"),
        ({"display_name": "И" * 201}, "display_name: 201 characters long; the limit is 200"),
        ({"site": "Plant A"}, "invalid site id 'Plant A'"),
        ({"department": ""}, "department: must not be empty"),
        ({"phones": ("12a",)}, "phones: '12a' is not a phone number"),
        ({"phones": ("4-12-34", "4-12-34")}, "phones: a number appears twice"),
        ({"phones": ("1",) * 11}, "phones: must be a tuple of at most 10"),
        ({"email": "ivanov"}, "email: 'ivanov' is not an address"),
        ({"email": "a b@example.ru"}, "email: 'a b@example.ru' is not an address"),
        ({"roles": ()}, "roles: at least one role"),
        ({"enabled": 1}, "enabled: must be true or false"),
    ],
)
def test_user_validation_names_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as e:
        ivanov(**changes)
    assert message in str(e.value)


def test_roles_are_canonical_and_parsed_with_a_clear_error() -> None:
    u = ivanov(roles=(UserRole.SECURITY_OFFICER, UserRole.USER, UserRole.USER))
    assert u.roles == (UserRole.USER, UserRole.SECURITY_OFFICER)
    with pytest.raises(ValueError, match="roles: unknown role 'root'"):
        UserRole.parse("root")


def test_other_records_validate() -> None:
    with pytest.raises(ValueError, match="invalid site id"):
        Site("-a", "x")
    with pytest.raises(ValueError, match="name: must not be empty"):
        Site("plant-a", "")
    with pytest.raises(ValueError, match="group: invalid name 'Мастера'"):
        Group("Мастера")
    assert Group("masters", "Мастера", ("b", "a", "b")).members == ("a", "b")


# --- the payload format ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_payloads_raise_only_value_error(data: st.DataObject) -> None:
    golden = bytearray((DATA / "snapshot.jsonl").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(golden) - 1))
        golden[at] = data.draw(st.sampled_from(b'0a"{}[],:\\ \n\xd0'))
    try:
        payload = Payload.parse(bytes(golden))
    except ValueError as e:
        assert str(e).startswith("directory payload: ")
    else:
        assert bytes(payload) == bytes(golden)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id":5,"name":"A","t":"site"}', "line 2: id: must be a string"),
        (b'{"name":["x"],"t":"department"}', "line 2: department: must be a string"),
        (b"[" * 100_000 + b"]" * 100_000, "line 2: nested too deeply"),
    ],
)
def test_wrong_json_types_are_value_errors(line: bytes, message: str) -> None:
    head = b'{"directory":"x","format":"zastava.directory","kind":"snapshot","records":1,'
    head += b'"site":"plant-a","v":1,"version":1}\n'
    with pytest.raises(ValueError) as e:
        Payload.parse(head + line + b"\n")
    assert message in str(e.value)


def test_records_must_be_in_canonical_order() -> None:
    users = (ivanov(login="b"), ivanov(login="a"))
    with pytest.raises(ValueError, match="not in canonical order"):
        Payload(PayloadKind.CHANGES, "x", "plant-a", 2, 1, users)
    built = Payload.build(
        PayloadKind.CHANGES, directory="x", site="plant-a", version=2, base=1, records=users
    )
    assert [r.key for r in built.records] == ["a", "b"]


# --- property: any valid user round-trips -----------------------------------------------------

LOGINS = ("ivanov", "petrov", "sidorova", "smith.j")
names = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=20
).filter(lambda s: s == s.strip() and s.strip() != "")
user_ops = st.builds(
    lambda login, name, site, dept, phones, roles, enabled: (
        "user",
        User(login, name, site, dept, phones, None, roles, enabled),
    ),
    st.sampled_from(LOGINS),
    names,
    st.sampled_from(("plant-a", "plant-b")),
    st.none() | st.sampled_from(("Цех №1", "ОГМ", "IT")),
    st.lists(st.sampled_from(("4-12-34", "+7 (8202) 53-12-34")), unique=True, max_size=2).map(
        tuple
    ),
    st.sets(st.sampled_from(tuple(UserRole)), min_size=1).map(tuple),
    st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(user_ops.map(lambda op: op[1]))
def test_user_records_round_trip(user: User) -> None:
    payload = Payload.build(
        PayloadKind.CHANGES, directory="x", site="plant-a", version=1, base=0, records=[user]
    )
    data = bytes(payload)
    assert Payload.parse(data) == payload
    assert bytes(Payload.parse(data)) == data
