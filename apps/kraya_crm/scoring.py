"""Explainable lead scoring: rules as data (CRM › Configuration › Scoring),
a score of 0 to 100 made of the points of each rule, and the breakdown
stored on the lead ("why is this lead 84?").

- Attribute rules are a domain on the lead plus points (the source is
  Referral: +20).
- Behaviour rules give points for an event we recorded (crm.lead.
  score_event): the latest event of the rule's kind counts, halved every
  `half_life_days`. A silence counts until the lead is heard from again.
- Each line is rounded to whole points, so that the lines add up to the
  score (before it is clamped to 0-100).

Leads are rescored in bulk, only those an event touched: their creation
(captures and the import's bulk path alike, through on_modification), an
inbound message, a stage move of their deal, a write of a field a rule
reads, and the daily tick, which finds the leads whose decayed points
change through the index on `score_decays_at`, never by reading all."""
import datetime as dt
import json
import math
import re
from collections import defaultdict
from typing import NamedTuple

from sql import Null
from sql.aggregate import Min

from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, fields, sequence_ordered)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from .bulk import BulkWrite
from .consent import is_stop_request
from .exceptions import ScoringRuleError
from .indexes import CoveredIndexes
from .message import utcnow
from .sequence import local_timezone

EVENT_KINDS = [
    ('replied_whatsapp', "Replied on WhatsApp"),
    ('email_engaged', "Engaged with an email"),
    ('asked_price', "Asked for a price"),
    ('visit_booked', "Booked a visit"),
    ('silent_7_days', "No reply for 7 days"),
    ]
BANDS = [('hot', "Hot"), ('warm', "Warm"), ('cold', "Cold")]
SILENCE = dt.timedelta(days=7)
# Hearing from the lead ends a silence and restarts its clock.
HEARD_FROM = {'replied_whatsapp', 'email_engaged', 'asked_price'}
# Kinds of task (crm.task.kind, when tasks have one) that are a visit.
VISIT_TASK_TYPES = {'meeting', 'site_visit', 'visit'}
# The fields the score itself writes: never a reason to rescore.
SCORE_FIELDS = {'score', 'band', 'score_decays_at', 'silent_check_at'}
SLICE = 1000
WRITE_SLICE = 100
in_ids = fields.SQL_OPERATORS['in']
DEFAULT_PRICE_KEYWORDS = (
    "price, prices, price list, rate, rates, cost, costing, how much, "
    "kitna, kitne, kitni, kya rate, kya price, rate kya, daam, dam kya, "
    "bhav, keemat, kimat, कीमत, क़ीमत, दाम, रेट, कितना, कितने, भाव")


class ScoreEvent(NamedTuple):
    "Something a lead did that behaviour rules give points for."
    lead: object
    kind: str
    at: dt.datetime
    detail: str = None


class ScoreLineValues(NamedTuple):
    rule: int
    points: int
    reason: str


def keyword_list(text):
    "The keywords of a comma- or line-separated list, lower-cased."
    return [k.strip().lower() for k in re.split(r'[,\n]', text or '')
        if k.strip()]


def keyword_pattern(keywords):
    """A regular expression finding any keyword as a word of its own (so
    that "rate" is not found in "separate"). Devanagari's vowel signs are
    not word characters to Python, so words in it are matched as they
    are written, without looking at their edges."""
    parts = []
    for keyword in keywords:
        escaped = re.escape(keyword)
        if keyword.isascii():
            parts.append(rf'(?<![a-z0-9]){escaped}(?![a-z0-9])')
        else:
            parts.append(escaped)
    return re.compile('|'.join(parts)) if parts else None


def asks_price(text, pattern):
    "Whether a message asks for a price."
    return bool(text and pattern and pattern.search(text.lower()))


def decayed(points, at, half_life_days, now):
    """The whole points an event of `points` at `at` is worth at `now`,
    halved every half_life_days, and when that next changes (None: never).
    A value of r whole points drops to r - 1 once it is below r - 0.5."""
    if not half_life_days or not points:
        return points, None
    sign = 1 if points > 0 else -1
    age = max((now - at).total_seconds(), 0) / 86400
    value = abs(points) * 0.5 ** (age / half_life_days)
    whole = math.floor(value + 0.5)
    if not whole:
        return 0, None
    days = half_life_days * math.log2(abs(points) / (whole - 0.5))
    # Never due again before a minute from now: the tick then moves on.
    changes_at = max(at + dt.timedelta(days=days),
        now + dt.timedelta(minutes=1))
    return sign * whole, changes_at


