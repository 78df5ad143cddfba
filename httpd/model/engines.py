"""The store's persistence seam: where the rows of each stored class live.

An engine creates or migrates the tables (one per class, one column per stored field, `ref`
the primary key; a field new to the datamodel is a new column, nothing more), reads them back
at start-up, and commits a batch of row writes in one transaction. Two engines:

- `SQLiteEngine`: a file in the data directory (WAL), the embedded default of a lone host;
- `PostgresEngine`: a PostgreSQL database (`--database postgresql://...`), through psycopg 3
  (the `postgresql` extra), for hosts that share one database.

Engines are blocking and thread-confined: the store's writer thread owns one after `open()`.
No asyncio here.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Iterator, Protocol, Sequence

__all__ = ["Engine", "Op", "SQLiteEngine", "PostgresEngine", "engine_for", "Column"]

# ("put", class, [ref, value, ...]) or ("del", class, ref)
Op = tuple
# (field name, the type's SQL type as SQLite names it: TEXT, INTEGER or REAL)
Column = tuple[str, str]


class Engine(Protocol):
    name: str

    def open(self, tables: dict[str, Sequence[Column]]) -> None:
        """Connect; create missing tables and columns."""

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple]:
        """(ref, value, ...) of every row of `table`; a column no row set reads None."""

    def commit(self, ops: Iterable[Op]) -> None:
        """Apply every op in one transaction (all or nothing)."""

    def close(self) -> None: ...


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


class SQLiteEngine:
    name = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self.conn: sqlite3.Connection | None = None
        self._put: dict[str, str] = {}

    def open(self, tables: dict[str, Sequence[Column]]) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.isolation_level = "DEFERRED"
        for name, cols in tables.items():
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (ref TEXT PRIMARY KEY)')
            have = {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')}
            for col, sql in cols:
                if col not in have:
                    conn.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {sql}')
            conn.commit()
            names = [c for c, _ in cols]
            self._put[name] = 'INSERT OR REPLACE INTO "{}" (ref, {}) VALUES (?, {})'.format(
                name, _names(names), ", ".join("?" for _ in names))
        self.conn = conn

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple]:
        yield from self.conn.execute(f'SELECT ref, {_names(columns)} FROM "{table}"')

    def commit(self, ops: Iterable[Op]) -> None:
        with self.conn:
            for op in ops:
                if op[0] == "put":
                    self.conn.execute(self._put[op[1]], op[2])
                else:
                    self.conn.execute(f'DELETE FROM "{op[1]}" WHERE ref = ?', (op[2],))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# SQLite's affinities as PostgreSQL types (64-bit ints, doubles)
_PG_TYPES = {"TEXT": "TEXT", "INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}


def _pg_value(v: Any) -> Any:
    return int(v) if type(v) is bool else v      # booleans are INTEGER columns, as in SQLite


class PostgresEngine:
    """One PostgreSQL connection (psycopg 3), in autocommit off: each commit is one
    transaction; a failed one is rolled back and the connection stays usable."""

    name = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = None
        self._put: dict[str, str] = {}

    def open(self, tables: dict[str, Sequence[Column]]) -> None:
        try:
            import psycopg
        except ImportError:
            raise RuntimeError("--database postgresql:// needs psycopg 3: "
                               "pip install 'xcp-httpd[postgresql]'") from None
        conn = psycopg.connect(self.dsn)
        with conn.transaction():
            # one agent migrates at a time (others wait here), so two never add a column twice
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('xcp-httpd schema'))")
            for name, cols in tables.items():
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (ref TEXT PRIMARY KEY)')
                have = {r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s", (name,))}
                for col, sql in cols:
                    if col not in have:
                        conn.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {_PG_TYPES[sql]}')
        conn.commit()
        for name, cols in tables.items():
            names = [c for c, _ in cols]
            self._put[name] = 'INSERT INTO "{}" (ref, {}) VALUES (%s, {}) ON CONFLICT (ref) DO ' \
                'UPDATE SET {}'.format(name, _names(names), ", ".join("%s" for _ in names),
                                       ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in names))
        self.conn = conn

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(f'SELECT ref, {_names(columns)} FROM "{table}"')
            rows = cur.fetchall()
        self.conn.commit()
        yield from rows

    def commit(self, ops: Iterable[Op]) -> None:
        try:
            with self.conn.cursor() as cur:
                for op in ops:
                    if op[0] == "put":
                        cur.execute(self._put[op[1]], [_pg_value(v) for v in op[2]])
                    else:
                        cur.execute(f'DELETE FROM "{op[1]}" WHERE ref = %s', (op[2],))
            self.conn.commit()
        except BaseException:
            if not self.conn.closed:
                self.conn.rollback()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def engine_for(database: str, sqlite_path: str, *, synchronous: str = "FULL") -> Engine:
    """`--database`: `sqlite` (the file in the data directory) or a postgresql:// URL."""
    if database == "sqlite":
        return SQLiteEngine(sqlite_path, synchronous=synchronous)
    if database.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(database)
    raise ValueError(f"--database: {database!r} is neither sqlite nor a postgresql:// URL")
