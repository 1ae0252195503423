"""A person's rights over their data (India's DPDP Act 2023): a manager
exports everything held about them, erases it when they ask, and a cron
anonymises the leads that went nowhere after the months the site keeps
them. Every one of these is written in the privacy log.

Erasure decides per model (Lead.erase): a row others count on (a message
in a sequence's figures, a deal in the pipeline's totals, a task in the
owner's history) stays with its personal text gone; a file the person sent
is deleted; a GST invoice and its party stay whole, since the law requires
the books kept (CGST Act s.36, 72 months). The erased phones and emails
become HMAC-SHA-256 hashes with the site's pepper ([kraya_crm]
privacy_pepper): on the suppression list, which capture.py checks for
every channel, and on the consent ledger, as proof that the person's
consent and its withdrawal happened without keeping the number."""
import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import zipfile
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sql import Null
from sql.operators import Exists

from trytond.i18n import gettext
from trytond.model import Index, Model, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateView, Wizard

from .capture import identity_keys
from .exceptions import PrivacyError
from .http import secret
from .message import utcnow
from .spreadsheet import csv_bytes

logger = logging.getLogger(__name__)

ACTIONS = [
    ('export', "Export"),
    ('erasure', "Erasure on request"),
    ('retention', "Retention purge"),
    ]
# The lead's fields that are the person: emptied on erasure (the name is
# replaced, being required).
PERSONAL_FIELDS = ('company_name', 'phone', 'whatsapp', 'email', 'city',
    'subdivision', 'campaign', 'notes', 'next_follow_up')
# What the export holds of each model, field by field.
EXPORTED = {
    'lead': ('crm.lead', ['id', 'name', 'company_name', 'phone', 'whatsapp',
            'email', 'city', 'subdivision', 'source', 'campaign', 'status',
            'score', 'owner', 'team', 'notes', 'party', 'last_inbound_at',
            'replied_at', 'create_date', 'erased_at']),
    'messages': ('crm.message', ['id', 'at', 'direction', 'channel', 'kind',
            'status', 'address', 'subject', 'body', 'attachment',
            'media_filename', 'media_mime_type', 'deal', 'sent_at',
            'delivered_at', 'read_at', 'failed_at', 'error_code']),
    'consents': ('crm.lead.consent', ['id', 'channel', 'state',
            'opted_in_at', 'opted_in_how', 'opted_in_basis', 'opted_out_at',
            'opted_out_reason']),
    'tasks': ('crm.task', ['id', 'name', 'kind', 'state', 'owner', 'due',
            'deal', 'notes', 'outcome', 'outcome_note', 'done_at']),
    'deals': ('crm.deal', ['id', 'title', 'party', 'stage', 'value',
            'currency', 'expected_close', 'owner', 'lost_reason',
            'create_date']),
    'stage_history': ('crm.deal.stage_history', None),
    'enrollments': ('crm.enrollment', ['id', 'sequence', 'deal', 'state',
            'stop_reason', 'enrolled_at', 'last_step_at', 'replied_at']),
    'merges': ('crm.lead.merge_log', ['id', 'merged_at', 'merged_by',
            'snapshot']),
    'privacy_log': ('crm.privacy.log', ['id', 'action', 'done_at',
            'done_by', 'detail']),
    }
ATTACHMENT_FIELDS = ['id', 'name', 'type', 'resource', 'description',
    'create_date']


def pepper():
    "The site's pepper of the hashes; None while it is unusable."
    return secret('privacy_pepper')


def identity_hash(key, pepper_value):
    "The hex HMAC-SHA-256 of an identity key ('phone', '+91...')."
    kind, value = key
    return hmac.new(pepper_value.encode(), f'{kind}:{value}'.encode(),
        hashlib.sha256).hexdigest()


def lead_keys(lead):
    return identity_keys({f: getattr(lead, f) for f in (
                'phone', 'whatsapp', 'email')})


def plain(value):
    "A value as JSON and a CSV cell hold it: records by their name."
    if isinstance(value, Model):
        return value.rec_name
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (Decimal, dt.timedelta)):
        return str(value)
    return value