def band_of(score, hot_from, warm_from):
    if score >= hot_from:
        return 'hot'
    if score >= warm_from:
        return 'warm'
    return 'cold'


def local_text(at):
    "A time as a rep reads it: 1 Dec 23:20, in the site's timezone."
    local = at.replace(tzinfo=dt.timezone.utc).astimezone(local_timezone())
    return f'{local.day} {local:%b %H:%M}'


class Configuration(metaclass=PoolMeta):
    __name__ = 'crm.configuration'
    band_hot_from = fields.Integer("Hot From", required=True,
        domain=[('band_hot_from', '>', Eval('band_warm_from', 0)),
            ('band_hot_from', '<=', 100)],
        help="A lead scoring this or more is hot.")
    band_warm_from = fields.Integer("Warm From", required=True,
        domain=[('band_warm_from', '>', 0)],
        help="A lead scoring this or more (and less than hot) is warm; "
        "below, cold.")
    price_keywords = fields.Text("Price Keywords",
        help="Words of a message that ask for a price (comma separated), "
        "in English, Hindi and Hinglish.")
    win_model_min_closed = fields.Integer("Closed Deals Needed",
        required=True, domain=[('win_model_min_closed', '>=', 10)],
        help="The predictive score learns only from at least this many "
        "won and lost deals.")

    @classmethod
    def default_band_hot_from(cls):
        return 80

    @classmethod
    def default_band_warm_from(cls):
        return 40

    @classmethod
    def default_price_keywords(cls):
        return DEFAULT_PRICE_KEYWORDS

    @classmethod
    def default_win_model_min_closed(cls):
        return 30

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        super().on_modification(mode, records, field_names=field_names)
        Pool().get('crm.scoring.rule')._settings_cache.clear()


class ScoringRule(
        DeactivableMixin, sequence_ordered(), ModelSQL, ModelView):
    "A rule that gives a lead points: for what it is or what it did."
    __name__ = 'crm.scoring.rule'
    __string__ = "Scoring Rule"
    name = fields.Char("Name", required=True, translate=True,
        help="What the lead's breakdown says, e.g. \"Came by referral\".")
    kind = fields.Selection([
            ('attribute', "What the lead is"),
            ('behaviour', "What the lead did"),
            ], "Kind", required=True, sort=False)
    domain = fields.Char("Leads Matching",
        states={
            'invisible': Eval('kind') != 'attribute',
            'required': Eval('kind') == 'attribute',
            },
        help="A domain on the lead, e.g. [[\"source.code\", \"=\", "
        "\"referral\"]] or [[\"budget\", \">=\", 1000000]].")
    event = fields.Selection([(None, "")] + EVENT_KINDS, "Event",
        states={
            'invisible': Eval('kind') != 'behaviour',
            'required': Eval('kind') == 'behaviour',
            })
    points = fields.Integer("Points", required=True,
        domain=[('points', '>=', -100), ('points', '<=', 100)],
        help="Negative points take away from the score.")
    half_life_days = fields.Integer("Half-life (days)",
        domain=['OR', ('half_life_days', '=', None),
            ('half_life_days', '>', 0)],
        states={'invisible': Eval('kind') != 'behaviour'},
        help="The points of an event halve every so many days; empty: "
        "they keep their worth.")

    _settings_cache = Cache('crm.scoring.rule.settings', context=False)

    @classmethod
    def default_kind(cls):
        return 'attribute'

    @property
    def lead_domain(self):
        return json.loads(self.domain) if self.domain else []

    @classmethod
    def validate(cls, rules):
        pool = Pool()
        Lead = pool.get('crm.lead')
        super().validate(rules)
        for rule in rules:
            if rule.kind != 'attribute':
                continue
            try:
                Lead.search([('id', '=', -1), rule.lead_domain])
            except Exception as exception:
                raise ScoringRuleError(gettext(
                        'kraya_crm.msg_scoring_rule_invalid_domain',
                        rule=rule.name, error=exception)) from exception
        events = defaultdict(list)
        for rule in cls.search([('kind', '=', 'behaviour')]):
            events[rule.event].append(rule)
        for event, same in events.items():
            if len(same) > 1:
                raise ScoringRuleError(gettext(
                        'kraya_crm.msg_scoring_rule_event_twice',
                        event=dict(EVENT_KINDS)[event],
                        rules=', '.join(r.name for r in same)))

    @classmethod
    def on_modification(cls, mode, rules, field_names=None):
        super().on_modification(mode, rules, field_names=field_names)
        cls._settings_cache.clear()

    @classmethod
    def settings(cls):
        """The active rules and the scoring settings, read once per change
        of them: every lead write asks which fields the rules read."""
        settings = cls._settings_cache.get(None)
        if settings is None:
            Configuration = Pool().get('crm.configuration')
            config = Configuration(1)
            with without_check_access():
                rules = cls.search([])
            settings = {
                'attribute': [(r.id, r.name, r.domain, r.points)
                    for r in rules if r.kind == 'attribute'],
                'behaviour': {r.event: (r.id, r.name, r.points,
                        r.half_life_days)
                    for r in rules if r.kind == 'behaviour'},
                'fields': sorted({field for r in rules
                        if r.kind == 'attribute'
                        for field in domain_fields(r.lead_domain)}),
                'hot_from': config.band_hot_from or 80,
                'warm_from': config.band_warm_from or 40,
                'keywords': keyword_list(config.price_keywords
                    if config.price_keywords is not None
                    else DEFAULT_PRICE_KEYWORDS),
                }
            cls._settings_cache.set(None, settings)
        return settings


