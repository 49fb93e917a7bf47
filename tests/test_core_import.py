"""CSV and LDIF import: good files, idempotency, line-numbered problems, all or nothing."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.directory import Directory
from core.importer import (
    FileFormat,
    ImportProblems,
    ImportReport,
    import_file,
    import_rows,
    read_csv,
    read_ldif,
)
from sync.directory import Site, User, UserRole

DATA = Path(__file__).parent / "data" / "core"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
HEADER = "login,display_name,department,site,phones,email,roles,enabled\n"


@pytest.fixture
def d() -> Iterator[Directory]:
    with Directory.open(":memory:", clock=lambda: NOW) as directory:
        directory.add_site(Site("plant-a", "Завод А"))
        directory.add_site(Site("plant-b", "Завод Б"))
        yield directory


def csv_import(
    d: Directory, text: str | bytes, *, disable_missing: bool = False, dry_run: bool = False
) -> ImportReport:
    data = text.encode() if isinstance(text, str) else text
    parsed = read_csv(data, source="t.csv")
    return import_rows(d, parsed, source="t.csv", disable_missing=disable_missing, dry_run=dry_run)


def ldif_import(d: Directory, text: str) -> ImportReport:
    return import_rows(d, read_ldif(text.encode(), source="t.ldif"), source="t.ldif")


def problems_of(d: Directory, text: str | bytes, reader: str = "csv") -> list[str]:
    before = d.version
    with pytest.raises(ImportProblems) as e:
        if reader == "csv":
            csv_import(d, text)
        else:
            ldif_import(d, text)  # type: ignore[arg-type]
    assert d.version == before and d.users() == []  # nothing half-imported
    return list(e.value.problems)


EXPECTED = {
    "ivanov.ii": User(
        "ivanov.ii",
        "Иванов Иван Ильич",
        "plant-a",
        "Цех №1",
        ("+7 (8202) 53-12-34", "4-12-34"),
        "ivanov.ii@example.ru",
    ),
    "petrova.ms": User(
        "petrova.ms",
        "Петрова Мария Сергеевна",
        "plant-a",
        "Отдел главного механика",
        ("+7 (8202) 53-12-35 доб. 120",),
        "petrova.ms@example.ru",
        (UserRole.USER, UserRole.ADMIN),
    ),
    "sidorov.pa": User(
        "sidorov.pa",
        "Сидоров Пётр Алексеевич",
        "plant-b",
        "Служба безопасности",
        ("+7 (3462) 41-00-01",),
        "sidorov.pa@example.ru",
        (UserRole.USER, UserRole.SECURITY_OFFICER),
    ),
    "kuznetsova": User("kuznetsova", "Кузнецова Ёлка", "plant-a", "Цех №1", enabled=False),
    "smith.j": User(
        "smith.j",
        "Smith, John",
        "plant-b",
        "Engineering",
        ("+44 20 7946 0958",),
        "j.smith@example.com",
    ),
}


# --- good files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", list(FileFormat))
def test_sample_files_import_faithfully_and_twice_changes_nothing(
    d: Directory, file_format: FileFormat
) -> None:
    path = DATA / f"users.{file_format.value}"
    report = import_file(d, path, file_format)
    assert report.added == ("ivanov.ii", "petrova.ms", "sidorov.pa", "kuznetsova", "smith.j")
    assert (report.changes, report.unchanged, report.version) == (5, 0, 3)
    assert report.departments == (
        "Engineering",
        "Отдел главного механика",
        "Служба безопасности",
        "Цех №1",
    )
    assert {u.login: u for u in d.users()} == EXPECTED
    again = import_file(d, path, file_format)
    assert (again.changes, again.unchanged, again.version) == (0, 5, 3)
    assert d.version == 3
    assert "0 changes" in again.summary()
    if file_format is FileFormat.LDIF:
        assert report.skipped == 1  # ou=People is not a user


def test_csv_then_ldif_of_the_same_people_changes_nothing(d: Directory) -> None:
    import_file(d, DATA / "users.csv", FileFormat.CSV)
    report = import_file(d, DATA / "users.ldif", FileFormat.LDIF)
    assert report.changes == 0


def test_the_report_names_updated_fields(d: Directory) -> None:
    text = (DATA / "users.csv").read_text()
    csv_import(d, text)
    changed = text.replace("Цех №1,plant-a,+", "Цех №2,plant-a,+").replace(
        "+7 (8202) 53-12-34;4-12-34", "4-12-34"
    )
    changed = changed.replace(
        "kuznetsova,Кузнецова Ёлка,Цех №1,plant-a,,,user,false",
        "kuznetsova,Кузнецова Ёлка,Цех №1,plant-a,,,user,true",
    )
    report = csv_import(d, changed)
    assert report.updated == (
        ("ivanov.ii", ("department", "phones")),
        ("kuznetsova", ("enabled",)),
    )
    assert report.departments == ("Цех №2",)
    assert "updated   ivanov.ii: department, phones" in list(report.details())


def test_an_absent_column_leaves_the_stored_value(d: Directory) -> None:
    csv_import(d, (DATA / "users.csv").read_text())
    report = csv_import(d, "login,display_name,site\npetrova.ms,Петрова Мария Сергеевна,plant-a\n")
    assert report.changes == 0
    assert d.user("petrova.ms") == EXPECTED["petrova.ms"]  # still an admin
    csv_import(d, "login,display_name,site\nnew.one,Новый,plant-b\n")
    assert d.user("new.one") == User("new.one", "Новый", "plant-b")  # defaults


def test_empty_control_cells_keep_the_stored_value(d: Directory) -> None:
    csv_import(d, (DATA / "users.csv").read_text())
    blank = HEADER + "petrova.ms,Петрова Мария Сергеевна,Отдел главного механика,plant-a,"
    blank += "+7 (8202) 53-12-35 доб. 120,petrova.ms@example.ru,,\n"
    blank += "kuznetsova,Кузнецова Ёлка,Цех №1,plant-a,,,,\n"
    blank += "new.one,Новый,,plant-b,,,,\n"
    report = csv_import(d, blank)
    assert (report.added, report.updated) == (("new.one",), ())
    assert d.user("petrova.ms") == EXPECTED["petrova.ms"]  # still an admin
    assert d.user("kuznetsova") == EXPECTED["kuznetsova"]  # still disabled
    assert d.user("new.one") == User("new.one", "Новый", "plant-b")


def test_disable_missing_and_dry_run(d: Directory) -> None:
    csv_import(d, (DATA / "users.csv").read_text())
    partial = HEADER + "ivanov.ii,Иванов Иван Ильич,Цех №1,plant-a,+7 (8202) 53-12-34;4-12-34,"
    partial += "ivanov.ii@example.ru,user,true\n"
    dry = csv_import(d, partial, disable_missing=True, dry_run=True)
    assert dry.disabled == ("petrova.ms", "sidorov.pa", "smith.j")  # kuznetsova already is
    assert dry.version == 4 and d.version == 3
    assert all(u.enabled for u in d.users() if u.login != "kuznetsova")
    report = csv_import(d, partial, disable_missing=True)
    assert report.disabled == dry.disabled and d.version == 4
    assert [u.login for u in d.users() if u.enabled] == ["ivanov.ii"]


def test_bom_semicolons_quotes_and_crlf(d: Directory) -> None:
    text = (
        "\ufefflogin;display_name;site;phones;enabled\r\n"
        'a.b;"Ан; Бэ ""Младший""";plant-a;"4-12-34; 4-12-35";нет\r\n'
        "\r\n"
        ";;;;\r\n"
    )
    report = csv_import(d, text)
    assert report.added == ("a.b",)
    assert d.user("a.b") == User(
        "a.b", 'Ан; Бэ "Младший"', "plant-a", phones=("4-12-34", "4-12-35"), enabled=False
    )