class PrivacyLog(ModelSQL, ModelView):
    "An export, erasure or retention purge of a person's data: who, when."
    __name__ = 'crm.privacy.log'
    __string__ = "Privacy Log"
    action = fields.Selection(ACTIONS, "Action", required=True,
        readonly=True)
    lead = fields.Many2One('crm.lead', "Lead", readonly=True,
        ondelete='SET NULL', context={'active_test': False})
    # The lead's number outlives a lead deleted later; never its name,
    # which an erasure removes.
    lead_number = fields.Integer("Lead Number", readonly=True)
    done_at = fields.Timestamp("At", required=True, readonly=True)
    done_by = fields.Many2One('res.user', "By", readonly=True,
        help="Empty for the retention cron.")
    detail = fields.Text("What", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.lead, Index.Range())))
        cls._order = [('done_at', 'DESC'), ('id', 'DESC')]

    @classmethod
    def record(cls, action, leads, details):
        """Log the action on each lead, details[lead.id] saying what; the
        log is written by the system, never by a user's hand."""
        now = utcnow()
        user = Transaction().user or None
        with without_check_access():
            return cls.create([{'action': action, 'lead': lead.id,
                        'lead_number': lead.id, 'done_at': now,
                        'done_by': user if action != 'retention' else None,
                        'detail': details.get(lead.id)} for lead in leads])


class Suppression(ModelSQL, ModelView):
    """A phone or email whose owner had their data erased: no channel makes
    them a lead again. Only its peppered hash is kept."""
    __name__ = 'crm.privacy.suppression'
    __string__ = "Suppressed Person"
    kind = fields.Selection([
            ('phone', "Phone or WhatsApp"),
            ('email', "Email"),
            ], "Kind", required=True, readonly=True)
    identity_hash = fields.Char("Hash", required=True, readonly=True,
        help="HMAC-SHA-256 of the number or address with the site's pepper.")
    suppressed_at = fields.Timestamp("Since", required=True, readonly=True)
    log = fields.Many2One('crm.privacy.log', "Erasure", readonly=True,
        ondelete='SET NULL')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('identity_hash_unique', Unique(t, t.identity_hash),
                'kraya_crm.msg_privacy_suppression_unique'),
            ]
        cls._order = [('suppressed_at', 'DESC'), ('id', 'DESC')]

    @classmethod
    def suppressed_keys(cls, keys):
        """The identity keys among these whose person is suppressed: one
        lookup of their hashes through the unique index."""
        keys = set(keys)
        value = pepper()
        if not keys or value is None:
            # Without a pepper nothing could be suppressed; http.secret
            # has logged why.
            return set()
        by_hash = {identity_hash(k, value): k for k in keys}
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        found = set()
        hashes = sorted(by_hash)
        for i in range(0, len(hashes), 500):
            cursor.execute(*table.select(table.identity_hash,
                    where=table.identity_hash.in_(hashes[i:i + 500])))
            found.update(by_hash[h] for h, in cursor)
        return found

    @classmethod
    def suppress(cls, keys_by_log):
        "Put {log: keys} on the list; keys already on it stay as they are."
        value = pepper()
        now = utcnow()
        new = {}
        for log, keys in keys_by_log.items():
            for key in keys:
                new.setdefault(identity_hash(key, value), (key[0], log))
        known = {s.identity_hash for s in cls.search(
                [('identity_hash', 'in', list(new))])} if new else set()
        with without_check_access():
            cls.create([{'kind': kind, 'identity_hash': h,
                        'suppressed_at': now, 'log': log.id}
                    for h, (kind, log) in new.items() if h not in known])


class Consent(metaclass=PoolMeta):
    __name__ = 'crm.lead.consent'
    identity_hashes = fields.Text("Proof of Identity", readonly=True,
        help="Once the person's data is erased: the HMAC-SHA-256 hashes, "
        "with the site's pepper, of their phone and email, one a line. "
        "Hashing a number given later tells whether this consent was "
        "theirs.")


