"""The teacher's persistent response cache: one SQLite file per project.

Every answer is committed the moment it arrives, so a crash or `kill -9` loses only the requests
still in flight. Commits are not flushed to the disk one by one (WAL with synchronous NORMAL):
a flush per answer blocks every request in flight while it runs, 0.5 ms on an idle local disk
but 6 ms on a busy one, where one teacher process sent 172 instead of 360 requests/s through the
local test server (network file systems flush slower still). A power cut or kernel crash may
lose the last answers (never corrupt the file); the rerun asks them again. WAL mode and a busy
timeout let several Snakemake jobs (separate processes) read and write the same file at once.
Only accepted answers are stored; failures are not, so a rerun tries them again.

Tables:
- `responses`: cache key -> reply text and its token counts; `batch` marks answers bought through
  the Batch API (half price).
- `batch_items`: one row per (key, batch id) a request was submitted under, with why it failed
  there if it did; `batches`: each submitted batch and whether its results have been collected.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    batch INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, created REAL NOT NULL, collected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS batch_items (
    key TEXT NOT NULL, batch_id TEXT NOT NULL, error TEXT, PRIMARY KEY (key, batch_id));
"""


@dataclass(frozen=True)
class Cached:
    text: str
    prompt_tokens: int
    completion_tokens: int
    batch: bool


class Cache:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit (isolation_level=None): each statement is its own transaction, committed on
        # return (in the WAL, which survives the process; the WAL reaches the disk at checkpoints)
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 60000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get_many(self, keys: list[str]) -> dict[str, Cached]:
        found: dict[str, Cached] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            chunk = unique[i:i + 500]
            rows = self.db.execute(
                "SELECT key, text, prompt_tokens, completion_tokens, batch FROM responses "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, text, pt, ct, batch in rows:
                found[key] = Cached(text, pt, ct, bool(batch))
        return found

    def put(self, key: str, backend: str, model: str, text: str, prompt_tokens: int,
            completion_tokens: int, batch: bool = False) -> None:
        self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, backend, model, text, prompt_tokens, completion_tokens, int(batch),
                         time.time()))

    def add_batch(self, batch_id: str, keys: list[str]) -> None:
        with self.db:  # the batch and its items appear together or not at all
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO batches (batch_id, created) VALUES (?, ?)",
                            (batch_id, time.time()))
            self.db.executemany("INSERT OR IGNORE INTO batch_items (key, batch_id) VALUES (?, ?)",
                                [(k, batch_id) for k in keys])

    def open_batches(self) -> dict[str, list[str]]:
        """Batches not collected yet, with the keys each was submitted for."""
        out: dict[str, list[str]] = {}
        for batch_id, key in self.db.execute(
                "SELECT b.batch_id, i.key FROM batches b JOIN batch_items i USING (batch_id) "
                "WHERE NOT b.collected ORDER BY b.created"):
            out.setdefault(batch_id, []).append(key)
        return out

    def mark_collected(self, batch_id: str) -> None:
        self.db.execute("UPDATE batches SET collected = 1 WHERE batch_id = ?", (batch_id,))

    def submissions(self, key: str) -> int:
        """How many batches `key` has been submitted in (bounds resubmission of failures)."""
        return self.db.execute("SELECT COUNT(*) FROM batch_items WHERE key = ?", (key,)).fetchone()[0]

    def set_batch_error(self, key: str, batch_id: str, error: str) -> None:
        self.db.execute("UPDATE batch_items SET error = ? WHERE key = ? AND batch_id = ?",
                        (error, key, batch_id))

    def last_batch_error(self, key: str) -> str:
        row = self.db.execute("SELECT i.error FROM batch_items i JOIN batches b USING (batch_id) "
                              "WHERE i.key = ? ORDER BY b.created DESC LIMIT 1", (key,)).fetchone()
        return (row and row[0]) or "no reply in its batch"
