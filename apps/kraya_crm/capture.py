"""One identity per person: every channel (WhatsApp, web forms, imports)
hands its people to Lead.capture, which matches them on phone, WhatsApp
number or email and creates only those it does not know."""
import contextlib
import hashlib

from sql import Flavor

from trytond import backend
from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .contact import normalize_email
from .exceptions import NoCompanyError

# The lead fields a capture may fill; a match keeps what it has and only
# fills what is empty, so a form never overwrites a rep's work.
CAPTURE_FIELDS = (
    'name', 'company_name', 'phone', 'whatsapp', 'email', 'city',
    'subdivision', 'campaign', 'notes')

IDENTITY_FIELDS = ('phone', 'whatsapp', 'email')
# Keys looked up per query: short IN lists stay index lookups everywhere.
# PostgreSQL weighs each key of a list as a random page read: with 300 it
# scanned the whole table until it held some 100,000 leads.
IDENTITY_SLICE = 100
# Captures of the same person wait for each other on one of these advisory
# locks (a capture of 500 senders holds at most 500), numbered from a base
# of their own.
IDENTITY_SLOTS = 1024
IDENTITY_SLOT_BASE = 0x4B52_0000


def capture_company():
    """The id of the company leads from outside belong to: the site's first
    company (a Kraya site serves one business). Read in SQL, whoever the
    user: the webhook asks it on every delivery. Raises NoCompanyError when
    the site has none, so that every channel keeps what it got instead."""
    table = Pool().get('company.company').__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(
            table.id, order_by=[table.id.asc], limit=1))
    row = cursor.fetchone()
    if not row:
        raise NoCompanyError(gettext('kraya_crm.msg_no_company'))
    return row[0]


def identity_keys(values):
    "The keys a person is known by: ('phone', +91...) and ('email', ...)."
    keys = set()
    for name in ('phone', 'whatsapp'):
        if values.get(name):
            keys.add(('phone', values[name]))
    if values.get('email'):
        keys.add(('email', normalize_email(values['email'])))
    return keys