def domain_fields(domain):
    "The lead fields a domain reads (the first name of each clause)."
    names = set()
    for clause in domain:
        if isinstance(clause, str):
            continue
        if clause and isinstance(clause[0], str) and len(clause) >= 3:
            names.add(clause[0].split('.')[0])
        elif isinstance(clause, list):
            names |= domain_fields(clause)
    return names


class LeadScoreEvent(BulkWrite, CoveredIndexes, ModelSQL, ModelView):
    "Something a lead did that scores: a reply, a price asked, a visit."
    __name__ = 'crm.lead.score_event'
    __string__ = "Score Event"
    lead = fields.Many2One('crm.lead', "Lead", required=True,
        ondelete='CASCADE', readonly=True)
    kind = fields.Selection(EVENT_KINDS, "Event", required=True,
        readonly=True)
    at = fields.Timestamp("At", required=True, readonly=True)
    points = fields.Integer("Points When Recorded", readonly=True,
        help="The rule's points then; a later change of the rule counts "
        "for later events.")
    detail = fields.Char("Detail", readonly=True,
        help="What happened, e.g. the message that asked for a price.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.lead, Index.Range()), (t.at, Index.Range())))
        cls._order = [('at', 'DESC'), ('id', 'DESC')]


class LeadScoreLine(BulkWrite, ModelSQL, ModelView):
    "One rule's part of a lead's score."
    __name__ = 'crm.lead.score_line'
    __string__ = "Score Line"
    lead = fields.Many2One('crm.lead', "Lead", required=True,
        ondelete='CASCADE', readonly=True)
    rule = fields.Many2One('crm.scoring.rule', "Rule", readonly=True,
        ondelete='SET NULL')
    points = fields.Integer("Points", readonly=True)
    reason = fields.Char("Why", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.lead, Index.Range())))
        cls._order = [('points', 'DESC'), ('id', 'ASC')]


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    budget = fields.Numeric("Budget (₹)", digits=(16, 0),
        domain=['OR', ('budget', '=', None), ('budget', '>=', 0)],
        help="What the lead means to spend, in rupees.")
    band = fields.Selection([(None, "")] + BANDS, "Band", readonly=True,
        sort=False, help="Hot, warm or cold, from the score and the "
        "thresholds of the CRM settings.")
    score_lines = fields.One2Many('crm.lead.score_line', 'lead',
        "Why This Score", readonly=True)
    score_events = fields.One2Many('crm.lead.score_event', 'lead',
        "Scoring Events", readonly=True)
    score_decays_at = fields.Timestamp("Score Changes At", readonly=True,
        help="When the decay of its behaviour points next changes the "
        "score; the daily tick rescores the leads due.")
    silent_check_at = fields.Timestamp("Silent From", readonly=True,
        help="Not heard from by then, the lead counts as silent.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.score.readonly = True
        cls.score.help = ("0 to 100, the sum of the points of the scoring "
            "rules: see Why This Score.")
        t = cls.__table__()
        cls._sql_indexes.update({
                # The lists of a rep's hot leads.
                Index(t, (t.owner, Index.Range()), (t.band, Index.Equality(
                            cardinality='low'))),
                Index(t, (t.score_decays_at, Index.Range()),
                    where=t.score_decays_at != Null),
                Index(t, (t.silent_check_at, Index.Range()),
                    where=t.silent_check_at != Null),
                })

    @classmethod
    def default_band(cls):
        return 'cold'

    @classmethod
    def default_silent_check_at(cls):
        return utcnow() + SILENCE

    @classmethod
    def on_modification(cls, mode, leads, field_names=None):
        super().on_modification(mode, leads, field_names=field_names)
        if mode == 'create':
            cls.rescore(leads)
        elif mode == 'write' and field_names:
            Rule = Pool().get('crm.scoring.rule')
            if (set(field_names) - SCORE_FIELDS) & set(
                    Rule.settings()['fields']):
                cls.rescore(leads)

    @classmethod
    def rescore(cls, leads, now=None):
        """Recompute the score, band and breakdown of these leads (and of
        no other), in slices: a query per attribute rule and one for the
        events, then only the leads whose score or breakdown changed are
        written."""
        Rule = Pool().get('crm.scoring.rule')
        ids = sorted({l.id for l in leads if l.id is not None and l.id >= 0})
        if not ids:
            return
        now = now or utcnow()
        settings = Rule.settings()
        with without_check_access(), \
                Transaction().set_context(active_test=False):
            for sub_ids in grouped_slice(ids, SLICE):
                cls._rescore_slice(list(sub_ids), settings, now)

    @classmethod
    def score_lines_of(cls, ids, settings, now):
        """{lead id: [ScoreLineValues]} and {lead id: when a line next
        decays}: the breakdown of these leads' scores at `now`."""
        pool = Pool()
        Event = pool.get('crm.lead.score_event')
        lines = defaultdict(list)
        decays = {}
        cursor = Transaction().connection.cursor()
        for rule_id, name, domain, points in settings['attribute']:
            # The ids alone: browsing a thousand records costs Tryton a
            # million checks.
            cursor.execute(*cls.search([
                        ('id', 'in', ids), json.loads(domain)],
                    order=[], query=True))
            for lead_id, in cursor:
                lines[lead_id].append(ScoreLineValues(rule_id, points, name))
        behaviour = settings['behaviour']
        if not behaviour:
            return lines, decays
        event = Event.__table__()
        cursor.execute(*event.select(
                event.lead, event.kind, event.at, event.points,
                event.detail,
                where=in_ids(event.lead, ids)
                & event.kind.in_(list(behaviour)),
                order_by=[event.lead, event.at.asc, event.id.asc]))
        latest = defaultdict(dict)
        for lead_id, kind, at, points, detail in cursor:
            latest[lead_id][kind] = (at, points, detail)
        for lead_id, events in latest.items():
            heard = max((events[k][0] for k in HEARD_FROM if k in events),
                default=None)
            for kind, (at, recorded, detail) in events.items():
                rule_id, name, points, half_life = behaviour[kind]
                if kind == 'silent_7_days' and heard and heard > at:
                    continue
                if recorded is not None:
                    points = recorded
                worth, changes_at = decayed(points, at, half_life, now)
                if changes_at:
                    decays[lead_id] = min(
                        changes_at, decays.get(lead_id, changes_at))
                if worth:
                    reason = gettext('kraya_crm.msg_score_reason_event',
                        rule=name, at=local_text(at))
                    if detail:
                        reason += f': {detail}'
                    lines[lead_id].append(ScoreLineValues(
                            rule_id, worth, reason[:200]))
        return lines, decays

    @classmethod
    def _rescore_slice(cls, ids, settings, now):
        pool = Pool()
        Line = pool.get('crm.lead.score_line')
        lines, decays = cls.score_lines_of(ids, settings, now)
        table, line = cls.__table__(), Line.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id, table.score, table.band,
                table.score_decays_at, where=in_ids(table.id, ids)))
        current = {i: (s, b, d) for i, s, b, d in cursor}
        cursor.execute(*line.select(line.lead, line.rule, line.points,
                line.reason, where=in_ids(line.lead, ids),
                order_by=[line.lead, line.id]))
        stored = defaultdict(list)
        for lead_id, *values in cursor:
            stored[lead_id].append(ScoreLineValues(*values))
        fills, changed_lines = {}, []
        for lead_id in ids:
            if lead_id not in current:
                continue
            mine = lines.get(lead_id, [])
            score = max(0, min(100, sum(l.points for l in mine)))
            values = (score, band_of(
                    score, settings['hot_from'], settings['warm_from']),
                decays.get(lead_id))
            if values != current[lead_id]:
                fills[lead_id] = dict(zip(
                        ['score', 'band', 'score_decays_at'], values))
            if mine != stored.get(lead_id, []):
                changed_lines.append(lead_id)
        if changed_lines:
            # The breakdown is the score's own record: replaced whole.
            cursor.execute(*line.delete(
                    where=in_ids(line.lead, changed_lines)))
            new_lines = [{
                    'lead': lead_id, 'rule': l.rule, 'points': l.points,
                    'reason': l.reason}
                for lead_id in changed_lines for l in lines.get(lead_id, [])]
            if new_lines:
                Line.create_in_bulk(new_lines)
        # Tryton's write browses its records together, at a cost that grows
        # with their square: a hundred at a time.
        for sub_ids in grouped_slice(list(fills), WRITE_SLICE):
            cls.fill_in_bulk({i: fills[i] for i in sub_ids})

    @classmethod
    def record_score_events(cls, events):
        """Record what leads did ([(lead, kind, at)] or ScoreEvent with a
        detail) with the points of their rule now, restart the silence
        clock of those heard from, and rescore them."""
        pool = Pool()
        Event = pool.get('crm.lead.score_event')
        Rule = pool.get('crm.scoring.rule')
        events = [ScoreEvent(*e) for e in events]
        if not events:
            return
        behaviour = Rule.settings()['behaviour']
        heard = {}
        for event in events:
            if event.kind in HEARD_FROM:
                heard[event.lead.id] = max(
                    event.at, heard.get(event.lead.id, event.at))
        with without_check_access():
            Event.create_in_bulk([{
                        'lead': e.lead.id, 'kind': e.kind, 'at': e.at,
                        'points': behaviour[e.kind][2]
                        if e.kind in behaviour else None,
                        'detail': (e.detail or '')[:120] or None}
                    for e in events])
            if heard:
                cls.fill_in_bulk({lead_id: {'silent_check_at': at + SILENCE}
                        for lead_id, at in heard.items()})
        cls.rescore([e.lead for e in events])

    @classmethod
    def silent_due_query(cls, now, limit=SLICE):
        "The leads whose silence has come, through its partial index."
        table = cls.__table__()
        return table.select(table.id, table.silent_check_at, table.status,
            where=table.silent_check_at <= now,
            order_by=[table.silent_check_at.asc], limit=limit)

    @classmethod
    def decay_due_query(cls, now, limit=SLICE):
        "The leads whose decayed points have changed, through its index."
        table = cls.__table__()
        return table.select(table.id, where=table.score_decays_at <= now,
            order_by=[table.score_decays_at.asc], limit=limit)

    @classmethod
    def score_tick(cls, now=None):
        """The daily tick: leads not heard from for 7 days get their
        silence, and leads whose decayed points changed are rescored, both
        found through their partial indexes (the due ones only)."""
        now = now or utcnow()
        cursor = Transaction().connection.cursor()
        while True:
            cursor.execute(*cls.silent_due_query(now))
            rows = cursor.fetchall()
            if not rows:
                break
            leads = cls.browse([i for i, _, _ in rows])
            with without_check_access():
                cls.write(leads, {'silent_check_at': None})
            # Converted and unqualified leads are no longer worked.
            cls.record_score_events([(lead, 'silent_7_days', at)
                    for lead, (_, at, status) in zip(leads, rows)
                    if status not in {'converted', 'unqualified'}])
        while True:
            cursor.execute(*cls.decay_due_query(now))
            ids = [i for i, in cursor]
            if not ids:
                break
            cls.rescore(cls.browse(ids), now=now)

    @classmethod
    def _move_related(cls, survivor, others):
        "A merged lead's events are the kept lead's: its score counts them."
        Event = Pool().get('crm.lead.score_event')
        super()._move_related(survivor, others)
        events = Event.search([('lead', 'in', [o.id for o in others])])
        if events:
            with without_check_access():
                Event.write(events, {'lead': survivor.id})
        cls.rescore([survivor, *others])


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'

    @classmethod
    def on_modification(cls, mode, messages, field_names=None):
        super().on_modification(mode, messages, field_names=field_names)
        if mode == 'create':
            cls._score_inbound(cls.from_leads(messages))

    @classmethod
    def _score_inbound(cls, messages):
        """The events of messages from leads: a WhatsApp message written
        after one of ours is a reply, an email (not an automatic answer)
        engagement, and any that asks for a price (keywords) is that too."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        Rule = pool.get('crm.scoring.rule')
        if not messages:
            return
        pattern = keyword_pattern(Rule.settings()['keywords'])
        ours = cls._first_outbound([m for m in messages
                if m.channel == 'whatsapp'])
        events = []
        for message in messages:
            text = ' '.join(filter(None, [message.subject, message.body]))
            stop = message.channel == 'whatsapp' and is_stop_request(
                message.body)
            if asks_price(text, pattern):
                events.append(ScoreEvent(message.lead, 'asked_price',
                        message.at, text.splitlines()[0][:120]))
            # WhatsApp stamps a message to the second: ours of the same
            # second came first.
            if (message.channel == 'whatsapp' and not stop
                    and message.lead.id in ours
                    and ours[message.lead.id]
                    < message.at + dt.timedelta(seconds=1)):
                events.append(ScoreEvent(message.lead, 'replied_whatsapp',
                        message.at, (message.body or '').strip()[:120]
                        or None))
            elif message.channel == 'email' and message.kind != 'auto_reply':
                events.append(ScoreEvent(message.lead, 'email_engaged',
                        message.at, message.subject))
        Lead.record_score_events(events)

    @classmethod
    def _first_outbound(cls, messages):
        "{lead id: when we first wrote to them} for these messages' leads."
        table = cls.__table__()
        ids = sorted({m.lead.id for m in messages})
        found = {}
        if not ids:
            return found
        cursor = Transaction().connection.cursor()
        for sub_ids in grouped_slice(ids, SLICE):
            cursor.execute(*table.select(table.lead, Min(table.at),
                    where=in_ids(table.lead, list(sub_ids))
                    & (table.direction == 'outbound')
                    & (table.status != 'skipped'),
                    group_by=[table.lead]))
            # SQLite gives an aggregate of timestamps back as text.
            found.update((lead_id, dt.datetime.fromisoformat(at)
                    if isinstance(at, str) else at) for lead_id, at in cursor)
        return found


class Stage(metaclass=PoolMeta):
    __name__ = 'crm.stage'
    counts_as_visit = fields.Boolean("Counts as a Visit",
        help="A deal entering this stage scores its lead a booked visit.")

    @classmethod
    def default_counts_as_visit(cls):
        return False


class Deal(metaclass=PoolMeta):
    __name__ = 'crm.deal'

    @classmethod
    def _record_stage_changes(cls, moves):
        "A stage move rescores the deal's lead; into a visit stage, it scores."
        Lead = Pool().get('crm.lead')
        super()._record_stage_changes(moves)
        now = utcnow()
        deals = [deal for deal, _, _ in moves if deal.lead]
        visits = [ScoreEvent(d.lead, 'visit_booked', now, d.stage.rec_name)
            for d in deals if d.stage.counts_as_visit]
        Lead.record_score_events(visits)
        Lead.rescore([d.lead for d in deals if not d.stage.counts_as_visit])


class Task(metaclass=PoolMeta):
    __name__ = 'crm.task'

    @classmethod
    def on_modification(cls, mode, tasks, field_names=None):
        """A visit or meeting done is a visit the lead booked: read from the
        write of the state, whichever button or wizard finished it."""
        Lead = Pool().get('crm.lead')
        super().on_modification(mode, tasks, field_names=field_names)
        if mode != 'write' or not field_names or 'state' not in field_names:
            return
        now = utcnow()
        Lead.record_score_events([
                ScoreEvent(t.lead, 'visit_booked', now, t.name)
                for t in tasks if t.lead and t.state == 'done'
                and getattr(t, 'kind', None) in VISIT_TASK_TYPES])


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection += [
            ('crm.lead|score_tick', "Rescore leads whose points decayed"),
            ]
