"""Query plans, to check that a query selects through an index and never
reads a whole table, on SQLite and on PostgreSQL."""
from trytond import backend
from trytond.transaction import Transaction


def full_scans(query, params, table):
    """The steps of the plan of a query on one table that read all its rows.

    PostgreSQL is told to avoid sequential scans, so that on a small test
    table it still picks an index when the query can use one: a Seq Scan
    left in the plan means no index fits."""
    cursor = Transaction().connection.cursor()
    if backend.name == 'postgresql':
        cursor.execute('SET LOCAL enable_seqscan = off')
        cursor.execute('EXPLAIN ' + query, params)
        steps = [line for line, in cursor]
        return [s for s in steps if f'Seq Scan on {table}' in s]
    cursor.execute('EXPLAIN QUERY PLAN ' + query, params)
    steps = [row[-1] for row in cursor]
    # python-sql names the table "a": a SCAN without an index of the
    # query's one table is the full scan.
    return [s for s in steps if s.startswith('SCAN ') and 'USING' not in s]