def test_logins_are_lowercased(d: Directory) -> None:
    csv_import(d, "login,display_name,site\n  Ivanov.II ,Иванов,plant-a\n")
    assert [u.login for u in d.users()] == ["ivanov.ii"]


# --- problems, with line numbers, and nothing imported ------------------------------------------


def test_every_bad_row_is_named_with_its_line(d: Directory) -> None:
    text = (
        HEADER
        + "ok.1,Хороший,Цех,plant-a,,,user,true\n"  # 2
        + 'bad.name,"Имя\nна двух строках",Цех,plant-a,,,user,true\n'  # 3-4
        + "Bad Login,Плохой,Цех,plant-a,,,user,true\n"  # 5
        + "ok.2,Хороший,Цех,plant-z,,,user,true\n"  # 6
        + "ok.3,Хороший,Цех,plant-a,12a,,user,true\n"  # 7
        + "ok.4,Хороший,Цех,plant-a,,,root,true\n"  # 8
        + "ok.5,Хороший,Цех,plant-a,,,user,maybe\n"  # 9
        + "ok.6,Хороший,Цех,plant-a,,,user\n"  # 10
        + "ok.1,Дубль,Цех,plant-a,,,user,true\n"  # 11
    )
    assert problems_of(d, text) == [
        "line 3: display_name: contains the control character U+000A",
        "line 5: invalid login 'bad login': use 1-64 lowercase letters, digits, '.', '_' and '-'",
        "line 6: site: 'plant-z' is not a known site",
        "line 7: phones: '12a' is not a phone number (digits, spaces, '+', '-', '(', ')', "
        "optionally 'доб. 123' or 'x123')",
        "line 8: roles: unknown role 'root' (known: user, admin, security_officer)",
        "line 9: enabled: 'maybe' is not true/false, yes/no or 1/0",
        "line 10: 7 fields; the header has 8",
        "line 11: login 'ok.1' is also on line 2",
    ]


