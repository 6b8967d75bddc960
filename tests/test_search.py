"""Search by a name or email fragment: trigram indexes on PostgreSQL, a scan on SQLite."""

from sqlalchemy import inspect

from webapp.db import get_engine

from helpers import plan


def test_the_search_indexes_are_trigram_gin_on_postgresql_and_absent_on_sqlite(app, backend):
    indexes = {index["name"]: index for index in inspect(get_engine(app)).get_indexes("users")}

    if backend == "postgresql":
        for name, column in (("ix_users_name_trgm", "name"), ("ix_users_email_trgm", "email")):
            assert indexes[name]["column_names"] == [column]
            assert indexes[name]["dialect_options"]["postgresql_using"] == "gin"
            assert indexes[name]["dialect_options"]["postgresql_ops"] == {column: "gin_trgm_ops"}
    else:
        assert set(indexes) == {"uq_users_email", "ix_users_name_id", "ix_users_created_at_id"}  # no trigrams


def test_a_search_on_a_large_table_reads_the_trigram_indexes_on_postgresql_and_scans_on_sqlite(
    store, client, statements, rolled_back, backend
):
    store.add_numbered_users(20_000)
    store.add_users(("Ada Lovelace", "countess@example.com"))
    # A table in its steady state, as (auto)vacuum leaves it: the GIN pending lists
    # merged into the indexes, and statistics that describe the rows.
    if backend == "postgresql":
        rolled_back.exec_driver_sql(
            "SELECT gin_clean_pending_list('ix_users_name_trgm'), gin_clean_pending_list('ix_users_email_trgm')"
        )
    rolled_back.exec_driver_sql("ANALYZE users")

    statements.clear()
    body = client.get("/api/users?q=LOVEL").get_json()

    assert [user["name"] for user in body["items"]] == ["Ada Lovelace"]
    assert len(statements) == 1  # the page and its capped count: both must use the indexes
    for statement, parameters in statements:
        explained = plan(rolled_back, backend, statement, parameters)
        if backend == "postgresql":
            assert "Bitmap Index Scan on ix_users_name_trgm" in explained, explained
            assert "Bitmap Index Scan on ix_users_email_trgm" in explained, explained
            assert "Seq Scan" not in explained, explained
        else:
            assert "SCAN users" in explained, explained
