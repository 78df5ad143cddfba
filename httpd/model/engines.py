"""The store's persistence seam: where the rows of each stored class live.

An engine creates or migrates the tables (one per class, one column per stored field, `ref`
the primary key; a field new to the datamodel is a new column, nothing more), reads them back
at start-up, and commits a batch of row writes in one transaction. Two engines:

- `SQLiteEngine`: a file in the data directory (WAL), the embedded default of a lone host;
- `PostgresEngine`: a PostgreSQL database (`--database postgresql://...`), through psycopg 3
  (the `postgresql` extra), for hosts that share one database.

Engines are blocking and thread-confined: the store's writer thread owns one after `open()`.
No asyncio here.

Several agents may share one PostgreSQL database. Each commit then also appends what it
touched to a change log (`xcp_changes`, ids in commit order: writers take one advisory lock per
commit) and NOTIFYs; `follow()` LISTENs on a connection of its own and hands every other
agent's change, with the row as the database holds it now, to the store.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import uuid as _uuid
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

__all__ = ["Engine", "Op", "SQLiteEngine", "PostgresEngine", "engine_for", "Column",
           "host_uuids"]

# ("put", class, [ref, value, ...]) or ("del", class, ref)
Op = tuple
# (field name, the type's SQL type as SQLite names it: TEXT, INTEGER or REAL)
Column = tuple[str, str]
# another agent's change: (class, ref, the row's values in column order or None (deleted),
# the change-log id of that agent's latest change of it)
Remote = tuple[str, str, "tuple | None", int]

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str

    def open(self, tables: dict[str, Sequence[Column]]) -> None:
        """Connect; create missing tables and columns."""

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple]:
        """(ref, value, ...) of every row of `table`; a column no row set reads None."""

    def commit(self, ops: Iterable[Op]) -> int | None:
        """Apply every op in one transaction (all or nothing); the change-log id it ends at
        (None: no change log)."""

    def close(self) -> None: ...

    def follow(self, deliver: Callable[[list[Remote], int], None]) -> None:
        """Call `deliver(changes, upto)` (in a thread of the engine's) with the changes other
        agents commit to this database from now on, and the change-log id read up to; a no-op
        where no other agent can write."""

    @property
    def shared(self) -> bool:
        """Whether other agents may use this database (a pool's)."""

    def latest_change(self) -> int:
        """The change-log id of the latest commit by any agent (0: none, or no change log).
        Blocking, from any thread."""

    def lease(self, on_change: Callable[[bool], None]) -> "Lease":
        """The pool master's lease: `on_change(held)` (in a thread of the engine's) each time
        this agent gets or loses it. Where no other agent can write, held from the start."""


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

    def commit(self, ops: Iterable[Op]) -> int | None:
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

    def follow(self, deliver: Callable[[list[Remote], int], None]) -> None:
        pass            # the data directory's lock: this agent is the file's only writer

    shared = False

    def latest_change(self) -> int:
        return 0

    def lease(self, on_change: Callable[[bool], None]) -> "Lease":
        on_change(True)
        return Lease()


class Lease:
    """What `Engine.lease` returns: stop it when the agent stops; `contend` says whether
    this agent tries to get the lease while it does not hold it (a pool's designated master
    takes it while the others wait); `release` gives it up (it is tried again when
    `contend` allows)."""

    def __init__(self) -> None:
        self.contend = True

    def release(self) -> None:
        pass

    def poke(self) -> None:
        """Try now rather than at the next check."""

    def first_tried(self, timeout: float) -> None:
        """Blocks until the first try for the lease is over (got or not), up to `timeout`."""

    def stop(self) -> None:
        pass


# SQLite's affinities as PostgreSQL types (64-bit ints, doubles)
_PG_TYPES = {"TEXT": "TEXT", "INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}


def _pg_value(v: Any) -> Any:
    return int(v) if type(v) is bool else v      # booleans are INTEGER columns, as in SQLite


class PostgresEngine:
    """One PostgreSQL connection (psycopg 3), in autocommit off: each commit is one
    transaction; a failed one is rolled back and the connection stays usable."""

    name = "postgresql"

    KEEP_CHANGES = 100_000     # change-log rows kept for followers that lag behind

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = None
        self.origin = str(_uuid.uuid4())        # this agent's mark in the change log
        self._put: dict[str, str] = {}
        self._columns: dict[str, list[str]] = {}
        self._follower: _Follower | None = None
        self._commits = 0
        self._fence = None                      # latest_change()'s connection
        self._fence_lock = threading.Lock()

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
            conn.execute("CREATE TABLE IF NOT EXISTS xcp_changes (id BIGSERIAL PRIMARY KEY, "
                         "origin TEXT NOT NULL, cls TEXT NOT NULL, ref TEXT NOT NULL)")
        conn.commit()
        for name, cols in tables.items():
            names = [c for c, _ in cols]
            self._columns[name] = names
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

    def _lost(self) -> bool:
        return self.conn.closed or self.conn.broken

    def commit(self, ops: Iterable[Op]) -> int | None:
        """One transaction; if the connection is lost meanwhile (the server restarted, a
        network cut), once more on a new one: the puts (whole rows) and deletes are idempotent,
        so whether the first try committed or not, the second leaves the same rows."""
        import psycopg
        done: list[Op] = []

        def taken() -> Iterator[Op]:
            for op in ops:
                done.append(op)
                yield op
        if self._lost():
            self.conn = psycopg.connect(self.dsn)
        try:
            return self._commit(taken())
        except psycopg.OperationalError:
            if not self._lost():
                raise
            log.warning("the database connection was lost; committing again on a new one")
            self.conn = psycopg.connect(self.dsn)
            return self._commit(itertools.chain(list(done), taken()))

    def _commit(self, ops: Iterable[Op]) -> int | None:
        try:
            touched: list[tuple[str, str]] = []
            last = None
            with self.conn.cursor() as cur:
                # commits one at a time across agents: change-log ids follow commit order
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('xcp-httpd changes'))")
                for op in ops:
                    if op[0] == "put":
                        cur.execute(self._put[op[1]], [_pg_value(v) for v in op[2]])
                        touched.append((op[1], op[2][0]))
                    else:
                        cur.execute(f'DELETE FROM "{op[1]}" WHERE ref = %s', (op[2],))
                        touched.append((op[1], op[2]))
                if touched:
                    cur.executemany("INSERT INTO xcp_changes (origin, cls, ref) "
                                    "VALUES (%s, %s, %s)",
                                    [(self.origin, c, r) for c, r in touched])
                    cur.execute("SELECT currval('xcp_changes_id_seq')")
                    last = cur.fetchone()[0]
                    cur.execute("NOTIFY xcp_changes")     # delivered when this commits
                    self._commits += 1
                    if self._commits % 1000 == 0:
                        cur.execute("DELETE FROM xcp_changes WHERE id < "
                                    "(SELECT max(id) FROM xcp_changes) - %s",
                                    (self.KEEP_CHANGES,))
            self.conn.commit()
            return last
        except BaseException:
            if not self._lost():
                self.conn.rollback()
            raise

    def follow(self, deliver: Callable[[list[Remote], int], None]) -> None:
        self._follower = _Follower(self.dsn, self.origin, self._columns, deliver)
        deliver([], self._follower.last)         # read up to here: the load has the rest
        self._follower.start()

    shared = True

    def latest_change(self) -> int:
        import psycopg
        with self._fence_lock:
            for attempt in (1, 2):
                if self._fence is None or self._fence.closed or self._fence.broken:
                    self._fence = psycopg.connect(self.dsn, autocommit=True)
                try:
                    return self._fence.execute("SELECT coalesce(max(id), 0) FROM xcp_changes"
                                               ).fetchone()[0]
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    self._fence.close()
        raise AssertionError("unreachable")

    def lease(self, on_change: Callable[[bool], None]) -> "Lease":
        lease = _MasterLease(self.dsn, on_change)
        lease.start()
        return lease

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        if self._fence is not None:
            self._fence.close()
            self._fence = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Follower(threading.Thread):
    """LISTEN xcp_changes on a connection of its own; after each NOTIFY, the change-log rows
    since the last one read (other agents' only), each with its record's current row."""

    RETRY = 1.0        # seconds between reconnections

    def __init__(self, dsn: str, origin: str, columns: dict[str, list[str]],
                 deliver: Callable[[list[Remote], int], None]) -> None:
        super().__init__(name="store-follower", daemon=True)
        self.dsn = dsn
        self.origin, self.columns, self.deliver = origin, columns, deliver
        self._connect()
        # from now on: what was committed before this is in the tables the store loads next
        self.last = self.conn.execute("SELECT coalesce(max(id), 0) FROM xcp_changes"
                                      ).fetchone()[0]
        self._stopping = threading.Event()

    def _connect(self) -> None:
        import psycopg
        # named, with the agent's pid, so pg_stat_activity tells whose follower a backend is
        self.conn = psycopg.connect(self.dsn, autocommit=True,
                                    application_name=f"xcp-httpd follower {os.getpid()}")
        self.conn.execute("LISTEN xcp_changes")

    def run(self) -> None:
        import psycopg
        while not self._stopping.is_set():
            try:
                for _ in self.conn.notifies(timeout=1.0, stop_after=1):
                    pass
                if not self._stopping.is_set():
                    self._catch_up()
            except psycopg.OperationalError as e:
                if self._stopping.is_set():
                    return
                # the change log keeps what happened meanwhile: nothing is missed
                log.warning("following the database: %s; connecting again", " ".join(
                    str(e).split()))
                self._reconnect()

    def _reconnect(self) -> None:
        import psycopg
        while not self._stopping.wait(self.RETRY):
            try:
                self.conn.close()
                self._connect()
                self._catch_up()
                return
            except psycopg.OperationalError:
                continue

    def _catch_up(self) -> None:
        rows = self.conn.execute("SELECT id, origin, cls, ref FROM xcp_changes WHERE id > %s "
                                 "ORDER BY id", (self.last,)).fetchall()
        if not rows:
            return
        self.last = rows[-1][0]
        wanted: dict[tuple[str, str], int] = {}      # in order, each with its latest id
        for cid, origin, cls, ref in rows:
            if origin != self.origin and cls in self.columns:
                wanted.pop((cls, ref), None)
                wanted[(cls, ref)] = cid
        out: list[Remote] = []
        for (cls, ref), cid in wanted.items():
            row = self.conn.execute(f'SELECT {_names(self.columns[cls])} FROM "{cls}" '
                                    "WHERE ref = %s", (ref,)).fetchone()
            out.append((cls, ref, tuple(row) if row is not None else None, cid))
        self.deliver(out, self.last)     # even empty: the store forgets ids up to `last`

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)
        self.conn.close()


class _MasterLease(Lease, threading.Thread):
    """The pool master's lease: a session-level advisory lock on a connection of its own.
    PostgreSQL frees it when that session ends (the agent died, or its connection did), and
    another agent takes it at its next try. The holder checks its connection every CHECK
    seconds and says it lost the lease at the first failure: a master cut off from the
    database stops acting as master before another can be elected."""

    CHECK = 1.0
    KEY = "xcp-httpd pool master"

    def __init__(self, dsn: str, on_change: Callable[[bool], None]) -> None:
        Lease.__init__(self)
        threading.Thread.__init__(self, name="pool-lease", daemon=True)
        self.dsn = dsn
        self.on_change = on_change
        self.held = False
        self._wake = threading.Event()
        self._stopping = False
        self._release = False
        self._tried = threading.Event()
        self.conn = None

    def run(self) -> None:
        import psycopg
        while not self._stopping:
            try:
                self._step()
            except psycopg.Error as e:
                log.warning("pool lease: %s", " ".join(str(e).split()))
                self._drop()
            self._tried.set()        # (after on_change: the loop hears of the lease first)
            self._wake.wait(self.CHECK)
            self._wake.clear()
        self._drop()

    def _step(self) -> None:
        import psycopg
        if self.conn is None or self.conn.closed or self.conn.broken:
            # keepalives: a master whose network to the database is cut notices in seconds
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                        keepalives=1, keepalives_idle=2,
                                        keepalives_interval=1, keepalives_count=2,
                                        application_name="xcp-httpd pool lease")
        if self.held and self._release:
            self._release = False
            self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.KEY,))
            self.held = False
            self.on_change(False)
        elif self.held:
            self.conn.execute("SELECT 1")
        elif self.contend:
            got = self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                    (self.KEY,)).fetchone()[0]
            if got:
                self.held = True
                self.on_change(True)

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - a broken connection closes as it can
                pass
            self.conn = None
        if self.held:
            self.held = False
            self.on_change(False)

    def release(self) -> None:
        self._release = True
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def first_tried(self, timeout: float) -> None:
        self._tried.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join(5)


def host_uuids(dsn: str) -> set[str]:
    """The uuids of the hosts a PostgreSQL database holds (none: no such table yet)."""
    import psycopg
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        try:
            return {r[0] for r in conn.execute('SELECT uuid FROM "host"')}
        except psycopg.errors.UndefinedTable:
            return set()


def engine_for(database: str, sqlite_path: str, *, synchronous: str = "FULL") -> Engine:
    """`--database`: `sqlite` (the file in the data directory) or a postgresql:// URL."""
    if database == "sqlite":
        return SQLiteEngine(sqlite_path, synchronous=synchronous)
    if database.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(database)
    raise ValueError(f"--database: {database!r} is neither sqlite nor a postgresql:// URL")