def identity_slot(key):
    """The advisory lock of a key: one of IDENTITY_SLOTS, the same in
    every process (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big') % IDENTITY_SLOTS + IDENTITY_SLOT_BASE


@contextlib.contextmanager
def index_lookups(cursor):
    """Run identity lookups as the index lookups they are; yields the
    options of cursor.execute. PostgreSQL prices each key of a list as a
    random read from disk (random_page_cost 4): with a hundred keys on a
    table of some 10,000 to 40,000 leads it chose to scan the whole table,
    ten times slower than the index, all in memory, that it turned down.
    And psycopg prepares a statement it runs often, and PostgreSQL keeps the
    generic plan it made then: made while an import's table was small, it
    went on scanning the whole table as the table grew."""
    if backend.name != 'postgresql':
        yield {}
        return
    cursor.execute('SET LOCAL enable_seqscan = off')
    yield {'prepare': False}
    # Not on an error: a failed query aborts the transaction, whose end
    # undoes the SET LOCAL; a RESET would only hide the error behind its own.
    cursor.execute('RESET enable_seqscan')


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @classmethod
    def identity_queries(cls, keys, names):
        """The SQL (text, params) that find the active leads known by any of
        these keys, selecting 'id' and the names. Plain comparisons of the
        phone, WhatsApp and email columns, which the database answers index
        by index: a domain would compare COALESCE(phone, '') and scan the
        whole table. In slices, to keep the parameter lists short."""
        mark = Flavor.get().param
        phones = sorted({v for k, v in keys if k == 'phone'})
        emails = sorted({v for k, v in keys if k == 'email'})
        select = 'SELECT %s FROM "%s" WHERE ' % (
            ', '.join('"%s"' % n for n in ['id', *names]), cls._table)
        active = ' AND "active"' if 'active' in cls._fields else ''
        for i in range(0, max(len(phones), len(emails)), IDENTITY_SLICE):
            sub_phones = phones[i:i + IDENTITY_SLICE]
            sub_emails = emails[i:i + IDENTITY_SLICE]
            lookups = [(column, values) for column, values in [
                    ('phone', sub_phones), ('whatsapp', sub_phones),
                    ('email', sub_emails)] if values]
            if backend.name == 'postgresql':
                # An array per column: the statement stays short, and
                # psycopg parses it once instead of once a query.
                clauses = [f'"{column}" = ANY({mark})'
                    for column, _ in lookups]
                params = [values for _, values in lookups]
            else:
                clauses = [f'"{column}" IN ({", ".join([mark] * len(values))})'
                    for column, values in lookups]
                params = [v for _, values in lookups for v in values]
            yield (select + '(%s)%s' % (' OR '.join(clauses), active), params)

    @classmethod
    def _identity_rows(cls, keys, names):
        """The active leads known by any of these keys, as dicts of 'id'
        and the names, oldest first."""
        cursor = Transaction().connection.cursor()
        found = {}
        with index_lookups(cursor) as options:
            for query, params in cls.identity_queries(keys, names):
                cursor.execute(query, params, **options)
                for row in cursor:
                    found[row[0]] = dict(zip(['id', *names], row))
        return [found[i] for i in sorted(found)]

    @classmethod
    def find_by_identity(cls, keys):
        """The active leads known by any of these keys, as a dict key ->
        lead; the oldest lead wins a key, so that the original lead wins
        over later duplicates. Converted leads count: the person is the
        same."""
        rows = cls._identity_rows(keys, IDENTITY_FIELDS)
        # Browsed together, so that reading one reads them all at once.
        leads = cls.browse([row['id'] for row in rows])
        found = {}
        for row, lead in zip(rows, leads):
            for key in identity_keys(row):
                found.setdefault(key, lead)
        return found

    @classmethod
    def _hold_identities(cls, keys, known):
        """Keep these keys to this transaction until it ends, so that two
        captures of one person at once (two workers each with a delivery
        of theirs) do not both create a lead. On PostgreSQL, whose
        transactions read a snapshot taken at their first query: wait for
        the keys' locks, then ask again with a fresh snapshot. A lead made
        by a capture that committed meanwhile is not in `known`; raise
        then, as for any conflict between transactions, for the caller
        (the worker's task, the request) to run again. SQLite has one
        writer at a time."""
        if backend.name != 'postgresql' or not keys:
            return
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        # Slots, not keys: PostgreSQL keeps a few thousand locks in all.
        slots = sorted({identity_slot(key) for key in keys})
        cursor.execute('SELECT pg_advisory_xact_lock(slot) '
            'FROM unnest(%s::bigint[]) AS slot ORDER BY slot', (slots,))
        cursor.fetchall()
        with transaction.new_transaction(readonly=True):
            committed = {row['id'] for row in cls._identity_rows(keys, [])}
        if committed - {lead.id for lead in known.values()}:
            raise backend.DatabaseOperationalError(
                "a lead of these people was captured meanwhile: run again")

    @classmethod
    def suppressed_keys(cls, keys):
        """The keys among these of people erased on their request: every
        channel's capture asks here (Lead.capture, and the importer for
        the rows it inserts in bulk)."""
        return Pool().get('crm.privacy.suppression').suppressed_keys(keys)

    @classmethod
    def capture(cls, vlist, source=None):
        """Match or create a lead for each dict of values (already
        normalised: phones in E.164). Returns [(lead, created)] in the
        order given; two dicts for one person give one lead. A person
        who had their data erased (the suppression list) gets
        (None, False): nothing of them is stored, whatever the channel."""
        pool = Pool()
        Source = pool.get('crm.source')
        if isinstance(source, str):
            source = Source.get_by_code(source)
        # Unowned, the new leads go to the source's team, whose reps see
        # them (their record rule) and pick them up.
        team = source.team_for_new_leads if source else None
        every_key = set().union(
            *(identity_keys(v) for v in vlist)) if vlist else set()
        suppressed = cls.suppressed_keys(every_key)
        known = cls.find_by_identity(every_key - suppressed)
        cls._hold_identities(every_key - suppressed, known)
        results, to_create, to_fill = [], [], {}
        for values in vlist:
            keys = identity_keys(values)
            if keys & suppressed:
                results.append((None, False))
                continue
            lead = next((known[k] for k in sorted(keys) if k in known), None)
            if lead is None:
                lead = cls(**{f: values[f] for f in CAPTURE_FIELDS
                        if values.get(f) is not None})
                if source:
                    lead.source = source
                    if team and not getattr(lead, 'team', None):
                        lead.team = team
                if not getattr(lead, 'name', None):
                    lead.name = (values.get('phone') or values.get('whatsapp')
                        or values.get('email') or "Unknown")
                to_create.append(lead)
                results.append((lead, True))
            else:
                if lead.id is not None and lead.id >= 0:
                    to_fill.setdefault(lead.id, (lead, {}))[1].update({
                            f: values[f] for f in CAPTURE_FIELDS
                            if values.get(f) and not getattr(lead, f, None)})
                results.append((lead, False))
            for key in keys:
                known.setdefault(key, lead)
        cls.save(to_create)
        to_write = []
        for lead, values in to_fill.values():
            if values:
                to_write.extend(([lead], values))
        if to_write:
            cls.write(*to_write)
        return results
