"""The sqlite backend's file layout and statements: the schema (table, counters kept by triggers),
the SQL the backend runs, and how SQLite reports a lock (see :mod:`.sqlite_backend`)."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

TABLE: Final = "entries"

# SQLite's messages for a lock held by another connection (SQLITE_BUSY / SQLITE_LOCKED).
BUSY_MESSAGES: Final = ("database is locked", "database table is locked", "database schema is locked")
# PRAGMA synchronous reads back as a number.
SYNCHRONOUS: Final = {"sync": ("FULL", 2), "nosync": ("NORMAL", 1)}

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS funnelkvs_meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO funnelkvs_meta (id, entries, bytes) VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS funnelkvs_meta_insert AFTER INSERT ON "{TABLE}" BEGIN
    UPDATE funnelkvs_meta SET entries = entries + 1, bytes = bytes + ifnull(length(NEW.value), 0)
    WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS funnelkvs_meta_update AFTER UPDATE OF value ON "{TABLE}" BEGIN
    UPDATE funnelkvs_meta
    SET bytes = bytes - ifnull(length(OLD.value), 0) + ifnull(length(NEW.value), 0) WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS funnelkvs_meta_delete AFTER DELETE ON "{TABLE}" BEGIN
    UPDATE funnelkvs_meta SET entries = entries - 1, bytes = bytes - ifnull(length(OLD.value), 0)
    WHERE id = 0;
END;
"""
# An upsert, not sqlitedict's REPLACE: REPLACE deletes the old row without firing the delete trigger
# (unless recursive_triggers is on), which would leave the counters wrong.
PUT: Final = (
    f'INSERT INTO "{TABLE}" (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'
)
GET: Final = f'SELECT value FROM "{TABLE}" WHERE key = ?'
DELETE: Final = f'DELETE FROM "{TABLE}" WHERE key = ? RETURNING 1'
COUNTERS: Final = "SELECT entries, bytes FROM funnelkvs_meta WHERE id = 0"


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return str(exc).startswith(BUSY_MESSAGES)


def value_of(rows: list[Any]) -> bytes | None:
    if not rows:
        return None
    value = rows[0][0]
    return b"" if value is None else bytes(value)
