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
    cursor.execute('EXPLAIN QUERY PLAN ' + query, params or ())
    steps = [row[-1] for row in cursor]
    # python-sql names the table "a": a SCAN without an index of the
    # query's one table is the full scan.
    return [s for s in steps if s.startswith('SCAN ') and 'USING' not in s]


class SelectsRun:
    """The SELECTs run in the transaction inside the with block, as the
    database received them (parameters in): SQLite's trace callback,
    PostgreSQL's LoggingCursor."""

    def __init__(self):
        self.queries = []

    def _keep(self, query):
        if str(query).lstrip().upper().startswith('SELECT'):
            self.queries.append(str(query))

    def __enter__(self):
        import logging
        if backend.name == 'postgresql':
            self._logger = logging.getLogger(
                'trytond.backend.postgresql.database')
            self._handler = logging.Handler(logging.DEBUG)
            self._handler.emit = lambda record: self._keep(record.getMessage())
            self._level = self._logger.level
            self._logger.setLevel(logging.DEBUG)
            self._logger.addHandler(self._handler)
        else:
            self._connection = Transaction().connection
            self._connection.set_trace_callback(self._keep)
        return self

    def __exit__(self, *exc):
        if backend.name == 'postgresql':
            self._logger.removeHandler(self._handler)
            self._logger.setLevel(self._level)
        else:
            self._connection.set_trace_callback(None)

    def on(self, table):
        "The captured SELECTs that read `table`."
        return [q for q in self.queries if f'"{table}"' in q]
