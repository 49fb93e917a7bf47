"""Benchmark of the core directory: import 40,000 users, re-import, snapshot and delta sizes.

    .venv/bin/python bench/core_import.py [--users 40000] [--seed 1] [--keep DIR]

Generates a deterministic, realistic company (Russian names with patronymics, 8 plants,
~45 departments, city and internal phone numbers, a few admins and officers, 2% disabled) as a
CSV file and as an LDIF export (non-ASCII values base64-encoded, as slapcat writes them),
imports the CSV into a fresh directory database (on disk, WAL, synchronous=FULL), imports it
again (must be 0 changes), imports the LDIF into another fresh database, then measures one
site's full snapshot payload (raw, zlib -6 and -9, lzma) and the change set after disabling one
user, and applies the snapshot and the change set on an edge database. The issue's target:
import of 40,000 users in under 10 s.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import io
import lzma
import random
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.directory import Directory  # noqa: E402
from core.importer import FileFormat, import_file  # noqa: E402
from sync.directory import Site, apply_changes, apply_snapshot, edge_snapshot  # noqa: E402

SITES = (
    ("plant-a", "Киришский НПЗ"),
    ("plant-b", "Сургутский ГПЗ"),
    ("plant-c", "Омский завод полипропилена"),
    ("plant-d", "Нижнекамский химкомбинат"),
    ("plant-e", "Тобольский нефтехимический комбинат"),
    ("plant-f", "Уфимский НПЗ"),
    ("plant-g", "Ярославский шинный завод"),
    ("plant-h", "Управление (Москва)"),
)
AREA = ("81368", "3462", "3812", "8555", "3456", "347", "4852", "495")
SURNAMES = (
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров Морозов "
    "Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов Андреев "
    "Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов Воробьёв Сергеев "
    "Кузьмин Фролов Александров Дмитриев Королёв Гусев Киселёв Ильин Максимов Поляков Сорокин "
    "Виноградов Ковалёв Белов Медведев Антонов Тарасов Жуков Баранов Филиппов Комаров Давыдов "
    "Беляев Герасимов Богданов Осипов Сидоров Матвеев Титов Марков Миронов Крылов Куликов "
    "Карпов Власов Мельников Денисов Гаврилов Тихонов Казаков Афанасьев Данилов Савельев Тимофеев"
).split()
MALE = (
    "Александр Алексей Андрей Артём Борис Вадим Валерий Василий Виктор Владимир Вячеслав "
    "Геннадий Георгий Денис Дмитрий Евгений Егор Иван Игорь Илья Кирилл Константин Леонид Максим "
    "Михаил Никита Николай Олег Павел Пётр Роман Руслан Сергей Станислав Степан Юрий Ярослав"
).split()
FEMALE = (
    "Анастасия Анна Валентина Валерия Вера Виктория Галина Дарья Евгения Екатерина Елена "
    "Ирина Ксения Любовь Людмила Марина Мария Надежда Наталья Нина Ольга Светлана Софья "
    "Татьяна Юлия Ёлка"
).split()
FATHERS = (
    "Александр Алексей Андрей Борис Василий Виктор Владимир Геннадий Дмитрий Евгений Иван "
    "Игорь Михаил Николай Олег Павел Пётр Сергей Юрий Анатолий Валентин Григорий Фёдор"
).split()
DEPARTMENTS = [f"Цех №{i}" for i in range(1, 31)] + [
    "Отдел главного механика",
    "Отдел главного энергетика",
    "Служба безопасности",
    "Бухгалтерия",
    "Отдел кадров",
    "Центральная заводская лаборатория",
    "АСУ ТП",
    "Отдел охраны труда и промышленной безопасности",
    "Планово-экономический отдел",
    "Склад ГСМ",
    "Ремонтно-механический цех",
    "Пожарная часть",
    "Дирекция",
    "ИТ-служба",
    "Отдел снабжения",
]
TRANSLIT = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch - y - e yu ya".split(),
        strict=True,
    )
)
HEADER = ("login", "display_name", "department", "site", "phones", "email", "roles", "enabled")


def _latin(text: str) -> str:
    return "".join(TRANSLIT.get(c, c) for c in text.lower()).replace("-", "")


def _patronymic(father: str, female: bool) -> str:
    stem = {"Пётр": "Петр", "Павел": "Павл", "Лев": "Льв"}.get(father, father)
    if stem.endswith("й"):
        return stem[:-1] + ("евна" if female else "евич")
    return stem + ("овна" if female else "ович")


def generate(n: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    rows: list[tuple[str, ...]] = []
    taken: set[str] = set()
    for i in range(n):
        female = rng.random() < 0.45
        surname = rng.choice(SURNAMES) + ("а" if female else "")
        first = rng.choice(FEMALE if female else MALE)
        father = rng.choice(FATHERS)
        name = f"{surname} {first} {_patronymic(father, female)}"
        base = f"{_latin(surname)}.{_latin(first)[0]}{_latin(father)[0]}"
        login, k = base, 1
        while login in taken:
            k += 1
            login = f"{base}{k}"
        taken.add(login)
        site = rng.randrange(len(SITES))
        a, b, c = rng.randint(2, 9), rng.randint(0, 99), rng.randint(0, 99)
        phones = [f"+7 ({AREA[site]}) {a}{b:02d}-{c:02d}"]
        if rng.random() < 0.7:
            phones.append(f"{rng.randint(2, 7)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}")
        roll = rng.random()
        roles = "user;admin" if roll < 0.01 else "user;security_officer" if roll < 0.015 else "user"
        rows.append(
            (
                login,
                name,
                rng.choice(DEPARTMENTS),
                SITES[site][0],
                ";".join(dict.fromkeys(phones)),
                f"{login}@company.example",
                roles,
                "false" if rng.random() < 0.02 else "true",
            )
        )
        if i == 0:
            rows[-1] = rows[-1][:1] + ("Ёлкина-Щукина Наталья Фёдоровна",) + rows[-1][2:]
    return rows


def to_csv(rows: list[tuple[str, ...]]) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    return out.getvalue().encode()


def to_ldif(rows: list[tuple[str, ...]]) -> bytes:
    def attr(name: str, value: str) -> str:
        if value.isascii():
            return f"{name}: {value}\n"
        return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"

    parts = [
        "version: 1\n\n",
        "dn: ou=People,dc=company,dc=example\nobjectClass: organizationalUnit\nou: People\n\n",
    ]
    for login, name, dept, site, phones, email, roles, enabled in rows:
        entry = f"dn: uid={login},ou=People,dc=company,dc=example\nobjectClass: inetOrgPerson\n"
        entry += f"uid: {login}\n" + attr("cn", name) + attr("departmentNumber", dept)
        entry += f"zastavaSite: {site}\n"
        entry += "".join(f"telephoneNumber: {p}\n" for p in phones.split(";"))
        entry += f"mail: {email}\n" + "".join(f"zastavaRole: {r}\n" for r in roles.split(";"))
        entry += f"zastavaEnabled: {enabled.upper()}\n\n"
        parts.append(entry)
    return "".join(parts).encode()


def clock() -> dt.datetime:
    return dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def fresh(path: Path) -> Directory:
    d = Directory.open(path, clock=clock, new_id=lambda: "bench")
    with d.transaction() as tx:
        for site, name in SITES:
            tx.put_site(Site(site, name))
    return d


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    print(f"{label:<52} {elapsed:8.2f} s")
    return result


def sizes(label: str, data: bytes) -> None:
    z6, z9 = len(zlib.compress(data, 6)), len(zlib.compress(data, 9))
    xz = len(lzma.compress(data, preset=6))
    print(
        f"{label:<30} raw {len(data):>11,} B   zlib-6 {z6:>10,} B   zlib-9 {z9:>10,} B   "
        f"lzma {xz:>10,} B"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="write the files and databases here, and keep them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = generate(args.users, args.seed)
        csv_path, ldif_path = work / "users.csv", work / "users.ldif"
        csv_path.write_bytes(to_csv(rows))
        ldif_path.write_bytes(to_ldif(rows))
        csv_size, ldif_size = csv_path.stat().st_size, ldif_path.stat().st_size
        print(f"{args.users:,} users; CSV {csv_size:,} B, LDIF {ldif_size:,} B")
        for name in ("core.db", "core-ldif.db", "edge.db"):
            for suffix in ("", "-wal", "-shm"):
                (work / (name + suffix)).unlink(missing_ok=True)

        with fresh(work / "core.db") as d:
            first = timed(
                "import CSV into a fresh directory",
                lambda: import_file(d, csv_path, FileFormat.CSV),
            )
            assert first.changes == args.users, first.summary()
            again = timed(
                "re-import the same CSV (0 changes)",
                lambda: import_file(d, csv_path, FileFormat.CSV),
            )
            assert again.changes == 0 and again.version == first.version, again.summary()
            with fresh(work / "core-ldif.db") as d2:
                by_ldif = timed(
                    "import LDIF into a fresh directory",
                    lambda: import_file(d2, ldif_path, FileFormat.LDIF),
                )
                assert by_ldif.changes == args.users, by_ldif.summary()
                assert d2.snapshot_for("plant-a")[1] == d.snapshot_for("plant-a")[1]

            version, snapshot = timed("snapshot_for('plant-a')", lambda: d.snapshot_for("plant-a"))
            login = rows[len(rows) // 2][0]
            d.set_enabled(login, False)
            _, changes = timed(
                f"changes_for('plant-a', {version}) after 1 disable",
                lambda: d.changes_for("plant-a", version),
            )
            edge = sqlite3.connect(work / "edge.db", isolation_level=None)
            try:
                edge.execute("PRAGMA journal_mode=WAL")
                timed(
                    "edge: apply_snapshot", lambda: apply_snapshot(edge, snapshot, site="plant-a")
                )
                result = timed(
                    "edge: apply_changes", lambda: apply_changes(edge, changes, site="plant-a")
                )
                assert result.disabled == (login,)
                assert bytes(edge_snapshot(edge)) == d.snapshot_for("plant-a")[1]
            finally:
                edge.close()
        print()
        sizes("full snapshot, one site", snapshot)
        sizes("change set, 1 user disabled", changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
