"""Possible duplicates and merging them: leads that share a phone,
WhatsApp number or email, and a wizard that keeps one of them with the
values picked field by field and moves everything else onto it."""
import json

from sql import Literal, Null, Union
from sql.aggregate import Count

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .capture import IDENTITY_FIELDS, identity_keys
from .exceptions import MergeError
from .message import utcnow

# The lead fields whose surviving value is picked in the merge wizard.
PICKED_FIELDS = [
    'name', 'company_name', 'phone', 'whatsapp', 'email', 'city', 'owner',
    'status']


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    merged_into = fields.Many2One(
        'crm.lead', "Merged Into", readonly=True, ondelete='RESTRICT',
        help="The lead this one was merged into; it is kept, inactive.")
    similar_leads = fields.Function(fields.Many2Many(
            'crm.lead', None, None, "Possible Duplicates",
            help="Other leads with the same phone, WhatsApp number or "
            "email."),
        'get_similar_leads', searcher='search_similar_leads')

    @classmethod
    def _identity_table(cls):
        "(id, key) rows: every phone, WhatsApp number and email of a lead."
        lead = cls.__table__()
        return Union(*(lead.select(lead.id, column.as_('key'),
                    where=(column != Null) & (lead.active == Literal(True)))
                for column in [lead.phone, lead.whatsapp, lead.email]),
            all_=True)

    @classmethod
    def get_similar_leads(cls, leads, name):
        keys = {lead.id: identity_keys({f: getattr(lead, f)
                    for f in IDENTITY_FIELDS}) for lead in leads}
        # Every active lead sharing a key, in one indexed query.
        others = cls._identity_rows(
            set().union(*keys.values()), IDENTITY_FIELDS)
        # Only those the user may see (the record rules).
        visible = {l.id for l in cls.search(
                [('id', 'in', [o['id'] for o in others])])}
        others = [o for o in others if o['id'] in visible]
        return {lead.id: [o['id'] for o in others
                if o['id'] != lead.id and keys[lead.id] & identity_keys(o)]
            for lead in leads}

    @classmethod
    def search_similar_leads(cls, name, clause):
        """('similar_leads', '!=', None): the leads that have duplicates,
        found in SQL through a grouping of every phone, WhatsApp and email;
        ('similar_leads', '=', None): those that have none."""
        _, operator, value = clause
        keys = cls._identity_table()
        duplicated = keys.select(keys.key,
            group_by=[keys.key], having=Count(keys.id, distinct=True) > 1)
        having = keys.select(keys.id, where=keys.key.in_(duplicated))
        if value is None and operator in {'!=', '='}:
            return [('id', 'in' if operator == '!=' else 'not in', having)]
        raise NotImplementedError(f"similar_leads {operator} {value!r}")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'merge': {
                    'invisible': ~Eval('active', True),
                    'depends': ['active'],
                    'icon': 'tryton-link',
                    },
                })

    @classmethod
    @ModelView.button_action('kraya_crm.wizard_lead_merge')
    def merge(cls, leads):
        pass

    @classmethod
    def merge_into(cls, survivor, others, values):
        """Keep survivor with values, move everything the others have onto
        it, deactivate them pointing at the survivor, and log it all."""
        pool = Pool()
        Log = pool.get('crm.lead.merge_log')
        others = [o for o in others if o != survivor]
        if not others:
            return
        if not survivor.active or any(not o.active for o in others):
            raise MergeError(gettext('kraya_crm.msg_merge_inactive'))
        log = Log(survivor=survivor, merged_at=utcnow(),
            merged_by=Transaction().user or None,
            snapshot=json.dumps([o.merge_snapshot() for o in others],
                default=str, ensure_ascii=False, indent=1))
        notes = [survivor.notes] + [o.notes for o in others]
        values = dict(values)
        values['notes'] = '\n\n'.join(filter(None, notes)) or None
        # The others let go of their identity first: phones and emails
        # stay in the log, and duplicates checks stop finding them.
        cls.write(others, {'active': False, 'merged_into': survivor.id,
                'phone': None, 'whatsapp': None, 'email': None})
        cls.write([survivor], values)
        cls._move_related(survivor, others)
        Log.save([log])
        return log

    def merge_snapshot(self):
        "Everything the lead was, for the merge log."
        return {'id': self.id, **{f: getattr(self, f) for f in [
                    'name', 'company_name', 'phone', 'whatsapp', 'email',
                    'city', 'campaign', 'notes', 'status', 'score',
                    'create_date']},
            'owner': self.owner.rec_name if self.owner else None,
            'source': self.source.rec_name if self.source else None}

    @classmethod
    def _move_related(cls, survivor, others):
        pool = Pool()
        ids = [o.id for o in others]
        for model_name in ['crm.message', 'crm.task', 'crm.deal']:
            Model = pool.get(model_name)
            records = Model.search([('lead', 'in', ids)])
            if records:
                Model.write(records, {'lead': survivor.id})
        cls._merge_consents(survivor, others)

    @classmethod
    def _merge_consents(cls, survivor, others):
        """One consent per channel survives; an opt-out anywhere wins, since
        the person asked us to stop."""
        Consent = Pool().get('crm.lead.consent')
        kept = {c.channel: c for c in survivor.consents}
        to_delete, to_move = [], []
        for consent in Consent.search([('lead', 'in', [o.id for o in others])]):
            mine = kept.get(consent.channel)
            if mine is None:
                kept[consent.channel] = consent
                to_move.append(consent)
                continue
            if consent.state == 'opted_out' and mine.state != 'opted_out':
                Consent.write([mine], {'state': 'opted_out',
                        'opted_out_at': consent.opted_out_at,
                        'opted_out_reason': consent.opted_out_reason})
            to_delete.append(consent)
        if to_move:
            Consent.write(to_move, {'lead': survivor.id})
        Consent.delete(to_delete)


