"""Assignment: who works a new lead. Rules are data (CRM › Configuration ›
Assignment Rules), tried in order; the first whose conditions the lead
meets and that has someone to give it to assigns it, to a member of its
team, by round robin, to whoever has the fewest open leads, or to one
fixed person. Users on leave (res.user.crm_away_until) get nothing.

Leads are assigned in the queue, never in the request that captured them:
a webhook answers at once and the worker hands the lead out seconds
later. A lead its owner did not answer within the rule's working hours is
handed on, by a cron that selects by the indexed reassign_at."""
import datetime as dt
from dataclasses import dataclass
from sql import Null
from sql.aggregate import Count

from trytond import backend
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, fields, sequence_ordered)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, PYSONDecoder
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import AssignmentRuleError
from .message import utcnow

QUEUE_NAME = 'crm_assignment'
LANGUAGES = [
    ('en', "English"),
    ('hi', "Hindi"),
    ('mr', "Marathi"),
    ('gu', "Gujarati"),
    ('ta', "Tamil"),
    ('te', "Telugu"),
    ('kn', "Kannada"),
    ('bn', "Bengali"),
    ]
METHODS = [
    ('round_robin', "Round robin"),
    ('fewest_open', "Fewest open leads"),
    ('fixed', "Fixed user"),
    ]
# A lead still to be worked counts against its owner's load.
OPEN_STATUSES = ('new', 'contacted', 'qualified')
WRITE_SLICE = 200


@dataclass(frozen=True)
class LeadFacts:
    "What the rules look at in a lead, read in one query for many leads."
    owner: int
    source: int
    subdivision: int
    city: str
    language: str


def local_today(calendar, now):
    "Today in the calendar's zone: leave ends at local midnight."
    return calendar.clock.local(now).date()


