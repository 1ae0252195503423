"""Reaching a person from a phone: the number to call, the WhatsApp link
and the next step of a lead, a deal or a task, for the field agent's cards.

Each is read for the whole list at once: one search of the open tasks for
the next steps, the numbers from the records already loaded."""
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta

from .task import KINDS


def whatsapp_link(number):
    "https://wa.me/919876543210: opens a chat in the WhatsApp app."
    digits = ''.join(c for c in number or '' if c.isdigit())
    return f'https://wa.me/{digits}' if digits else None


class Reachable:
    "Call and WhatsApp links from the record's numbers (reach_numbers)."
    __slots__ = ()
    call = fields.Function(fields.Char("Call",
            help="Tap to call (on a phone): tel: and the number."),
        'get_reach')
    whatsapp_chat = fields.Function(fields.Char("WhatsApp",
            help="Tap to open a WhatsApp chat (on a phone)."), 'get_reach')

    def reach_numbers(self):
        "(phone, WhatsApp number) to reach the person by, either may be None."
        raise NotImplementedError

    @classmethod
    def get_reach(cls, records, names):
        values = {name: {} for name in names}
        for record in records:
            phone, whatsapp = record.reach_numbers()
            if 'call' in values:
                number = phone or whatsapp
                values['call'][record.id] = (
                    f'tel:{number}' if number else None)
            if 'whatsapp_chat' in values:
                values['whatsapp_chat'][record.id] = whatsapp_link(
                    whatsapp or phone)
        return values


class NextStep:
    "The soonest open task of the record, as a line a rep reads."
    __slots__ = ()
    next_step = fields.Function(fields.Char("Next Step"), 'get_next_step')

    @classmethod
    def get_next_step(cls, records, name):
        Task = Pool().get('crm.task')
        field_name = cls.__name__.split('.')[-1]
        tasks = Task.search([
                (field_name, 'in', [r.id for r in records]),
                ('state', '=', 'open'),
                ], order=[('due', 'ASC NULLS LAST'), ('id', 'ASC')])
        steps = {}
        for task in tasks:
            steps.setdefault(getattr(task, field_name).id, task.step_text)
        return {r.id: steps.get(r.id) or r.step_without_task()
            for r in records}

    def step_without_task(self):
        return gettext('kraya_crm.msg_no_next_step')


class CardsHideUnreadable:
    """Cards (list-form views) lose the fields the user may not read, as
    lists and forms do: Tryton 8.0 strips those from 'tree' and 'form'
    views only, so a field agent's deal cards asked for the value and got
    an access error."""
    __slots__ = ()

    @classmethod
    def parse_view(cls, tree, type, *args, **kwargs):
        if type == 'list-form':
            type = 'form'
        return super().parse_view(tree, type, *args, **kwargs)


class Lead(CardsHideUnreadable, Reachable, NextStep, metaclass=PoolMeta):
    __name__ = 'crm.lead'

    def reach_numbers(self):
        return self.phone, self.whatsapp

    def step_without_task(self):
        # A follow-up date set on the lead is a plan without a task yet.
        if self.next_follow_up:
            Task = Pool().get('crm.task')
            return gettext('kraya_crm.msg_next_follow_up',
                due=Task(due=self.next_follow_up).due_text)
        return super().step_without_task()


class Deal(CardsHideUnreadable, Reachable, NextStep, metaclass=PoolMeta):
    __name__ = 'crm.deal'

    def reach_numbers(self):
        if self.lead and (self.lead.phone or self.lead.whatsapp):
            return self.lead.reach_numbers()
        if self.party:
            return self.party.mobile or self.party.phone, None
        return None, None


class Task(CardsHideUnreadable, Reachable, metaclass=PoolMeta):
    __name__ = 'crm.task'

    def reach_numbers(self):
        for record in [self.lead, self.deal]:
            if record:
                phone, whatsapp = record.reach_numbers()
                if phone or whatsapp:
                    return phone, whatsapp
        return None, None

    @property
    def step_text(self):
        "Call: Ask about the site visit, 14 Mar 16:30 (overdue)."
        if not self.due:
            message = 'kraya_crm.msg_next_step_undated'
        elif self.overdue:
            message = 'kraya_crm.msg_next_step_overdue'
        else:
            message = 'kraya_crm.msg_next_step'
        return gettext(message, kind=dict(KINDS)[self.kind], task=self.name,
            due=self.due_text)
