"""Query plans, to check that a query selects through an index and never
reads a whole table, on SQLite and on PostgreSQL."""
from trytond import backend
from trytond.transaction import Transaction


def full_scans(query, params, table):
    """The steps of the plan of query that read every row of table.

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
    return [s for s in steps
        if s.startswith(f'SCAN {table}') and 'USING' not in s]
