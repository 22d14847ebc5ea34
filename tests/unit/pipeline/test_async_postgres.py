"""The libpq connection string and database errors scrubbed of the password (no server)."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pipeline.async_postgres import libpq_conninfo, without_password

PASSWORD = "S3cr3t rvg-20 'q' \\b%"
URL = make_url("postgresql+psycopg://svc@db.internal:6432/orders?sslmode=require&connect_timeout=5")


def test_the_conninfo_gives_libpq_every_part_as_written() -> None:
    # SQLAlchemy's URL kept the space as it is: libpq refused it, quoting the whole password.
    parts = conninfo_to_dict(libpq_conninfo(create_engine(URL.set(password=PASSWORD))))

    assert parts == {
        "host": "db.internal",
        "port": "6432",
        "user": "svc",
        "password": PASSWORD,
        "dbname": "orders",
        "sslmode": "require",
        "connect_timeout": "5",
    }


def test_a_database_error_is_said_without_the_password_in_any_form() -> None:
    engine = create_engine(URL.set(password=PASSWORD))
    said = (
        f'unexpected spaces found in "{PASSWORD}"; as a URL: S3cr3t%20rvg-20%20%27q%27%20%5Cb%25 '
        "or S3cr3t+rvg-20+%27q%27+%5Cb%25"
    )

    scrubbed = without_password(said, engine)

    assert "S3cr3t" not in scrubbed
    assert scrubbed == 'unexpected spaces found in "***"; as a URL: *** or ***'
    assert without_password("no password here", create_engine(URL)) == "no password here"
