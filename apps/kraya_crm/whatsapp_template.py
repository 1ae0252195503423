"""The WhatsApp message templates of the business account, as Meta holds
them: only an approved template may open a conversation or follow up after
the 24-hour window. A copy is kept here (one row per name and language) so
that a salesperson picks one from a list, sees its text filled in, and the
outbox knows its category: a lead who stopped marketing messages still
gets utility templates. Sync reads Meta's list page after page; a template
gone from Meta is switched off here, not deleted (messages name it)."""
import json
import re

from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, ModelSQL, ModelView, Unique, fields)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import TemplateSyncError
from .http import setting
from .message import utcnow
from .template import VARIABLES

PARAMETER = re.compile(r'\{\{\s*(\d+)\s*\}\}')
CATEGORIES = [
    ('MARKETING', "Marketing"),
    ('UTILITY', "Utility"),
    ('AUTHENTICATION', "Authentication"),
    ]
STATUSES = [
    ('APPROVED', "Approved"),
    ('PENDING', "Pending"),
    ('IN_APPEAL', "In appeal"),
    ('REJECTED', "Rejected"),
    ('PAUSED', "Paused"),
    ('DISABLED', "Disabled"),
    ('PENDING_DELETION', "Pending deletion"),
    ('DELETED', "Deleted"),
    ('ARCHIVED', "Archived"),
    ('LIMIT_EXCEEDED', "Limit exceeded"),
    ]
HEADER_FORMATS = [
    (None, ""),
    ('TEXT', "Text"),
    ('IMAGE', "Image"),
    ('DOCUMENT', "Document"),
    ('VIDEO', "Video"),
    ('LOCATION', "Location"),
    ]


