"""The tables, as typed ORM classes."""

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores it as timestamptz; SQLite has no time zones, so it stores
    naive UTC and we put the zone back on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value  # psycopg2 hands over UTC itself when the session's TimeZone is UTC
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def postgresql_only(index: Index) -> Index:
    """An index that exists on PostgreSQL only: CREATE INDEX is emitted there alone
    (ddl_if), and migrations.include_object hides it from autogenerate elsewhere."""
    index.info["only_on"] = "postgresql"
    return index.ddl_if(dialect="postgresql")


class Base(DeclarativeBase):
    pass


# A 64-bit id that is never handed out twice (migration 0005): an identity column on
# PostgreSQL; on SQLite an INTEGER PRIMARY KEY (SQLite's integers are 64-bit) of an
# AUTOINCREMENT table, so the id of a deleted newest row is not given to the next.
BigId = BigInteger().with_variant(Integer, "sqlite")
NEVER_REUSED = {"sqlite_autoincrement": True}


def id_column() -> Mapped[int]:
    return mapped_column(BigId, Identity(), primary_key=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(100))
    # Stored lower-case (the schema normalizes it), so the plain unique index is
    # also a case-insensitive one.
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Bumped by SQLAlchemy on every UPDATE, which also checks it in the WHERE clause:
    # a write based on a stale read matches no row instead of overwriting silently.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # The users are also the accounts: admin or member (accounts.ROLES).
    role: Mapped[str] = mapped_column(String(10), server_default=text("'member'"))
    # Without one a user cannot sign in (imported users, for one). Never answered,
    # logged or kept in the history (it records "password changed").
    password_hash: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("uq_users_email", "email", unique=True),
        CheckConstraint("role IN ('admin', 'member')", name="ck_users_role"),
        # Sorted lists page by keyset on (column, id) (users._after); the email's
        # order is uq_users_email's.
        Index("ix_users_name_id", "name", "id"),
        Index("ix_users_created_at_id", "created_at", "id"),
        # Substring search (ILIKE '%fragment%') on PostgreSQL: trigram GIN indexes.
        # SQLite has no such index and scans; see postgresql_only.
        postgresql_only(
            Index("ix_users_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"})
        ),
        postgresql_only(
            Index("ix_users_email_trgm", "email", postgresql_using="gin", postgresql_ops={"email": "gin_trgm_ops"})
        ),
        NEVER_REUSED,
    )
    __mapper_args__ = {"version_id_col": version}

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


class AuditEntry(Base):
    """One insert, update or delete of a user, written in the same transaction.

    user_id is deliberately not a foreign key: a deleted user's history stays.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(10))  # insert, update, delete
    # {field: [old, new]}; old is null on insert, new is null on delete.
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # Who did it: the signed-in user, or null for the CLI and other system work.
    # Not a foreign key either: an actor deleted since stays named by id.
    actor_id: Mapped[int | None] = mapped_column(BigId)

    # A user's history is read newest first.
    __table_args__ = (Index("ix_audit_log_user_id_id", "user_id", "id"), NEVER_REUSED)


class ApiToken(Base):
    """A bearer token for the API. The secret is shown once, when it is made, and
    kept only as its SHA-256: 32 random bytes need no slow hash to resist guessing."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (NEVER_REUSED,)


class SignInFailures(Base):
    """Failed sign-ins per email in the current window, shared by every worker and
    instance: the count that turns further attempts away (accounts.SIGN_IN_LIMIT)."""

    __tablename__ = "sign_in_failures"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    failures: Mapped[int]
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)


class ImportReportRecord(Base):
    """The report of an import made on the upload form, kept briefly so that the
    form can redirect (post/redirect/get) to a page that shows it: any worker or
    instance can answer that GET. Deleted once an hour old (bulk.reports)."""

    __tablename__ = "import_reports"

    token: Mapped[str] = mapped_column(String(43), primary_key=True)  # 32 random bytes, urlsafe
    actor_id: Mapped[int | None] = mapped_column(BigId)  # who imported: the only one who may read it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


# The tables themselves, for Core statements that build no ORM object (reads
# answered as rows, bulk inserts, the audit rows written by the database).
users_table = cast(Table, User.__table__)
audit_table = cast(Table, AuditEntry.__table__)
tokens_table = cast(Table, ApiToken.__table__)
failures_table = cast(Table, SignInFailures.__table__)
import_reports_table = cast(Table, ImportReportRecord.__table__)