class AssignmentRule(
        sequence_ordered(), DeactivableMixin, ModelSQL, ModelView):
    "Who gets the leads that meet its conditions."
    __name__ = 'crm.assignment.rule'
    __string__ = "Assignment Rule"
    name = fields.Char("Name", required=True,
        help="Shown on the lead's timeline: \"Assigned to ... (rule: NAME, "
        "round robin)\".")
    sources = fields.Many2Many('crm.assignment.rule-crm.source', 'rule',
        'source', "Sources", help="Empty for leads of any source.")
    subdivisions = fields.Many2Many(
        'crm.assignment.rule-country.subdivision', 'rule', 'subdivision',
        "States", domain=[('country.code', '=', 'IN'), ('parent', '=', None)],
        help="The territory by state; empty for any state.")
    cities = fields.Char("Cities",
        help="The territory by city, separated by commas (Pune, Pimpri); "
        "empty for any city.")
    languages = fields.MultiSelection(LANGUAGES, "Languages",
        help="Empty for leads of any language.")
    domain = fields.Char("Other Conditions",
        help="A domain the lead must match, as in a record rule, e.g. "
        "[('campaign', '=', 'Powai Launch')].")
    team = fields.Many2One('crm.team', "Team", required=True,
        ondelete='CASCADE', help="Whose members get the leads.")
    method = fields.Selection(METHODS, "How", required=True, sort=False)
    user = fields.Many2One('res.user', "User",
        states={
            'invisible': Eval('method') != 'fixed',
            'required': Eval('method') == 'fixed',
            })
    only_when_open = fields.Boolean("Only When Open",
        help="Assign only during working hours; out of hours the lead "
        "waits for the next opening. Otherwise it is assigned at once and "
        "its first-response clock waits for the opening.")
    reassign_hours = fields.Integer("Reassign After (Working Hours)",
        domain=['OR', ('reassign_hours', '=', None),
            ('reassign_hours', '>', 0)],
        help="Hand the lead to the next person when its owner has not "
        "answered it within these working hours; empty: never.")
    last_user = fields.Many2One('res.user', "Last Given To", readonly=True,
        ondelete='SET NULL',
        states={'invisible': Eval('method') != 'round_robin'},
        help="Round robin goes on with the member after this one.")

    @classmethod
    def default_method(cls):
        return 'round_robin'

    @classmethod
    def default_only_when_open(cls):
        return False

    @classmethod
    def validate_fields(cls, rules, field_names):
        super().validate_fields(rules, field_names)
        if field_names and 'domain' not in field_names:
            return
        for rule in rules:
            try:
                domain = rule.parsed_domain()
                if domain:
                    Pool().get('crm.lead').search(domain, limit=0)
            except Exception as exception:
                raise AssignmentRuleError(gettext(
                        'kraya_crm.msg_assignment_rule_domain',
                        rule=rule.rec_name, error=exception)) from exception

    def parsed_domain(self):
        if not self.domain:
            return []
        return PYSONDecoder({}).decode(self.domain)

    @property
    def method_text(self):
        return dict(METHODS)[self.method].lower()

    @property
    def city_names(self):
        return {c.strip().casefold()
            for c in (self.cities or '').split(',') if c.strip()}

    def matches(self, lead):
        "Whether the lead (its LeadFacts) meets the rule's conditions."
        if self.sources and lead.source not in {s.id for s in self.sources}:
            return False
        if self.subdivisions and lead.subdivision not in {
                s.id for s in self.subdivisions}:
            return False
        if self.city_names and (
                (lead.city or '').strip().casefold() not in self.city_names):
            return False
        if self.languages and lead.language not in self.languages:
            return False
        return True

    def candidates(self, present):
        "The members who may get a lead now, in a stable order."
        if self.method == 'fixed':
            users = [self.user] if self.user else []
        else:
            users = sorted(self.team.members, key=lambda u: u.id)
        return [u for u in users if u.id in present]

    @classmethod
    def apply(cls, leads, reassign=False, now=None):
        """Give each lead to someone by the first rule that can; returns
        {lead id: (user, rule)} of those assigned. With reassign, a lead
        does not go back to its current owner. A lead that only an
        'only when open' rule would take, out of hours, is looked at again
        at the next opening."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        Calendar = pool.get('crm.business_calendar')
        now = now or utcnow()
        rules = cls.search([], order=[('sequence', 'ASC NULLS LAST'),
                ('id', 'ASC')])
        ids = list(dict.fromkeys(int(l) for l in leads))
        if not rules or not ids:
            return {}
        calendar = Calendar.get_default()
        open_now = calendar.is_open(now)
        present = cls._present_users(rules, local_today(calendar, now))
        in_domain = cls._leads_in_domains(rules, ids)
        pointers = {r.id: r.last_user.id if r.last_user else None
            for r in rules if r.method == 'round_robin'}
        load = cls._open_leads(rules, present)
        facts = Lead.assignment_facts(ids)
        assigned, waiting = {}, []
        for lead_id in ids:
            lead = facts[lead_id]
            current = lead.owner if reassign else None
            waits = False
            for rule in rules:
                if not rule.matches(lead) or (
                        rule.id in in_domain
                        and lead_id not in in_domain[rule.id]):
                    continue
                users = [u for u in rule.candidates(present)
                    if u.id != current]
                if not users:
                    continue
                if rule.only_when_open and not open_now:
                    waits = True
                    continue
                user = rule._choose(users, pointers, load)
                load[user.id] = load.get(user.id, 0) + 1
                assigned[lead_id] = (user, rule)
                break
            else:
                if waits:
                    waiting.append(lead_id)
        cls._write_assignments(ids, assigned, waiting, calendar, now)
        cls._write_pointers(rules, pointers)
        return assigned

    def _choose(self, users, pointers, load):
        if self.method == 'fewest_open':
            # Ties go to the longest-standing member, for a stable answer.
            return min(users, key=lambda u: (load.get(u.id, 0), u.id))
        if self.method == 'round_robin':
            last = pointers.get(self.id)
            after = [u for u in users if last is None or u.id > last]
            user = after[0] if after else users[0]
            pointers[self.id] = user.id
            return user
        return users[0]

    @classmethod
    def _present_users(cls, rules, today):
        "The ids of the active users of the rules who are not on leave."
        User = Pool().get('res.user')
        ids = set()
        for rule in rules:
            ids.update(u.id for u in rule.team.members)
            if rule.user:
                ids.add(rule.user.id)
        users = User.browse(list(ids))
        return {u.id for u in users if u.active
            and not (u.crm_away_until and u.crm_away_until >= today)}

    @classmethod
    def _leads_in_domains(cls, rules, ids):
        "{rule id: ids of the leads matching its domain}, one query a rule."
        Lead = Pool().get('crm.lead')
        found = {}
        for rule in rules:
            domain = rule.parsed_domain()
            if not domain:
                continue
            found[rule.id] = set()
            for sub_ids in grouped_slice(ids, 1000):
                found[rule.id].update(l.id for l in Lead.search([
                            ('id', 'in', list(sub_ids)), domain]))
        return found

    @classmethod
    def _open_leads(cls, rules, present):
        """{user id: number of open leads} of the users of the rules that
        hand out the fewest open leads: one grouped query on the index of
        owner and status."""
        Lead = Pool().get('crm.lead')
        ids = set()
        for rule in rules:
            if rule.method == 'fewest_open':
                ids.update(u.id for u in rule.candidates(present))
        if not ids:
            return {}
        table = Lead.__table__()
        cursor = Transaction().connection.cursor()
        where = reduce_ids(table.owner, list(ids)) & table.status.in_(
            list(OPEN_STATUSES))
        if 'active' in Lead._fields:
            where &= table.active
        cursor.execute(*table.select(table.owner, Count(table.id),
                where=where, group_by=[table.owner]))
        return dict(cursor)

    @classmethod
    def _write_assignments(cls, ids, assigned, waiting, calendar, now):
        """One write per (user, rule), of records browsed per write: a
        record browsed among 10,000 reads its relations for all 10,000."""
        Lead = Pool().get('crm.lead')
        groups = {}
        for lead_id in ids:
            if lead_id in assigned:
                user, rule = assigned[lead_id]
                groups.setdefault((user.id, rule), []).append(lead_id)
        to_write = []
        for (user_id, rule), group in groups.items():
            reassign_at = None
            if rule.reassign_hours:
                reassign_at = calendar.add_working(
                    now, dt.timedelta(hours=rule.reassign_hours))
            to_write.append((group, {
                        'owner': user_id, 'team': rule.team.id,
                        'assignment_rule': rule.id, 'assigned_at': now,
                        'reassign_at': reassign_at,
                        }))
        if waiting:
            to_write.append((waiting, {
                        'reassign_at': calendar.next_opening(now)}))
        with without_check_access():
            for group, values in to_write:
                # A write per slice: Tryton checks n² ids to browse n.
                for sub_ids in grouped_slice(group, WRITE_SLICE):
                    Lead.write(Lead.browse(sub_ids), values)

    @classmethod
    def _write_pointers(cls, rules, pointers):
        to_write = []
        for rule in rules:
            if rule.id in pointers and pointers[rule.id] != (
                    rule.last_user.id if rule.last_user else None):
                to_write.extend(([rule], {'last_user': pointers[rule.id]}))
        if to_write:
            with without_check_access():
                cls.write(*to_write)


class RuleSource(ModelSQL):
    "The sources of an assignment rule."
    __name__ = 'crm.assignment.rule-crm.source'
    __string__ = "Assignment Rule Source"
    rule = fields.Many2One('crm.assignment.rule', "Rule", required=True,
        ondelete='CASCADE')
    source = fields.Many2One('crm.source', "Source", required=True,
        ondelete='CASCADE')


class RuleSubdivision(ModelSQL):
    "The states of an assignment rule."
    __name__ = 'crm.assignment.rule-country.subdivision'
    __string__ = "Assignment Rule State"
    rule = fields.Many2One('crm.assignment.rule', "Rule", required=True,
        ondelete='CASCADE')
    subdivision = fields.Many2One('country.subdivision', "State",
        required=True, ondelete='CASCADE')


class User(metaclass=PoolMeta):
    __name__ = 'res.user'
    crm_away_until = fields.Date("Away Until",
        help="On leave until this day (included): no new leads are "
        "assigned to you meanwhile.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._preferences_fields.append('crm_away_until')


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    language = fields.Selection([(None, "")] + LANGUAGES, "Language",
        help="The language the lead prefers: rules may give it to someone "
        "who speaks it.")
    assignment_rule = fields.Many2One('crm.assignment.rule',
        "Assigned by Rule", readonly=True, ondelete='SET NULL')
    assigned_at = fields.Timestamp("Assigned At", readonly=True)
    reassign_at = fields.Timestamp("Reassign At", readonly=True,
        help="When the rules look at the lead again: its owner has not "
        "answered it by then, or it waits for the opening.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # The reassignment cron's only way in.
        cls._sql_indexes.add(Index(t, (t.reassign_at, Index.Range()),
                where=t.reassign_at != Null))

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'write' and 'owner' in values:
            # Given by hand: no rule made it, and no rule takes it back.
            values.setdefault('assignment_rule', None)
            values.setdefault('reassign_at', None)
            values.setdefault('assigned_at', utcnow())
        return values

    @classmethod
    def assignment_facts(cls, ids):
        "{id: LeadFacts} of the leads, by SQL in slices."
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        facts = {}
        for sub_ids in grouped_slice(ids, 1000):
            cursor.execute(*table.select(table.id, table.owner, table.source,
                    table.subdivision, table.city, table.language,
                    where=reduce_ids(table.id, list(sub_ids))))
            for lead_id, *values in cursor:
                facts[lead_id] = LeadFacts(*values)
        return facts

    @classmethod
    def assign(cls, leads, reassign=False):
        """Assign the leads by the assignment rules; returns {lead id:
        (user, rule)} of those assigned. With reassign, no lead goes back
        to its current owner."""
        Rule = Pool().get('crm.assignment.rule')
        return Rule.apply(leads, reassign=reassign)

    @classmethod
    def queue_assignment(cls, leads):
        "Assign new leads in the worker, after the capture is committed."
        Rule = Pool().get('crm.assignment.rule')
        leads = list(leads)
        if not leads or not Rule.search([], limit=1):
            return
        with Transaction().set_context(queue_name=QUEUE_NAME):
            cls.__queue__.assign_captured(
                cls.browse([int(l) for l in leads]))

    @classmethod
    def assign_captured(cls, leads):
        "The queue's task: assign those still without an owner."
        with without_check_access():
            # Archived meanwhile (merged, or their data erased on request):
            # nobody is to work them.
            leads = cls.search([('id', 'in', [l.id for l in leads])])
            if not leads:
                return
            # Waits for a manager giving one of them away meanwhile, whose
            # choice stands (PostgreSQL; SQLite has one writer anyway).
            cls.lock(leads)
            ids = [l.id for l in leads]
            facts = cls.assignment_facts(ids)
            cls.assign([i for i, f in facts.items() if f.owner is None])
            # SQLite locks no row and takes its write lock at the first
            # write: an erasure may have archived one of them after the
            # search. Seen now, it undoes this try; the worker runs the
            # task again (as on a write conflict), and the search skips it.
            if cls.search_count([('id', 'in', ids)]) < len(ids):
                raise backend.DatabaseOperationalError(
                    "a lead to assign was archived meanwhile")

    @classmethod
    def capture(cls, vlist, source=None):
        results = super().capture(vlist, source=source)
        cls.queue_assignment([l for l, created in results if created])
        return results

    @classmethod
    def reassign_due(cls, batch_size=500):
        """The cron: leads whose owner did not answer them in time go to
        the next person, and those that waited for the opening are
        assigned; through the index on reassign_at."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = utcnow()
        with without_check_access():
            while True:
                cursor.execute(*table.select(table.id,
                        where=table.reassign_at <= now,
                        order_by=[table.reassign_at.asc], limit=batch_size))
                leads = cls.browse([i for i, in cursor])
                if not leads:
                    return
                answered = [l for l in leads if l.first_response_at]
                waiting = [l for l in leads if not l.first_response_at]
                assigned = cls.assign(waiting, reassign=True)
                # Answered, or nobody else to give it to: done with it.
                done = answered + [l for l in waiting
                    if l.id not in assigned]
                if done:
                    cls.write(done, {'reassign_at': None})
                # Every lead taken now has a later reassign_at or none.
                if len(leads) < batch_size:
                    return

    @classmethod
    def record_first_responses(cls, answers):
        super().record_first_responses(answers)
        # Touched: the rules leave the lead with whoever answered it.
        leads = [m.lead for m in answers if m.lead.reassign_at]
        if leads:
            with without_check_access():
                cls.write(list({l.id: l for l in leads}.values()),
                    {'reassign_at': None})

    @classmethod
    def _assignment_text(cls, lead):
        if lead.owner and lead.assignment_rule:
            return gettext('kraya_crm.msg_assigned_by_rule',
                owner=lead.owner.rec_name, rule=lead.assignment_rule.name,
                method=lead.assignment_rule.method_text)
        return super()._assignment_text(lead)


class ReassignStart(ModelView):
    "Reassign Leads"
    __name__ = 'crm.lead.reassign.start'
    __string__ = "Reassign Leads"
    how = fields.Selection([
            ('rules', "By the assignment rules"),
            ('user', "To one person"),
            ], "How", required=True)
    user = fields.Many2One('res.user', "To",
        states={
            'invisible': Eval('how') != 'user',
            'required': Eval('how') == 'user',
            })
    leads = fields.Integer("Leads", readonly=True)

    @classmethod
    def default_how(cls):
        return 'rules'


class Reassign(Wizard):
    "Reassign Leads"
    __name__ = 'crm.lead.reassign'
    start = StateView('crm.lead.reassign.start',
        'kraya_crm.lead_reassign_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Reassign", 'reassign', 'tryton-ok', default=True),
            ])
    reassign = StateTransition()

    def default_start(self, fields):
        return {'leads': len(self.records)}

    def transition_reassign(self):
        Lead = Pool().get('crm.lead')
        if self.start.how == 'user':
            Lead.write(list(self.records), {'owner': self.start.user.id})
        else:
            Lead.assign(list(self.records), reassign=True)
        return 'end'


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.lead|reassign_due', "Reassign leads nobody answered"))

