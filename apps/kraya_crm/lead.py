from trytond.i18n import gettext
from trytond.model import DeactivableMixin, Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.transaction import Transaction

from .contact import InvalidPhone, normalize_email, normalize_phone
from .exceptions import InvalidPhoneError, LeadConvertError

STATUSES = [
    ('new', "New"),
    ('contacted', "Contacted"),
    ('qualified', "Qualified"),
    ('unqualified', "Unqualified"),
    ('converted', "Converted"),
    ]
PHONE_FIELDS = ('phone', 'whatsapp')


class OwnedMixin:
    "Who works the record: its owner and the owner's team."
    __slots__ = ()
    company = fields.Many2One(
        'company.company', "Company", required=True,
        domain=[
            ('id', If(Eval('context', {}).contains('company'), '=', '!='),
                Eval('context', {}).get('company', -1)),
            ])
    owner = fields.Many2One(
        'res.user', "Owner",
        help="The salesperson who works it; empty means anyone in the team "
        "may pick it up.")
    team = fields.Many2One('crm.team', "Team")

    @staticmethod
    def default_company():
        return Transaction().context.get('company')

    @staticmethod
    def default_owner():
        user = Transaction().user
        return user or None

    @staticmethod
    def default_team():
        pool = Pool()
        User = pool.get('res.user')
        user = Transaction().user
        if user:
            return User(user).get_default_crm_team()