class MergeLog(ModelSQL, ModelView):
    "A merge of leads: who, when, and what the merged leads held."
    __name__ = 'crm.lead.merge_log'
    __string__ = "Lead Merge"
    survivor = fields.Many2One(
        'crm.lead', "Kept Lead", required=True, ondelete='CASCADE',
        readonly=True)
    merged = fields.Function(fields.Many2Many(
            'crm.lead', None, None, "Merged Leads",
            context={'active_test': False}),
        'get_merged')
    merged_at = fields.Timestamp("Merged At", required=True, readonly=True)
    merged_by = fields.Many2One('res.user', "Merged By", readonly=True)
    snapshot = fields.Text("Merged Values", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('survivor')
        cls._order = [('merged_at', 'DESC'), ('id', 'DESC')]

    def get_merged(self, name):
        return [lead['id'] for lead in json.loads(self.snapshot or '[]')]


def _options(field_name):
    "The selection method offering the values the leads have for a field."
    @fields.depends('leads')
    def options(self):
        return self.value_options(field_name)
    return options


class MergeStart(ModelView):
    "Pick the lead to keep and, field by field, the values it keeps."
    __name__ = 'crm.lead.merge.start'
    leads = fields.Many2Many(
        'crm.lead', None, None, "Leads", readonly=True)
    survivor = fields.Many2One(
        'crm.lead', "Keep", required=True,
        domain=[('id', 'in', Eval('leads', []))],
        help="The lead that stays; the others are merged into it.")
    keep_name = fields.Selection('get_keep_name_options', "Contact Name")
    get_keep_name_options = _options('name')
    keep_company_name = fields.Selection('get_keep_company_name_options', "Company Name")
    get_keep_company_name_options = _options('company_name')
    keep_phone = fields.Selection('get_keep_phone_options', "Phone")
    get_keep_phone_options = _options('phone')
    keep_whatsapp = fields.Selection('get_keep_whatsapp_options', "WhatsApp")
    get_keep_whatsapp_options = _options('whatsapp')
    keep_email = fields.Selection('get_keep_email_options', "Email")
    get_keep_email_options = _options('email')
    keep_city = fields.Selection('get_keep_city_options', "City")
    get_keep_city_options = _options('city')
    keep_owner = fields.Selection('get_keep_owner_options', "Owner")
    get_keep_owner_options = _options('owner')
    keep_status = fields.Selection('get_keep_status_options', "Status")
    get_keep_status_options = _options('status')

    def value_options(self, field_name):
        "[(value, label)] of the distinct values the leads have."
        options = [(None, "")]
        for lead in getattr(self, 'leads', None) or []:
            value = getattr(lead, field_name)
            if value is None or value == '':
                continue
            if hasattr(value, 'id'):
                key, label = str(value.id), value.rec_name
            elif field_name == 'status':
                key = value
                label = dict(lead.fields_get(['status'])['status'][
                        'selection'])[value]
            else:
                key, label = value, value
            if key not in {k for k, _ in options}:
                options.append((key, f"{label}  ({lead.rec_name})"))
        return options

    def picked_values(self):
        "The lead values to write on the survivor."
        values = {}
        for name in PICKED_FIELDS:
            value = getattr(self, f'keep_{name}', None) or None
            if name == 'owner' and value is not None:
                value = int(value)
            values[name] = value
        values['name'] = values['name'] or self.survivor.name
        return values


class Merge(Wizard):
    "Merge duplicate leads into one."
    __name__ = 'crm.lead.merge'
    start = StateView('crm.lead.merge.start',
        'kraya_crm.lead_merge_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Merge", 'merge', 'tryton-ok', default=True),
            ])
    merge = StateTransition()

    def default_start(self, fields):
        leads = self.records
        if len(leads) == 1:
            leads = [leads[0]] + list(leads[0].similar_leads)
        if len(leads) < 2:
            raise MergeError(gettext('kraya_crm.msg_merge_two_leads'))
        survivor = min(leads, key=lambda l: l.id)
        defaults = {'leads': [l.id for l in leads], 'survivor': survivor.id}
        for name in PICKED_FIELDS:
            # The oldest lead's value, else the first lead that has one.
            for lead in [survivor] + leads:
                value = getattr(lead, name)
                if value:
                    defaults[f'keep_{name}'] = str(value.id) if hasattr(
                        value, 'id') else value
                    break
        return defaults

    def transition_merge(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Lead.merge_into(self.start.survivor, list(self.start.leads),
            self.start.picked_values())
        return 'end'