def test_a_bad_last_row_leaves_the_directory_untouched(d: Directory) -> None:
    rows = "".join(f"user{i},Пользователь {i},Цех,plant-a,,,user,true\n" for i in range(500))
    problems = problems_of(d, HEADER + rows + "last,,Цех,plant-a,,,user,true\n")
    assert problems == ["line 502: display_name: must not be empty"]
    assert d.departments() == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b"\n\n", "the file has no header row"),
        (HEADER.encode("utf-16"), "the file is UTF-16; save it as UTF-8"),
        (
            (HEADER + "ivanov,Иванов,Цех,plant-a,,,user,true\n").encode("cp1251"),
            "line 2: byte 0xc8 is not UTF-8 (it looks like Windows-1251); save as UTF-8",
        ),
        (b"login,display_name\nivanov,x\n", "line 1: the required column 'site' is missing"),
        (b"login,name,site\n", "line 1: unknown column 'name' (columns: login, display_name, "),
        (b"login,site,display_name,site\n", "line 1: the column 'site' appears twice"),
        (
            f"login,display_name,site\nivanov,{'Я' * 2000},plant-a\n".encode(),
            "line 2: display_name: 2,000 characters; the limit is 1024",
        ),
        (
            b'login,display_name,site\nivanov,"' + b"x" * 200_000 + b"\n",
            "line 2: field larger than field limit (131072) (an unclosed quote?)",
        ),
    ],
)
def test_hostile_csv_is_refused_clearly(d: Directory, data: bytes, problem: str) -> None:
    problems = problems_of(d, data)
    assert problems[0].startswith(problem), problems


def test_a_header_only_file_imports_nothing(d: Directory) -> None:
    assert csv_import(d, HEADER).changes == 0


