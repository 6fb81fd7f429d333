"""Check the history store the nightly is about to push, in the job that holds the write token — stdlib only.

The store comes from the `history` job, which installed PyPI packages and ran them: whatever it uploaded is input,
not a result. Before `history_store.sh keep` pushes it, this script checks it against the store that is on the
branch now (``--before``, taken from the remote itself, not from the artifact):

  - it is exactly the schema perfsuite creates (no trigger, view, table or index of anyone else's), of the current
    format, and passes SQLite's integrity and foreign-key checks;
  - every row of the branch's store is in it unchanged (no run, measurement, cell, machine, metric or
    acknowledgement removed or altered);
  - at most ``--max-new-runs`` runs were added (one nightly adds one), each of ``--commit`` when given (the commit
    the nightly measured), with a hex commit and an ISO date; every new measurement belongs to a new run and is a
    positive finite number; no acknowledgement was added or changed (the nightly adds none; ``--allow-acks`` for a
    person keeping their own `perfsuite history ack`, docs/ci.md, "Continuous integration").

The definitions are perfsuite's own (perfsuite/history/schema.py, loaded by its path from this checkout: nothing
is installed or imported from the package).

    python3 .github/scripts/verify_store.py [--before BRANCH.sqlite] --after NEW.sqlite [--max-new-runs 1]
                                            [--commit SHA] [--allow-acks]

Exit 0 (and one line saying what was verified) or 1 with one ::error:: line per problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import sys
from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "perfsuite" / "history" / "schema.py"


def load_schema():
    spec = importlib.util.spec_from_file_location("perfsuite_history_schema", SCHEMA_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problems(after: Path, before: Path | None, max_new_runs: int, commit: str | None,
             allow_acks: bool = False) -> tuple[list[str], str]:
    """(every problem found, a line saying what was verified)."""
    schema = load_schema()
    try:
        conn = schema.connect(after, "ro")
    except (sqlite3.Error, schema.StoreProblem) as e:
        return [f"{after}: cannot open it as a store ({e})"], ""
    try:
        found = _store_problems(conn, schema, after)
        if found:
            return found, ""
        if before is not None:
            conn.execute("ATTACH DATABASE ? AS old", (schema.store_uri(before, "ro"),))
        else:  # the first night: nothing kept yet, so every row is new
            conn.execute("ATTACH DATABASE ':memory:' AS old")
            for statement in schema.statements():
                if statement.startswith("CREATE TABLE "):
                    conn.execute(statement.replace("CREATE TABLE ", "CREATE TABLE old.", 1))
        return _row_problems(conn, schema, max_new_runs, commit, allow_acks)
    except sqlite3.Error as e:
        return [f"{after}: {e}"], ""
    finally:
        conn.close()


def _store_problems(conn: sqlite3.Connection, schema, path: Path) -> list[str]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != schema.STORE_VERSION:
        return [f"{path}: store format {version}, not {schema.STORE_VERSION}"]
    out = schema.schema_problems(conn) or schema.integrity_problems(conn)
    bad_keys = conn.execute("PRAGMA foreign_key_check").fetchall()
    if bad_keys:
        out.append(f"{len(bad_keys)} row(s) refer to rows that do not exist (first: table {bad_keys[0][0]})")
    return [f"{path}: {p}" for p in out]


def _row_problems(conn: sqlite3.Connection, schema, max_new_runs: int, commit: str | None,
                  allow_acks: bool) -> tuple[list[str], str]:
    out = []
    for table in (t for t in schema.TABLES if not (allow_acks and t == "acks")):  # EXCEPT compares whole rows,
        # NULLs equal: a row changed is a row gone
        gone = conn.execute(f"SELECT count(*) FROM (SELECT * FROM old.{table} EXCEPT SELECT * FROM main.{table})")
        n = gone.fetchone()[0]
        if n:
            out.append(f"{n} row(s) of {table} on the branch are missing or changed in the new store")
    new_runs = conn.execute("SELECT run_id, commit_sha, datetime FROM main.runs WHERE run_id NOT IN "
                            "(SELECT run_id FROM old.runs)").fetchall()
    if len(new_runs) > max_new_runs:
        out.append(f"{len(new_runs)} new runs; a night adds at most {max_new_runs}")
    for run_id, sha, stamp in new_runs:
        if not schema.is_commit(sha):
            out.append(f"new run {run_id}: commit {str(sha)[:60]!r} is not a hex commit")
        elif commit and sha != commit:
            out.append(f"new run {run_id}: commit {sha[:12]} is not the commit this nightly measured ({commit[:12]})")
        problem = schema.iso_problem(stamp)
        if problem:
            out.append(f"new run {run_id}: {problem}")
    new_ids = {r[0] for r in new_runs}
    rows = conn.execute("SELECT run_id, value, ci_low, ci_high FROM (SELECT * FROM main.measurements EXCEPT "
                        "SELECT * FROM old.measurements)").fetchall()
    foreign = sum(r[0] not in new_ids for r in rows)
    if foreign:
        out.append(f"{foreign} new measurement(s) belong to runs that were already kept")
    bad = next((p for r in rows for p in (schema.value_problem(r[1]), schema.value_problem(r[2], optional=True),
                                           schema.value_problem(r[3], optional=True)) if p), None)
    if bad:
        out.append(f"a new measurement: {bad}")
    acks = conn.execute("SELECT count(*) FROM (SELECT * FROM main.acks EXCEPT SELECT * FROM old.acks)").fetchone()[0]
    if acks and not allow_acks:
        out.append(f"{acks} new acknowledgement(s): the nightly adds none")
    kept = conn.execute("SELECT count(*) FROM old.runs").fetchone()[0]
    return out, (f"verified: {kept} kept run(s) unchanged, {len(new_runs)} new "
                 f"({', '.join(str(r[1])[:12] for r in new_runs) or 'none'}), {len(rows)} new measurements")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--after", type=Path, required=True, help="the store about to be pushed")
    p.add_argument("--before", type=Path, default=None, help="the store on the branch now (none: the first night)")
    p.add_argument("--max-new-runs", type=int, default=1)
    p.add_argument("--commit", default=None, help="the commit this nightly measured (every new run's)")
    p.add_argument("--allow-acks", action="store_true", help="acknowledgements may be added or replaced (a person's)")
    args = p.parse_args(argv)
    found, line = problems(args.after, args.before, args.max_new_runs, args.commit or None, args.allow_acks)
    for problem in found:
        print(f"::error::history store not pushed: {' '.join(problem.split())}")
    if not found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
