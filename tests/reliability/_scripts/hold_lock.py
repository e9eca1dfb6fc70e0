"""Hold the write lock of an SQLite file, as another process busy with it would.

usage: hold_lock.py PATH

Opens PATH, takes `BEGIN EXCLUSIVE`, prints "LOCKED", and holds the lock until a line arrives on
stdin (or 60 s pass), then commits and exits.
"""

from __future__ import annotations

import select
import sqlite3
import sys


def main() -> None:
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
    conn.execute("BEGIN EXCLUSIVE")
    print("LOCKED", flush=True)
    select.select([sys.stdin], [], [], 60)
    conn.execute("COMMIT")
    conn.close()


if __name__ == "__main__":
    main()