class Lead(DeactivableMixin, OwnedMixin, ModelSQL, ModelView):
    "A person who may buy: one row per person, however they reached us."
    __name__ = 'crm.lead'
    __string__ = "Lead"
    _rec_name = 'name'

    name = fields.Char("Contact Name", required=True)
    company_name = fields.Char("Company Name")
    phone = fields.Char("Phone", help="Stored in E.164, e.g. +919876543210.")
    whatsapp = fields.Char(
        "WhatsApp", help="Stored in E.164; leave empty when it is the phone.")
    email = fields.Char("Email")
    city = fields.Char("City")
    subdivision = fields.Many2One(
        'country.subdivision', "State",
        domain=[('country.code', '=', 'IN'), ('parent', '=', None)])
    source = fields.Many2One('crm.source', "Source", ondelete='RESTRICT')
    campaign = fields.Char("Campaign")
    status = fields.Selection(
        STATUSES, "Status", required=True, sort=False,
        states={'readonly': Eval('status') == 'converted'})
    score = fields.Integer(
        "Score", domain=[('score', '>=', 0), ('score', '<=', 100)],
        help="0 to 100: how likely this lead is to buy.")
    next_follow_up = fields.DateTime("Next Follow-up")
    notes = fields.Text("Notes")
    party = fields.Many2One(
        'party.party', "Party", readonly=True, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'},
        help="The customer created when the lead was converted.")
    deals = fields.One2Many('crm.deal', 'lead', "Deals", readonly=True)
    tasks = fields.One2Many('crm.task', 'lead', "Tasks")
    messages = fields.One2Many(
        'crm.message', 'lead', "Timeline", readonly=True)
    last_inbound_at = fields.Timestamp(
        "Last Message From Lead", readonly=True,
        help="Opens WhatsApp's 24-hour window for free-form replies.")
    replied_at = fields.Timestamp(
        "Replied At", readonly=True,
        help="When the lead last wrote back after we knew them.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.phone, Index.Equality())),
                Index(t, (t.whatsapp, Index.Equality())),
                Index(t, (t.email, Index.Equality())),
                Index(t, (t.owner, Index.Range()), (t.status, Index.Equality(
                            cardinality='low'))),
                Index(t, (t.next_follow_up, Index.Range()),
                    where=t.next_follow_up != None),  # noqa: E711
                })
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._buttons.update({
                'convert': {
                    'invisible': Eval('status') == 'converted',
                    'depends': ['status'],
                    'icon': 'tryton-forward',
                    },
                })

    @staticmethod
    def default_status():
        return 'new'

    @staticmethod
    def default_score():
        return 0

    def get_rec_name(self, name):
        if self.company_name:
            return f'{self.name} ({self.company_name})'
        return self.name

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause
        bool_op = 'AND' if operator.startswith('!') or operator.startswith(
            'not ') else 'OR'
        domain = [bool_op,
            ('name', operator, value),
            ('company_name', operator, value),
            ('email', operator, value),
            ]
        if isinstance(value, str):
            try:
                phone = normalize_phone(value.strip('%'))
            except InvalidPhone:
                phone = None
            if phone:
                domain.extend([
                        ('phone', '=', phone), ('whatsapp', '=', phone)])
        return domain

    @fields.depends('phone')
    def on_change_phone(self):
        self.phone = self._normalized_phone(self.phone, strict=False)

    @fields.depends('whatsapp')
    def on_change_whatsapp(self):
        self.whatsapp = self._normalized_phone(self.whatsapp, strict=False)

    @fields.depends('email')
    def on_change_email(self):
        self.email = normalize_email(self.email)

    @staticmethod
    def _normalized_phone(value, strict=True):
        try:
            return normalize_phone(value)
        except InvalidPhone:
            if strict:
                raise InvalidPhoneError(gettext(
                        'kraya_crm.msg_invalid_phone', phone=value))
            return value

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        for name in PHONE_FIELDS:
            if values.get(name):
                values[name] = cls._normalized_phone(values[name])
        if 'email' in values:
            values['email'] = normalize_email(values['email'])
        return values

    @property
    def whatsapp_number(self):
        return self.whatsapp or self.phone

    @property
    def open_deal(self):
        "The most recent open deal, where the lead's messages belong too."
        deals = [d for d in self.deals if d.stage.kind == 'open']
        return max(deals, key=lambda d: d.id) if deals else None

    @classmethod
    def record_inbound(cls, events):
        """Note messages from leads: [(lead, at, is_reply)]. A reply is a
        message from a lead we already knew; it marks the lead replied."""
        latest = {}
        for lead, at, is_reply in events:
            last, replied = latest.get(lead.id, (None, None))
            latest[lead.id] = (max(filter(None, [last, at])),
                max(filter(None, [replied, at if is_reply else None]),
                    default=None))
        to_write = []
        for lead in cls.browse(list(latest)):
            at, replied = latest[lead.id]
            values = {}
            if not lead.last_inbound_at or at > lead.last_inbound_at:
                values['last_inbound_at'] = at
            if replied and (not lead.replied_at or replied > lead.replied_at):
                values['replied_at'] = replied
            if values:
                to_write.extend(([lead], values))
        if to_write:
            cls.write(*to_write)

    @classmethod
    @ModelView.button_action('kraya_crm.act_deal_of_leads')
    def convert(cls, leads):
        "Convert to Deal, then show the new deals."
        cls.convert_to_deals(leads)

    @classmethod
    def convert_to_deals(cls, leads):
        """Make each lead a customer (party) with an open deal and return
        the deals. Leads already converted are left as they are."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        Party = pool.get('party.party')
        leads = [l for l in leads if l.status != 'converted']
        if not leads:
            return []
        stage = Stage.first_open()
        if not stage:
            raise LeadConvertError(gettext('kraya_crm.msg_no_open_stage'))
        parties = [l.party or l._new_party() for l in leads]
        Party.save(parties)
        deals = [l._new_deal(stage, p) for l, p in zip(leads, parties)]
        Deal.save(deals)
        for lead, party in zip(leads, parties):
            lead.party = party
            lead.status = 'converted'
        cls.save(leads)
        return deals

    def _new_party(self):
        pool = Pool()
        Party = pool.get('party.party')
        Address = pool.get('party.address')
        Mechanism = pool.get('party.contact_mechanism')
        party = Party(name=self.company_name or self.name)
        mechanisms = []
        if self.phone:
            mechanisms.append(Mechanism(type='mobile', value=self.phone))
        if self.whatsapp and self.whatsapp != self.phone:
            mechanisms.append(Mechanism(type='mobile', value=self.whatsapp,
                    comment="WhatsApp"))
        if self.email:
            mechanisms.append(Mechanism(type='email', value=self.email))
        if self.company_name:
            mechanisms.append(Mechanism(type='other', value=self.name,
                    comment="Contact person"))
        party.contact_mechanisms = mechanisms
        address = Address(city=self.city)
        if self.subdivision:
            address.subdivision = self.subdivision
            address.country = self.subdivision.country
        party.addresses = [address]
        return party

    def _new_deal(self, stage, party):
        pool = Pool()
        Deal = pool.get('crm.deal')
        return Deal(
            title=self.company_name or self.name,
            lead=self,
            party=party,
            company=self.company,
            currency=self.company.currency,
            stage=stage,
            owner=self.owner,
            team=self.team,
            value=0,
            )
