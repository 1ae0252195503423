"""Creating and filling many records at once, as fast as the database
can take them, without leaving Tryton's rules behind: access checks,
preprocess_values, defaults, validation, check_modification,
on_modification, triggers and record rules all run, around one prepared
statement (PostgreSQL: one COPY) for all the rows instead of one a record.

For values the caller has checked already (the lead importer's parser);
a model takes it by inheriting BulkWrite. It calls Tryton's name-mangled
__check_domain_rule and __check_timestamp: an update of Tryton that
renames them breaks it loudly, not silently."""
import collections
import contextlib
import contextvars
import functools
import operator
from itertools import chain
from types import SimpleNamespace

from sql import Column, Select
from sql.functions import CurrentTimestamp

from trytond import backend
from trytond.model import fields
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

# Records browsed together for the hooks that follow their insert or
# update. The hooks read little of them (a slice is read at once when one
# is read), and browsing n records costs Tryton n² checks.
BROWSE_SLICE = 20

# The model and ids of records whose values the caller already checked
# field by field (the hooks that run meanwhile write other models).
_checked_ids = contextvars.ContextVar(
    'kraya_crm_checked_ids', default=(None, frozenset()))
# Whether the values being preprocessed are the caller's, checked already.
_checked_values = contextvars.ContextVar(
    'kraya_crm_checked_values', default=False)


def checked_values():
    """Whether create_in_bulk is preprocessing values its caller checked:
    a model's preprocess_values may then skip what it would check again."""
    return _checked_values.get()


@contextlib.contextmanager
def _values_checked():
    token = _checked_values.set(True)
    try:
        yield
    finally:
        _checked_values.reset(token)


def browse(Model, ids):
    """The records of the ids, browsed BROWSE_SLICE at a time: Tryton's
    browse checks every id of the list for each record it makes."""
    return list(chain.from_iterable(Model.browse(sub_ids)
            for sub_ids in grouped_slice(ids, BROWSE_SLICE)))


def plain_values(records, names):
    """The values of these plain fields of the records, each record's as an
    object with them as attributes (a Many2One as its id): from the
    transaction's cache, where create_in_bulk leaves them, and what is
    missing read in one query. A hook over the thousands of
    records a bulk call makes reads them so, not through each record's
    attributes (Tryton's loading machinery at every one)."""
    return [SimpleNamespace(id=r.id, **dict(zip(names, values)))
        for r, values in zip(records, _values_of(records, names))]


def column_values(records, name):
    "The value of one plain field of each record, as plain_values reads it."
    return [values[0] for values in _values_of(records, [name])]


def _values_of(records, names):
    "A tuple of the values of the names for each record (plain_values)."
    if not records:
        return []
    Model = records[0].__class__
    cache = Transaction().get_cache()[Model.__name__]
    getter = _tuple_of(operator.attrgetter, names)
    found, missing = {}, []
    for record in records:
        try:
            found[record.id] = getter(cache.get(record.id))
        except AttributeError:
            missing.append(record.id)
    if missing:
        with without_check_access():
            for sub_ids in grouped_slice(missing, backend.MAX_QUERY_PARAMS):
                for row in Model.read(list(sub_ids), names):
                    found[row['id']] = tuple(row[n] for n in names)
    return [found[r.id] for r in records]


def _tuple_of(getter, keys):
    """operator.itemgetter or attrgetter of the keys, always giving a
    tuple (theirs gives the value alone for one key)."""
    if len(keys) == 1:
        get = getter(keys[0])
        return lambda item: (get(item),)
    if not keys:
        return lambda item: ()
    return getter(*keys)


def _sql_format(field):
    """The field's sql_format; for text, which the caller hands over
    cleaned, only the strip that sql_format would do. Other values (states,
    the source) repeat: each is formatted once."""
    if isinstance(field, fields.Char) and field.strip is True:
        return str.strip
    if isinstance(field, fields.Char) and not field.strip:
        return str
    if isinstance(field, fields.Many2One):
        # An id, most often: as is; each value differs, no cache helps.
        return lambda value: value if type(value) is int \
            else field.sql_format(value)
    return functools.lru_cache(maxsize=1024)(field.sql_format)


