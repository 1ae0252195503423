"""Sorting the good rows of a file: each row's person, whether the file
met them earlier and whether the database knows them; in a child process
for ./crm import."""
import multiprocessing
import sqlite3
from itertools import islice

from trytond.tools import grouped_slice

from ..capture import identity_keys

class RowSorter:
    """Parses rows and sorts the good ones: for each, the identity keys of
    its person, whether that person was met earlier in the file and, when
    the sorter was given the keys of the people in the database
    (add_known), whether the database knows them. Keys are kept in a
    private on-disk SQLite database, so that memory stays flat however
    long the file is. Rows must come in file order, chunk after chunk."""

    def __init__(self, parser, knows=False):
        "knows: whether add_known will be given all the database's keys."
        self.parser = parser
        self.knows = knows
        # An empty name is a temporary database on disk, removed on close;
        # nothing to recover after a crash, and 16 MB of cache at most.
        self.db = sqlite3.connect('')
        for pragma in ['journal_mode = OFF', 'synchronous = OFF',
                'cache_size = -16000']:
            self.db.execute('PRAGMA ' + pragma)
        for table in ['seen', 'known']:
            self.db.execute(
                f'CREATE TABLE {table} (key TEXT PRIMARY KEY) WITHOUT ROWID')

    def add_known(self, texts):
        "Keys (key_text) of people the database has a lead for."
        self.db.executemany('INSERT OR IGNORE INTO known VALUES (?)',
            ((k,) for k in texts))

    def sort(self, chunk):
        """[(values, problems, keys, repeat, known)] for a chunk of (number,
        cells): values is None for an empty row; keys, repeat and known are
        None for a row with an error that keeps it out, known is None too
        when the sorter does not know the database's people."""
        results, good = [], []
        for _, cells in chunk:
            if not any(cells):
                results.append([None] * 5)
                continue
            values, problems = self.parser.parse(cells)
            result = [values, problems, None, None, None]
            if not any(problem.fatal for problem in problems):
                result[2] = identity_keys(values)
                good.append(result)
            results.append(result)
        texts = [{key_text(k) for k in result[2]} for result in good]
        every = set().union(*texts)
        met = self._among('seen', every)
        known = self._among('known', every) if self.knows else None
        for result, keys in zip(good, texts):
            result[3] = bool(keys & met)
            if known is not None:
                result[4] = bool(keys & known)
            met |= keys
        self.db.executemany('INSERT OR IGNORE INTO seen VALUES (?)',
            ((k,) for k in every))
        return results

    def _among(self, table, keys):
        "The keys among these that the table has."
        found = set()
        for sub in grouped_slice(sorted(keys), 500):
            sub = list(sub)
            found.update(k for k, in self.db.execute(
                    f'SELECT key FROM {table} WHERE key IN (%s)'
                    % ','.join('?' * len(sub)), sub))
        return found

    def close(self):
        self.db.close()


def sort_rows(parser, rows, known=None, size=2000):
    """(number, cells, values, problems, keys, repeat, known) for each
    row, as RowSorter.sort gives them; `known`: None, or lists of the key
    texts of all the people in the database."""
    sorter = RowSorter(parser, knows=known is not None)
    try:
        for texts in known or []:
            sorter.add_known(texts)
        for chunk in _slices_of(rows, size):
            yield from _joined(chunk, sorter.sort(chunk))
    finally:
        sorter.close()


def _joined(chunk, sorted_):
    for (number, cells), result in zip(chunk, sorted_):
        yield number, cells, *result


class ChildSorter:
    """sort_rows in a child process that reads the file too, a few chunks
    ahead of the caller, which works the database meanwhile. Only what the
    caller needs comes back: a row's cells only when it has problems (for
    the report). Iterating gives what sort_rows gives; fraction_done() says
    how far the child has read. The caller must not read `rows` itself:
    the child, forked, goes on with the caller's copy of the file.

    One process and one pipe, not multiprocessing.Pool: a Pool's
    terminate() waits for a lock its idle worker holds while it waits for
    work, and hung ./crm import at the end of a file now and then."""

    def __init__(self, parser, lead_file, rows, known=None, size=2000,
            ahead=3):
        self.args = (parser, lead_file, rows, known is not None, size)
        self.known = known
        self.ahead = ahead
        self.fraction = None

    def __iter__(self):
        context = multiprocessing.get_context('fork')
        connection, child_end = context.Pipe()
        child = context.Process(
            target=_serve, args=(child_end, self.args), daemon=True)
        child.start()
        child_end.close()
        asked = 0

        def ask(request, *args):
            nonlocal asked
            connection.send((request, args))
            asked += 1

        def answer():
            nonlocal asked
            asked -= 1
            outcome, value = connection.recv()
            if outcome == 'failed':
                raise value
            return value
        try:
            # The child takes the requests in order: the known keys first,
            # a few lists at a time (memory stays flat), then each request
            # reads the next chunk. An empty answer means the file ended.
            for texts in self.known or []:
                ask('add_known', texts)
                if asked > self.ahead:
                    answer()
            while asked:
                answer()
            for _ in range(self.ahead):
                ask('sort_next_chunk')
            while True:
                results, self.fraction = answer()
                if not results:
                    break
                ask('sort_next_chunk')
                yield from results
        finally:
            # The child ends when the pipe closes; it is killed if it is
            # still busy with a chunk no one will read.
            connection.close()
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join()

    def fraction_done(self):
        return self.fraction


def _serve(connection, args):
    "The child: answer each request of the pipe until it closes."
    parser, lead_file, rows, knows, size = args
    sorter = RowSorter(parser, knows=knows)
    chunks = _slices_of(rows, size)
    while True:
        try:
            request, request_args = connection.recv()
        except EOFError:
            return
        try:
            if request == 'add_known':
                sorter.add_known(*request_args)
                value = None
            else:
                value = _sort_next_chunk(sorter, lead_file, chunks)
        except Exception as exception:
            outcome, value = 'failed', exception
        else:
            outcome = 'done'
        try:
            connection.send((outcome, value))
        except (BrokenPipeError, ConnectionResetError):
            return  # the caller stopped reading: nothing more to do


def _sort_next_chunk(sorter, lead_file, chunks):
    chunk = next(chunks, [])
    # The cells go back only for the report of the row's problems.
    results = [(number, cells if problems else None, values, problems, *rest)
        for number, cells, values, problems, *rest in _joined(
            chunk, sorter.sort(chunk))]
    return results, lead_file.fraction_done()


def _slices_of(iterable, size):
    "Lists of at most size items of an iterable, read as they are needed."
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def key_text(key):
    return '%s:%s' % key