def test_the_exception_summarises_in_one_line(d: Directory) -> None:
    with pytest.raises(ImportProblems) as e:
        csv_import(d, "login,display_name,site\nA B,x,plant-a\nC D,y,plant-a\n")
    assert str(e.value).startswith("t.csv: 2 problems, nothing imported; line 2: invalid login")
    assert "\n" not in str(e.value)


# --- LDIF --------------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_ldif_folding_base64_comments_and_crlf(d: Directory) -> None:
    text = (
        "# comment\r\n"
        "# folded comment\r\n"
        " continues\r\n"
        "dn: uid=a,dc=x\r\n"
        "uid: a\r\n"
        f"cn:: {b64('Андреев Андрей')}\r\n"
        "displayName: Андре\r\n"
        " ев А.\r\n"
        "cn;lang-en: Andreev\r\n"
        "l: plant-b\r\n"
        "mobile: +7 900 000-00-00\r\n"
        "telephoneNumber: 4-12-34\r\n"
        "zastavaEnabled: FALSE\r\n"
    )
    report = ldif_import(d, text)
    assert report.added == ("a",)
    assert d.user("a") == User(
        "a", "Андреев А.", "plant-b", None, ("4-12-34", "+7 900 000-00-00"), enabled=False
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dn: uid=a\nchangetype: add\nuid: a\n", "line 1: change records (changetype) are not"),
        ("dn: uid=a\nuid: a\ncn:: ***\nl: plant-a\n", "line 3: cn: the base64 value is not valid"),
        (f"dn: uid=a\nuid: a\ncn:: {b64('x')[:-1]}\n", "line 3: cn: the base64 value"),
        (
            f"dn: uid=a\nuid: a\ncn:: {base64.b64encode('Я'.encode('cp1251')).decode()}\n",
            "line 3: cn: the base64 value is not valid base64 of UTF-8 text",
        ),
        ("dn: uid=a\nuid: a\njpegPhoto:< file:///etc/passwd\n", "line 3: jpegphoto: URL values"),
        (" folded\ndn: uid=a\n", "line 1: a continuation line (starting with a space) follows"),
        ("uid: a\ncn: b\n", "line 1: an entry must start with 'dn:', not 'uid'"),
        ("dn: uid=a\nuid: a\nuid: b\n", "line 1: uid: several values ['a', 'b']"),
        ("dn: uid=a\nuid: a\nnot a line\n", "line 3: not an 'attribute: value' line"),
        ("dn: uid=a\nuid: a\nl: plant-a\n", "line 1: display_name missing for new user"),
        ("dn: uid=a\nuid: a\ncn: A\n", "line 1: site missing for new user"),
        ("dn: uid=a\nuid: a\ncn: A\nl: plant-a\nzastavaRole: god\n", "line 1: roles: unknown"),
        (
            "dn: uid=a\nuid: a\ncn: A\nl: plant-a\n\ndn: uid=A\nuid: A\ncn: B\nl: plant-a\n",
            "line 6: login 'a' is also on line 1",
        ),
        ("version: 2\n\ndn: uid=a\nuid: a\ncn: A\nl: plant-a\n", "line 1: LDIF version '2'"),
    ],
)
def test_hostile_ldif_is_refused_clearly(d: Directory, text: str, problem: str) -> None:
    problems = problems_of(d, text, reader="ldif")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_ldif_version_line_without_a_blank_line(d: Directory) -> None:
    report = ldif_import(d, "version: 1\ndn: uid=a\nuid: a\ncn: A\nl: plant-a\n")
    assert report.added == ("a",)


def test_progress_is_reported_for_large_files(d: Directory) -> None:
    rows = "".join(f"u{i},Пользователь {i},plant-a\n" for i in range(20_000))
    messages: list[str] = []
    data = ("login,display_name,site\n" + rows).encode()
    parsed = read_csv(data, source="big.csv", progress=messages.append)
    report = import_rows(d, parsed, source="big.csv", progress=messages.append)
    assert report.changes == 20_000
    assert messages == ["read 10,000 rows", "read 20,000 rows", "checked 20,000 users; writing"]