# The field types whose sql_format gives the value a read gives back.
PLAIN_TYPES = {'char', 'text', 'selection', 'many2one', 'integer', 'bigint',
    'boolean', 'timestamp', 'datetime', 'date', 'time', 'float'}


def _rememberable(field):
    return (field._type in PLAIN_TYPES
        and not getattr(field, 'translate', False))


def _same_values_key(values, record):
    """A key equal for equal values; the record's own where a value cannot
    be compared so (a list of x2many actions, say)."""
    key = tuple(sorted(values.items()))
    try:
        hash(key)
    except TypeError:
        return ('record', record.id)
    return key


class BulkWrite:
    "A ModelSQL's create_in_bulk and fill_in_bulk."
    __slots__ = ()

    @classmethod
    def _in_bulk(cls, vlist):
        "Only plain column values go in bulk (no x2many, translation...)."
        for name in set().union(*vlist):
            field = cls._fields[name]
            if hasattr(field, 'set') or getattr(field, 'translate', False):
                return False
        return not (cls._history or cls._path_fields or cls._mptt_fields)

    @classmethod
    def create_in_bulk(cls, vlist):
        """Create records from values their caller checked and return their
        ids: what ModelSQL.create does (access checks, preprocess_values,
        defaults, create_uid/create_date, then triggers, check_modification,
        on_modification, validate and record rules) with one prepared
        INSERT for all rows and without the per-field checks of values
        already checked (required, domains, selections)."""
        if not cls._in_bulk(vlist):
            return [record.id for record in cls.create(vlist)]
        transaction = Transaction()
        database = transaction.database
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        with _values_checked():
            vlist = cls._before_create(vlist)
        magic = {'id', 'create_uid', 'create_date', 'write_uid', 'write_date'}
        storable = [n for n, f in cls._fields.items()
            if n not in magic and not hasattr(f, 'set')
            and not (isinstance(f, fields.Function) and not f.setter)]
        defaults = cls._clean_defaults(
            cls.default_get(storable, with_rec_name=False))
        given = sorted(set().union(*vlist) - magic)
        # Columns no row gives take their default: formatted once.
        constant = [n for n in sorted(defaults) if n not in given]
        head = [transaction.user, cls._create_date(cursor)]
        tail = [cls._fields[n].sql_format(defaults[n]) for n in constant]
        formats = [(n, _sql_format(cls._fields[n]), defaults.get(n))
            for n in given]
        params = []
        for values in vlist:
            row = head.copy()
            for name, sql_format, default in formats:
                value = values.get(name, default)
                row.append(sql_format(value) if value is not None else None)
            params.append(row + tail)
        columns = [table.create_uid, table.create_date] + [
            Column(table, n) for n in given + constant]

        def insert(columns):
            "The statement once, with placeholders for each row's values."
            query, _ = tuple(table.insert(columns, [[0] * len(columns)]))
            return query

        rows = list(params)
        ids = cls._next_ids(len(params))
        first = []
        if not ids:
            # The first row takes the next id; on SQLite it also takes the
            # write lock until commit, so the other rows can follow it.
            cursor.execute(insert(columns), params[0])
            first = [database.lastid(cursor)]
            params = params[1:]
            if backend.name == 'sqlite':
                ids = range(first[0] + 1, first[0] + 1 + len(params))
        if ids:
            for row, id_ in zip(params, ids):
                row.append(id_)
            if backend.name == 'postgresql':
                cls._copy_rows(columns + [table.id], params)
            else:
                cursor.executemany(insert(columns + [table.id]), params)
            ids = first + list(ids)
        else:
            query = insert(columns)
            ids = first
            for row in params:
                cursor.execute(query, row)
                ids.append(database.lastid(cursor))
        cls._remember(ids, ['create_uid', 'create_date'] + given + constant,
            rows)
        checked = _checked_ids.set((cls.__name__, frozenset(ids)))
        try:
            cls._after_create_in_bulk(ids)
        finally:
            _checked_ids.reset(checked)
        cls._ModelSQL__check_domain_rule(ids, 'create')
        return ids

    @classmethod
    def fill_in_bulk(cls, fills):
        """Write each record its own values ({id: values}, fields their
        caller checked): what ModelSQL.write does, with its own checks and
        hooks before and after, but one prepared UPDATE per set of fields
        instead of one statement per record, and without the per-field
        checks of the values (as create_in_bulk)."""
        records = browse(cls, list(fills))
        # Records with the same values go as one pair, as a write of them
        # together would: the checks and hooks run per pair (on_write of
        # a thousand leads made contacted at once is one call, not 1,000).
        groups = {}
        for record in records:
            values = fills[record.id]
            groups.setdefault(_same_values_key(values, record),
                ([], values))[0].append(record)
        args = list(chain.from_iterable(groups.values()))
        if not cls._in_bulk(fills.values()):
            cls.write(*args)
            return
        ids, field_names, on_write, trigger_eligibles, *args = (
            cls._before_write(*args))
        cls._ModelSQL__check_timestamp(ids)
        cls._ModelSQL__check_domain_rule(ids, 'write')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        by_names = collections.defaultdict(list)
        # CURRENT_TIMESTAMP, asked once: SQLite would call Tryton's now()
        # for every row updated.
        write_date = cls._create_date(cursor)

        def update(names, where):
            columns = [table.write_uid] + [Column(table, n) for n in names]
            return tuple(table.update(columns + [table.write_date],
                    [0] * (len(columns) + 1), where=where))
        for alike, values in zip(args[::2], args[1::2]):
            names = tuple(sorted(values))
            formatted = [transaction.user] + [
                cls._fields[n].sql_format(values[n]) for n in names] + [
                write_date]
            if len(alike) == 1:
                by_names[names].append(formatted + [alike[0].id])
                continue
            # Alike records (the leads made contacted, the enrollments
            # moved on to the same step): one statement for them all.
            for sub_ids in grouped_slice([r.id for r in alike],
                    backend.MAX_QUERY_PARAMS - len(formatted)):
                query, params = update(names, fields.SQL_OPERATORS['in'](
                        table.id, list(sub_ids)))
                cursor.execute(query, formatted + list(params[len(formatted):]))
        for names, params in by_names.items():
            # Each record its own values: one prepared statement.
            query, _ = update(names, table.id == 0)
            cursor.executemany(query, params)
        cls._ModelSQL__check_domain_rule(ids, 'write')
        checked = _checked_ids.set((cls.__name__, frozenset(ids)))
        try:
            cls._after_fill_in_bulk(records, field_names, on_write,
                trigger_eligibles)
        finally:
            _checked_ids.reset(checked)

    @classmethod
    def _after_fill_in_bulk(cls, records, field_names, on_write,
            trigger_eligibles):
        """ModelStorage._after_write (validate, on_modification, on_write
        and triggers) on the records written, browsed BROWSE_SLICE at a
        time (_before_write emptied their caches)."""
        with without_check_access():
            cls._validate(records, field_names=field_names)
            cls._compute_fields(records, field_names=field_names)
            cls.on_modification('write', records, field_names)
            for method in on_write:
                method()
            for trigger, triggered in trigger_eligibles.items():
                trigger.queue_trigger_action(triggered)

    @classmethod
    def _remember(cls, ids, names, rows):
        """Keep the plain values of the rows just inserted in the
        transaction's cache, as a read of them would: the hooks that follow
        (validate, on_modification) read them without querying them back.
        The first write of the transaction clears the cache, as ever."""
        columns = [(i, n) for i, n in enumerate(names)
            if n in cls._fields and _rememberable(cls._fields[n])]
        unset = [n for n, f in cls._fields.items()
            if n not in names and n != 'id' and _rememberable(f)
            and not isinstance(f, fields.Function)]
        kept = [n for _, n in columns] + unset
        pick = _tuple_of(operator.itemgetter, [i for i, _ in columns])
        nulls = (None,) * len(unset)
        cache = Transaction().get_cache()[cls.__name__]
        for id_, row in zip(ids, rows):
            entry = cache[id_]
            # A loop of setattr: the cache's records have slots, no dict.
            for name, value in zip(kept, pick(row) + nulls):
                setattr(entry, name, value)

    @classmethod
    def _after_create_in_bulk(cls, ids):
        """ModelStorage._after_create (validate, check_modification,
        on_modification, triggers) once for all the rows, on records
        browsed BROWSE_SLICE at a time: calling it per slice would repeat
        each hook's queries."""
        Trigger = Pool().get('ir.trigger')
        transaction = Transaction()
        check_access = transaction.user and transaction.check_access
        records = browse(cls, ids)
        with without_check_access():
            triggers = Trigger.get_triggers(cls.__name__, 'create')
            cls._validate(records)
            cls.check_modification('create', records, external=check_access)
            cls._compute_fields(records)
            cls.on_modification('create', records)
            for trigger in triggers:
                trigger.queue_trigger_action(records)
            transaction.create_records[cls.__name__].extend(ids)

    @classmethod
    def _next_ids(cls, count):
        """count ids from the table's sequence (PostgreSQL); none where
        the database gives them on insert (SQLite). Tryton's nextid finds
        the sequence again for each id: ten times slower for a thousand."""
        transaction = Transaction()
        if backend.name != 'postgresql':
            ids = transaction.database.nextid(
                transaction.connection, cls._table, count=count)
            return [ids] if isinstance(ids, int) else ids
        cursor = transaction.connection.cursor()
        cursor.execute('WITH s AS MATERIALIZED (SELECT '
            "pg_get_serial_sequence(format('%%I', %s::text), 'id')::regclass "
            'AS seq) SELECT nextval(s.seq) FROM s, generate_series(1, %s)',
            (cls._table, count))
        return [id_ for id_, in cursor]

    @staticmethod
    def _create_date(cursor):
        """The create_date an INSERT of CURRENT_TIMESTAMP stores (the same
        for the whole transaction), asked once instead of once a row."""
        if backend.name == 'postgresql':
            cursor.execute('SELECT CAST(CURRENT_TIMESTAMP AS TIMESTAMP)')
        else:
            cursor.execute(*Select([CurrentTimestamp()]))
        return cursor.fetchone()[0]

    @classmethod
    def _copy_rows(cls, columns, rows):
        """COPY rows into the table (PostgreSQL): twice as fast as
        INSERTs. In binary, which the server reads a tenth faster than text:
        each value goes as its column's type, asked of the server."""
        cursor = Transaction().connection.cursor()
        cursor.execute('SELECT attname, atttypid FROM pg_attribute '
            'WHERE attrelid = %s::regclass AND attnum > 0', (cls._table,))
        types = dict(cursor)
        with cursor.copy('COPY "%s" (%s) FROM STDIN (FORMAT BINARY)' % (
                    cls._table, ', '.join('"%s"' % c.name for c in columns))
                ) as copy:
            copy.set_types([types[c.name] for c in columns])
            for row in rows:
                copy.write_row(row)

    @classmethod
    def _validate(cls, records, field_names=None):
        model, checked = _checked_ids.get()
        if (model == cls.__name__ and checked
                and all(r.id in checked for r in records)):
            # Required fields, domains and selections of these rows were
            # checked once by the caller; model-level checks still run.
            field_names = set()
        super()._validate(records, field_names=field_names)
