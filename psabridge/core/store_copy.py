"""Copying a whole store into another, across engines (SQLite <-> PostgreSQL): `psabridge store
copy SRC DST`.

Every table is copied row for row, ids included, the connectors' sealed secrets as they are
(they open with the same key file, `PSABRIDGE_SECRET_KEY` or the user's, on either store). The
leases are not: they are held by running processes, and their times are by the source's clock;
stop psabridge's workers and servers before copying, and start them on the new store after.
"""

from __future__ import annotations

import attrs

from psabridge.core.errors import StoreError
from psabridge.core.store import PLUGIN_TABLES, Store

# Every table that holds state worth keeping, in the order they are copied.
COPIED_TABLES = (*PLUGIN_TABLES, "journal", "webhook_messages")


@attrs.frozen
class CopyReport:
    source: str  # how each store is named to the admin (a URL's password masked)
    destination: str
    replaced: bool  # the destination held rows, and they were replaced
    rows: dict[str, int]  # table -> rows copied (and found in the destination after)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def row_counts(store: Store) -> dict[str, int]:
    return {table: sum(1 for _ in store.table_rows(table)) for table in COPIED_TABLES}


def _refuse_rows(destination: Store, destination_name: str, replace: bool) -> dict[str, int]:
    """The rows `destination` holds, per table; refused when it holds some and not `replace`."""
    held = {table: n for table, n in row_counts(destination).items() if n}
    if held and not replace:
        what = ", ".join(f"{table} {n}" for table, n in held.items())
        raise StoreError(f"the destination store {destination_name} is not empty (rows: {what}); "
                         "copy into a new, empty store, or pass --replace to replace its rows "
                         "with the source's")
    return held


def planned_copy(source: Store, destination: Store | None, source_name: str,
                 destination_name: str, replace: bool = False) -> CopyReport:
    """What `copy_store` would copy (rows per table), refusing what it would refuse; writes
    nothing. `destination` None: a store that does not exist yet (so empty)."""
    held = _refuse_rows(destination, destination_name, replace) if destination else {}
    return CopyReport(source_name, destination_name, bool(held), row_counts(source))


def copy_store(source: Store, destination: Store, source_name: str, destination_name: str,
               replace: bool = False) -> CopyReport:
    """Copy every table of `source` into `destination` in one transaction, then check that each
    table holds as many rows as the source's. A destination that holds rows is refused unless
    `replace`, when its rows are replaced; nothing is written when the copy fails."""
    held = _refuse_rows(destination, destination_name, replace)
    expected = {}
    with destination.transaction(fenced=False):
        for table in COPIED_TABLES:
            rows = list(source.table_rows(table))
            expected[table] = len(rows)
            destination.replace_rows(table, rows)
        found = {table: sum(1 for _ in destination.table_rows(table)) for table in COPIED_TABLES}
        wrong = {table: (expected[table], found[table]) for table in COPIED_TABLES
                 if found[table] != expected[table]}
        if wrong:  # raised inside the transaction: nothing is kept
            what = ", ".join(f"{table}: {want} in the source, {got} copied"
                             for table, (want, got) in wrong.items())
            raise StoreError(f"the copy into {destination_name} was not saved: the row counts "
                             f"differ ({what})")
    return CopyReport(source_name, destination_name, bool(held), expected)