class Template(DeactivableMixin, ModelSQL, ModelView):
    "A WhatsApp message template of the business account."
    __name__ = 'crm.whatsapp.template'
    __string__ = "WhatsApp Template"
    name = fields.Char("Name", required=True, readonly=True)
    language = fields.Char("Language", required=True, readonly=True)
    category = fields.Selection(CATEGORIES, "Category", readonly=True,
        help="Marketing templates are not sent to leads who stopped "
        "marketing messages.")
    status = fields.Selection(STATUSES, "Status", readonly=True,
        help="Only approved templates can be sent.")
    body = fields.Text("Text", readonly=True,
        help="{{1}}, {{2}}... are filled in for each lead.")
    header_format = fields.Selection(HEADER_FORMATS, "Header", readonly=True,
        help="An image or document header is sent with the step's file.")
    parameter_count = fields.Integer("Parameters", readonly=True)
    components = fields.Text("Components", readonly=True,
        help="The template as Meta describes it (JSON).")
    provider_id = fields.Char("Meta ID", readonly=True)
    synced_at = fields.Timestamp("Synced At", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('name_language_unique', Unique(t, t.name, t.language),
                'kraya_crm.msg_whatsapp_template_unique'),
            ]
        cls._order = [('name', 'ASC'), ('language', 'ASC'), ('id', 'ASC')]

    def get_rec_name(self, name):
        return f'{self.name} ({self.language})'

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('name',) + tuple(clause[1:])]

    @classmethod
    def approved(cls):
        "The templates that can be sent."
        return cls.search([
                ('status', '=', 'APPROVED'), ('active', '=', True)])

    @property
    def is_marketing(self):
        return self.category == 'MARKETING'

    def preview(self, parameters):
        "The text as the lead reads it, {{n}} filled with parameters."
        parameters = list(parameters or [])

        def fill(match):
            number = int(match.group(1))
            if 0 < number <= len(parameters) and parameters[number - 1]:
                return str(parameters[number - 1])
            return match.group(0)
        return PARAMETER.sub(fill, self.body or '')

    def prefill(self, lead):
        "The parameters a salesperson starts from: {{1}} the first name."
        parameters = [''] * (self.parameter_count or 0)
        if parameters and lead:
            parameters[0] = VARIABLES['lead']['first_name'](lead) or ''
        return parameters

    @classmethod
    def sync(cls):
        """Read every template of the business account from Meta and make
        the catalogue match: new ones created, changed ones updated, those
        gone switched off. Returns the number read."""
        from .outbox import whatsapp_client
        from .whatsapp_client import GraphError
        account = setting('whatsapp_business_account_id', '', str)
        if not account:
            raise TemplateSyncError(gettext(
                    'kraya_crm.msg_whatsapp_template_no_account'))
        try:
            read = [cls._catalogue_values(t)
                for t in whatsapp_client().templates(account)]
        except GraphError as error:
            raise TemplateSyncError(gettext(
                    'kraya_crm.msg_whatsapp_template_sync_failed',
                    error=error.message, code=error.code)) from error
        now = utcnow()
        known = {(t.name, t.language): t for t in cls.search([
                    ('active', 'in', [True, False])])}
        to_create, to_write, seen = [], [], set()
        for values in read:
            key = (values['name'], values['language'])
            if key in seen:
                continue
            seen.add(key)
            values.update(synced_at=now, active=True)
            template = known.get(key)
            if template is None:
                to_create.append(values)
            else:
                to_write.extend(([template], values))
        gone = [t for k, t in known.items() if k not in seen and t.active]
        if gone:
            to_write.extend((gone, {'active': False, 'synced_at': now}))
        if to_create:
            cls.create(to_create)
        if to_write:
            cls.write(*to_write)
        return len(seen)

    @staticmethod
    def _catalogue_values(template):
        "The catalogue values of one template of Meta's list."
        components = template.get('components') or []
        body = header = None
        for component in components:
            kind = (component.get('type') or '').upper()
            if kind == 'BODY':
                body = component.get('text')
            elif kind == 'HEADER':
                header = (component.get('format') or '').upper() or None
        numbers = {int(n) for n in PARAMETER.findall(body or '')}
        category = (template.get('category') or '').upper()
        status = (template.get('status') or '').upper()
        return {
            'name': template['name'],
            'language': template.get('language') or 'en',
            'category': category
            if category in dict(CATEGORIES) else None,
            'status': status if status in dict(STATUSES) else None,
            'body': body,
            'header_format': header
            if header in dict(HEADER_FORMATS) else None,
            'parameter_count': max(numbers, default=0),
            'components': json.dumps(components, ensure_ascii=False),
            'provider_id': str(template.get('id') or '') or None,
            }


class SyncStart(ModelView):
    "Sync WhatsApp templates"
    __name__ = 'crm.whatsapp.template.sync.start'
    __string__ = "Sync WhatsApp Templates"


class SyncDone(ModelView):
    "WhatsApp templates synced"
    __name__ = 'crm.whatsapp.template.sync.done'
    __string__ = "WhatsApp Templates Synced"
    count = fields.Integer("Templates", readonly=True,
        help="Those Meta holds for the business account.")
    approved = fields.Integer("Approved", readonly=True,
        help="Those that can be sent.")


class Sync(Wizard):
    "Read the templates of the business account from Meta."
    __name__ = 'crm.whatsapp.template.sync'
    start = StateView('crm.whatsapp.template.sync.start',
        'kraya_crm.whatsapp_template_sync_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Sync", 'sync', 'tryton-ok', default=True),
            ])
    sync = StateTransition()
    done = StateView('crm.whatsapp.template.sync.done',
        'kraya_crm.whatsapp_template_sync_done_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def transition_sync(self):
        Pool().get('crm.whatsapp.template').sync()
        return 'done'

    def default_done(self, fields):
        Template = Pool().get('crm.whatsapp.template')
        return {'count': Template.search_count([]),
            'approved': len(Template.approved())}


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.whatsapp.template|sync',
                "Sync WhatsApp templates"))


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'
    template = fields.Many2One('crm.whatsapp.template', "Template",
        ondelete='SET NULL', readonly=True,
        states={'invisible': ~Eval('template')})
