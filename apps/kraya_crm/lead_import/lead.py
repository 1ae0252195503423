"""The lead's side of an import: importing a file, and finding and
attaching to the people it already has."""
from sql import Column
from sql.aggregate import Count

from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction, without_check_access

from ..bulk import BulkWrite, checked_values
from ..capture import (
    CAPTURE_FIELDS, IDENTITY_FIELDS, capture_company, identity_keys)
from ..exceptions import LeadImportError
from .importer import BATCH_SIZE, LeadImport, roomy_sqlite_cache
from .reading import LeadFile
from .sorting import key_text


class Lead(BulkWrite, metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @classmethod
    def import_file(cls, file, filename=None, source=None, dry_run=False,
            consent_channel=None, consent_basis=None, report=None,
            progress=None, batch_size=BATCH_SIZE, parallel=False):
        """Import the leads of a CSV or XLSX file (a seekable binary file
        object) and return an ImportSummary. People already known by phone,
        WhatsApp number or email are attached to, not duplicated. Consent
        is recorded on `consent_channel` only with a `consent_basis`.
        In a dry run nothing is written and the summary says what would be.
        `report` (ProblemReport) receives the problems as they are found;
        `progress(rows, fraction)` is called after each batch. With
        `parallel` the rows are parsed in a child process (for ./crm import;
        not inside the server)."""
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        Source = pool.get('crm.source')
        if not dry_run:
            for mode in ('create', 'write'):
                if not ModelAccess.check(cls.__name__, mode,
                        raise_exception=False):
                    raise AccessError(gettext(
                            'kraya_crm.msg_import_no_access'))
        if isinstance(source, str):
            code = source
            source = Source.get_by_code(code)
            if not source:
                raise LeadImportError(gettext(
                        'kraya_crm.msg_import_unknown_source', source=code,
                        sources=', '.join(s.code for s in Source.search([]))))
        consent_basis = (consent_basis or '').strip() or None
        # The importer's company, else the site's; none raises NoCompanyError.
        company = Transaction().context.get('company') or capture_company()
        run = LeadImport(cls, source=source, dry_run=dry_run,
            consent_channel=consent_channel or 'whatsapp',
            consent_basis=consent_basis, report=report, progress=progress,
            batch_size=batch_size, parallel=parallel)
        # One person, one lead: identities are matched across all leads,
        # whoever may see them (see docs/decisions.md).
        with without_check_access(), roomy_sqlite_cache(), \
                Transaction().set_context(company=company):
            return run.run(LeadFile(file, filename))

    @classmethod
    def _import_subdivisions(cls):
        Subdivision = Pool().get('country.subdivision')
        return [(s.id, s.code, s.name) for s in Subdivision.search([
                    ('country.code', '=', 'IN'), ('parent', '=', None)])]

    @classmethod
    def _of_active_leads(cls, table, where=None):
        "The condition, for the active leads only (identities are theirs)."
        if 'active' not in cls._fields:
            return where
        return table.active if where is None else where & table.active

    @classmethod
    def _leads_more_than(cls, count):
        """Whether there are more than count active leads, counted exactly
        (the estimate of PostgreSQL's statistics misses an open transaction's
        leads) but no further than count + 1."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id,
                where=cls._of_active_leads(table),
                limit=count + 1).select(Count()))
        return cursor.fetchone()[0] > count

    @classmethod
    def _identity_texts(cls, size=10000):
        """Lists of the key texts (key_text) of all the active leads, read
        `size` leads at a time in the order of their ids."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        last = 0
        while True:
            cursor.execute(*table.select(table.id,
                    *(Column(table, n) for n in IDENTITY_FIELDS),
                    where=cls._of_active_leads(table, table.id > last),
                    order_by=[table.id.asc], limit=size))
            rows = cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [key_text(k) for _, *row in rows
                for k in identity_keys(dict(zip(IDENTITY_FIELDS, row)))]

    @classmethod
    def _known_identities(cls, keys):
        "The keys among these that an active lead already has."
        found = set()
        for lead in cls._identity_rows(keys, IDENTITY_FIELDS):
            found |= identity_keys(lead)
        return found & set(keys)

    @classmethod
    def _attach_known(cls, vlist):
        """Attach rows of people who already have a lead, the way
        Lead.capture does: each row goes to the oldest active lead with one
        of its keys and fills that lead's empty fields only (the first row
        to give a value wins). Return the ids of the leads, row by row, and
        the rows whose lead was not found."""
        leads = cls._identity_rows(
            set().union(*(identity_keys(v) for v in vlist)), CAPTURE_FIELDS)
        owners, current = {}, {}
        for lead in leads:
            current[lead['id']] = lead
            for key in identity_keys(lead):
                owners.setdefault(key, lead['id'])
        ids, missing, fills = [], [], {}
        for values in vlist:
            keys = identity_keys(values)
            lead_id = next(
                (owners[k] for k in sorted(keys) if k in owners), None)
            if lead_id is None:
                missing.append(values)
                continue
            ids.append(lead_id)
            lead = current[lead_id]
            for name in CAPTURE_FIELDS:
                if values.get(name) and not lead[name]:
                    lead[name] = fills.setdefault(lead_id, {})[name] = \
                        values[name]
            for key in keys:
                owners.setdefault(key, lead_id)
        if fills:
            cls.fill_in_bulk(fills)
        return ids, missing

    @staticmethod
    def _import_values(values, source):
        """The values of a new lead, as Lead.capture makes them, from the
        parser's values (capture fields only, never None), completed."""
        values.setdefault('name', values.get('phone')
            or values.get('whatsapp') or values.get('email'))
        if source:
            values['source'] = source.id
        return values

    @classmethod
    def _normalized_phone(cls, value, strict=True):
        if checked_values():
            # The importer's parser gave it in E.164: checked once is enough.
            return value
        return super()._normalized_phone(value, strict=strict)