class Configuration(metaclass=PoolMeta):
    __name__ = 'crm.configuration'
    privacy_retention_months = fields.Integer("Keep Silent Leads (Months)",
        domain=['OR', ('privacy_retention_months', '=', None),
            ('privacy_retention_months', '>=', 1)],
        help="Leads never converted and silent (no message, no task) this "
        "many months are anonymised by the daily cron. Empty: kept.")


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    erased_at = fields.Timestamp("Personal Data Erased At", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # The retention cron's candidates, oldest first, by this index.
        cls._sql_indexes.add(Index(t, (t.create_date, Index.Range()),
                where=t.erased_at == Null))
        cls._buttons.update({
                'export_personal_data': {
                    'icon': 'tryton-save',
                    },
                'erase_personal_data': {
                    'invisible': Eval('erased_at', None) != None,  # noqa
                    'depends': ['erased_at'],
                    'icon': 'tryton-delete',
                    },
                })

    @classmethod
    @ModelView.button_action('kraya_crm.wizard_lead_privacy_export')
    def export_personal_data(cls, leads):
        pass

    @classmethod
    @ModelView.button
    def erase_personal_data(cls, leads):
        "The person asked: erase, and never capture them again."
        cls.erase(leads, 'erasure')

    # Export

    def personal_data(self):
        """{table: [row dicts]} of everything held about the person, and
        the attachments' contents as {attachment id: bytes}."""
        pool = Pool()
        Attachment = pool.get('ir.attachment')
        tables = {}
        related = {'lead': [self]}
        deal_ids = [d.id for d in self.deals]
        for name, (model, _) in EXPORTED.items():
            if name in related:
                continue
            Model = pool.get(model)
            if name == 'stage_history':
                domain = [('deal', 'in', deal_ids)]
            elif name == 'merges':
                domain = [('survivor', '=', self.id)]
            else:
                domain = [('lead', '=', self.id)]
            related[name] = Model.search(domain, order=[('id', 'ASC')])
        for name, (model, names) in EXPORTED.items():
            Model = pool.get(model)
            if names is None:
                names = ['id'] + sorted(n for n, f in Model._fields.items()
                    if not isinstance(f, (fields.Function, fields.One2Many,
                            fields.Many2Many, fields.Binary))
                    and n not in {'id', 'create_uid', 'write_uid',
                        'write_date', 'rec_name'})
            tables[name] = [{n: plain(getattr(r, n, None)) for n in names}
                for r in related[name]]
        resources = [str(self)] + [str(m) for m in related['messages']]
        attachments = Attachment.search([('resource', 'in', resources)],
            order=[('id', 'ASC')])
        tables['attachments'] = [{n: plain(getattr(a, n, None))
                for n in ATTACHMENT_FIELDS} for a in attachments]
        contents = {a.id: bytes(a.data or b'') for a in attachments
            if a.type == 'data'}
        return tables, contents

    def personal_data_zip(self):
        """One ZIP: personal-data.json (every table, and each attachment's
        content in base64), a CSV per table, and the files themselves."""
        tables, contents = self.personal_data()
        document = {'exported_at': utcnow().isoformat(),
            'lead_id': self.id, **tables}
        for row in document['attachments']:
            data = contents.get(row['id'])
            row['content_base64'] = (
                base64.b64encode(data).decode() if data is not None else None)
        out = io.BytesIO()
        with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as archive:
            archive.writestr('personal-data.json', json.dumps(document,
                    ensure_ascii=False, indent=1, default=str))
            for name, rows in tables.items():
                header = list(rows[0]) if rows else self._table_header(name)
                archive.writestr(f'{name}.csv', csv_bytes(header,
                        [[json.dumps(v, ensure_ascii=False)
                                if isinstance(v, list) else v
                                for v in row.values()] for row in rows]))
            for row in tables['attachments']:
                if row['id'] in contents:
                    safe = (row['name'] or 'file').replace('/', '_')
                    archive.writestr(f"attachments/{row['id']}-{safe}",
                        contents[row['id']])
        return out.getvalue()

    @staticmethod
    def _table_header(name):
        if name == 'attachments':
            return ATTACHMENT_FIELDS
        return EXPORTED[name][1] or ['id']

    # Erasure

    @classmethod
    def erase(cls, leads, action):
        """Erase the personal data of these leads (action 'erasure': the
        person asked, so they are suppressed too; 'retention': the cron's
        purge, after which the person may come back as a new lead).
        Returns the privacy log rows."""
        pool = Pool()
        Log = pool.get('crm.privacy.log')
        Suppression = pool.get('crm.privacy.suppression')
        leads = [l for l in leads if not l.erased_at]
        if not leads:
            return []
        value = pepper()
        if value is None:
            raise PrivacyError(gettext('kraya_crm.msg_privacy_no_pepper'))
        keys = {lead.id: lead_keys(lead) for lead in leads}
        with without_check_access():
            counts = cls._erase_related(leads, keys, value)
            now, to_write = utcnow(), []
            for lead in leads:
                # The name is required: one that says what happened.
                to_write.extend(([lead], {
                            **{f: None for f in PERSONAL_FIELDS},
                            'name': gettext(
                                'kraya_crm.msg_privacy_erased_name',
                                id=lead.id),
                            'active': False, 'erased_at': now,
                            # Nor is anyone chased or handed the lead.
                            'sla_next_at': None, 'reassign_at': None}))
            cls.write(*to_write)
        logs = Log.record(action, leads, {lead.id: counts[lead.id]
                for lead in leads})
        if action == 'erasure':
            Suppression.suppress({log: keys[log.lead.id] for log in logs})
        return logs

    @classmethod
    def _erase_related(cls, leads, keys, pepper_value):
        """Erase what hangs on the leads, model by model; returns {lead id:
        what was done, as text for the log}."""
        pool = Pool()
        Attachment = pool.get('ir.attachment')
        Consent = pool.get('crm.lead.consent')
        Deal = pool.get('crm.deal')
        Enrollment = pool.get('crm.enrollment')
        MergeLog = pool.get('crm.lead.merge_log')
        Message = pool.get('crm.message')
        Task = pool.get('crm.task')
        ids = [l.id for l in leads]
        done = {i: {} for i in ids}

        def count(records, what):
            for record in records:
                lead = getattr(record, 'lead', None) or getattr(
                    record, 'survivor', None)
                done[lead.id][what] = done[lead.id].get(what, 0) + 1

        # Sequences stop first: nothing more goes to someone erased.
        Enrollment.end(Enrollment.running([('lead', 'in', ids)]),
            'stopped', 'inactive')
        # Messages stay, without their text, addresses and provider ids:
        # the sequences' figures and the inbox count them, and with no
        # provider id no reply or status from outside finds the lead
        # again (a reply goes through capture, which drops it).
        messages = Message.search([('lead', 'in', ids)])
        # The files the person sent or was sent are theirs: deleted.
        attachments = Attachment.search([('resource', 'in',
                    [str(l) for l in leads] + [str(m) for m in messages])])
        for attachment in attachments:
            resource = attachment.resource
            lead_id = resource.id if resource.__name__ == 'crm.lead' else \
                resource.lead.id
            done[lead_id]['files'] = done[lead_id].get('files', 0) + 1
        Attachment.delete(attachments)
        if messages:
            queued = [m for m in messages if m.status in {'queued', 'sending'}]
            Message.write(messages, {'body': None, 'subject': None,
                    'attachment': None, 'address': None, 'provider_id': None,
                    'media': None, 'media_id': None, 'media_filename': None,
                    'error_message': None})
            if queued:
                Message.write(queued, {'status': 'failed',
                        'failed_at': utcnow(), 'error_code': 'erased'})
        count(messages, 'messages')
        # Consents stay as the proof that they happened, with the hashes
        # of the identity instead of the lead's number.
        consents = Consent.search([('lead', 'in', ids)])
        for consent in consents:
            consent.identity_hashes = '\n'.join(sorted(
                    identity_hash(k, pepper_value)
                    for k in keys[consent.lead.id])) or None
        Consent.save(consents)
        count(consents, 'consents')
        # Tasks and deals stay for the owner's history and the pipeline's
        # figures; their names often carry the person's name.
        tasks = Task.search([('lead', 'in', ids)])
        if tasks:
            Task.write(tasks, {'name': gettext(
                        'kraya_crm.msg_privacy_erased_task'),
                    'notes': None, 'outcome_note': None})
        count(tasks, 'tasks')
        deals = Deal.search([('lead', 'in', ids)])
        if deals:
            Deal.write(deals, {'title': gettext(
                        'kraya_crm.msg_privacy_erased_deal'),
                    'lost_reason': None})
        count(deals, 'deals')
        cls._erase_parties(leads)
        # A merge log keeps what the merged leads held: their phones too.
        merges = MergeLog.search([('survivor', 'in', ids)])
        for merge in merges:
            merge.snapshot = json.dumps([{'id': i, 'erased': True}
                    for i in [m.id for m in merge.merged]])
        MergeLog.save(merges)
        count(merges, 'merge logs')
        return {i: ', '.join(f'{n} {what}' for what, n in sorted(
                    done[i].items())) or '-' for i in ids}

    @classmethod
    def _erase_parties(cls, leads):
        """The customer made at conversion: one with a GST invoice stays
        whole (the books must be kept); one without loses its name,
        contacts and addresses."""
        pool = Pool()
        Address = pool.get('party.address')
        Invoice = pool.get('account.invoice')
        Mechanism = pool.get('party.contact_mechanism')
        Party = pool.get('party.party')
        parties = {l.party for l in leads if l.party}
        invoiced = {i.party for i in Invoice.search(
                [('party', 'in', [p.id for p in parties])])}
        parties = [p for p in parties if p not in invoiced]
        if not parties:
            return
        Mechanism.delete([m for p in parties for m in p.contact_mechanisms])
        stored = [n for n, f in Address._fields.items()
            if isinstance(f, (fields.Char, fields.Text))
            and not isinstance(f, fields.Function)]
        addresses = [a for p in parties for a in p.addresses]
        if addresses:
            Address.write(addresses, {n: None for n in stored})
        Party.write(parties, {'name': gettext(
                    'kraya_crm.msg_privacy_erased_party')})

    # Retention

    @classmethod
    def retention_query(cls, cutoff, limit):
        """The SELECT of the leads to purge: never converted (no deal,
        no party), not erased, created before the cutoff and with no
        message or task since. Through the partial index on create_date,
        and the lead indexes of messages, tasks and deals."""
        pool = Pool()
        lead = cls.__table__()
        message = pool.get('crm.message').__table__()
        task = pool.get('crm.task').__table__()
        deal = pool.get('crm.deal').__table__()
        recent_message = message.select(message.id,
            where=(message.lead == lead.id) & (message.at >= cutoff))
        recent_task = task.select(task.id,
            where=(task.lead == lead.id) & (
                (task.create_date >= cutoff) | (task.write_date >= cutoff)))
        any_deal = deal.select(deal.id, where=deal.lead == lead.id)
        return lead.select(lead.id,
            where=(lead.erased_at == Null) & (lead.create_date < cutoff)
            & (lead.party == Null) & (lead.status != 'converted')
            & ~Exists(recent_message) & ~Exists(recent_task)
            & ~Exists(any_deal),
            order_by=[lead.create_date.asc], limit=limit)

    @classmethod
    def purge_silent_leads(cls, batch_size=500):
        """The cron: anonymise the leads silent for the configured months,
        a batch at a time (each batch leaves the query's reach)."""
        Configuration = Pool().get('crm.configuration')
        months = Configuration(1).privacy_retention_months
        if not months:
            return 0
        cutoff = utcnow() - relativedelta(months=months)
        cursor = Transaction().connection.cursor()
        purged = 0
        with without_check_access(), Transaction().set_context(
                active_test=False):
            while True:
                cursor.execute(*cls.retention_query(cutoff, batch_size))
                leads = cls.browse([i for i, in cursor])
                if not leads:
                    break
                cls.erase(leads, 'retention')
                purged += len(leads)
                if len(leads) < batch_size:
                    break
        if purged:
            logger.info("Retention: %d silent leads anonymised", purged)
        return purged


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.lead|purge_silent_leads',
                "Anonymise leads silent past the retention months"))


class ExportStart(ModelView):
    "The ZIP of everything held about the person, to download."
    __name__ = 'crm.lead.privacy_export.start'
    file = fields.Binary("Personal Data", filename='filename',
        readonly=True)
    filename = fields.Char("File Name", readonly=True)


class Export(Wizard):
    "Export Personal Data"
    __name__ = 'crm.lead.privacy_export'
    start = StateView('crm.lead.privacy_export.start',
        'kraya_crm.lead_privacy_export_start_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        Log = Pool().get('crm.privacy.log')
        if len(self.records) != 1:
            raise PrivacyError(gettext('kraya_crm.msg_privacy_export_one'))
        lead, = self.records
        data = lead.personal_data_zip()
        Log.record('export', [lead], {lead.id: gettext(
                    'kraya_crm.msg_privacy_export_detail', size=len(data))})
        return {'file': data,
            'filename': f'personal-data-lead-{lead.id}.zip'}
