"""The pipeline board (static/board/): deals in columns by stage, open
deals by expected-close month (the forecast), or leads by status. Each
column has its count and ₹ totals over the whole column and its first
cards; more come a page at a time. routes.py checks the session, the CSRF
token and the limits, then calls crm.board in a transaction of the
signed-in user.

Every count, total and card is of the records the user may read: cards are
searched with access checked, and the totals run on the SQL Tryton's own
search builds from the same domain and the user's record rules
(`readable_query`), never on the bare table. A card dropped in another
column is written by crm.deal.write (crm.lead.write) under the user's
access, as the desk saves a form: stage rules, stage history, sequences
and whatever else hooks the write fire, and a refusal rolls everything
back and is answered with the server's reason."""
import calendar
import datetime as dt
import time
from dataclasses import dataclass, field as dataclass_field
from decimal import Decimal, InvalidOperation

from sql import Null
from sql.aggregate import Count, Min, Sum
from sql.conditionals import Case
from sql.functions import Extract

from trytond.exceptions import ConcurrencyException
from trytond.i18n import gettext
from trytond.model import EvalEnvironment, Index, Model, fields
from trytond.model.exceptions import AccessError
from trytond.model.modelsql import convert_from
from trytond.pool import Pool, PoolMeta
from trytond.pyson import PYSONDecoder, PYSONEncoder
from trytond.transaction import Transaction, check_access, without_check_access

from .contact import format_inr
from .exceptions import InboxRefusal
from .inbox import desk_url, iso, parse_iso
from .message import utcnow
from .sequence import local_timezone
from .task import KINDS

PAGE = 20
MAX_PAGE = 100
FORECAST_MONTHS = 6
MAX_QUERY = 100
# The cards a page may ask about in one live-update poll.
MAX_SHOWN = 1000
# Field types a stage may ask for on the board (others: in the desk).
ASKABLE = {'char', 'text', 'selection', 'date', 'integer', 'numeric',
    'float'}
LEAD_STATUSES_FIXED = {'converted'}
BANDS = ['hot', 'warm', 'cold']


class Deal(metaclass=PoolMeta):
    __name__ = 'crm.deal'
    board_position = fields.Float("Board Position",
        help="Where the card sits in its column of the pipeline board.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                # A column of the board, in its order.
                Index(t, (t.stage, Index.Equality()),
                    (t.board_position, Index.Range()),
                    (t.id, Index.Range())),
                # The forecast's months.
                Index(t, (t.expected_close, Index.Range())),
                # The board's live updates: what changed since it asked.
                Index(t, (t.write_date, Index.Range())),
                })

    @classmethod
    def __register__(cls, module):
        super().__register__(module)
        # Deals made before the board: newest first, as new ones come.
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update([table.board_position],
                [-Extract('EPOCH', table.create_date)],
                where=table.board_position == Null))

    @classmethod
    def default_board_position(cls):
        # A new card goes on top of its column.
        return -time.time()

    @classmethod
    def board_card_badges(cls, deals):
        "An open deal whose expected close has passed says so."
        badges = super().board_card_badges(deals)
        today = local_today()
        for deal in deals:
            if (deal.stage.kind == 'open' and deal.expected_close
                    and deal.expected_close < today):
                badges[deal.id].append({'kind': 'close_passed',
                        'text': gettext('kraya_crm.msg_board_close_passed'),
                        'tone': 'bad'})
        return badges


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                # A column of the leads board, hottest first.
                Index(t, (t.status, Index.Equality(cardinality='low')),
                    (t.score, Index.Range(order='DESC NULLS LAST')),
                    (t.id, Index.Range(order='DESC'))),
                Index(t, (t.write_date, Index.Range())),
                })


def local_today():
    return dt.datetime.now(local_timezone()).date()


def readable_query(Model_, domain):
    """(tables, where) of the records of Model_ matching domain that the
    user may read: what Model_.search runs, the record rules included."""
    Rule = Pool().get('ir.rule')
    with check_access():
        Pool().get('ir.model.access').check(Model_.__name__, 'read')
        tables, where = Model_.search_domain(domain)
        rules = Rule.domain_get(Model_.__name__, mode='read')
        if rules:
            tables, rule_where = Model_.search_domain(rules,
                active_test=False, tables=tables)
            where &= rule_where
    return tables, where


def grouped_totals(Model_, domain, keys, amount):
    """{(key values): (count, sum of amount)} over the readable records
    matching domain; keys(table) (a list) and amount(table) are SQL
    expressions. The keys are computed in a subquery: PostgreSQL cannot
    group by an expression whose parameters are bound apart from the
    select's."""
    tables, where = readable_query(Model_, domain)
    table, _ = tables[None]
    expressions = keys(table)
    rows = convert_from(None, tables).select(
        *(k.as_(f'key{i}') for i, k in enumerate(expressions)),
        amount(table).as_('amount'), where=where)
    columns = [getattr(rows, f'key{i}') for i in range(len(expressions))]
    cursor = Transaction().connection.cursor()
    cursor.execute(*rows.select(*columns, Count(),
            Sum(rows.amount), group_by=columns))
    return {tuple(row[:-2]): (row[-2], money(row[-1])) for row in cursor}


def money(value):
    "A sum from the database as Decimal rupees (SQLite answers floats)."
    if value is None:
        return Decimal(0)
    return Decimal(str(value)).quantize(Decimal(1))


@dataclass
class Column:
    "A column of the board: its records are those of its domain."
    id: str
    name: str
    domain: list
    color: str = '#64748b'
    kind: str = 'open'
    droppable: bool = True
    probability: int = None
    count: int = 0
    total: Decimal = Decimal(0)
    weighted: Decimal = None
    extra: dict = dataclass_field(default_factory=dict)

    def summary(self, show_money):
        return {
            'id': self.id, 'name': self.name, 'color': self.color,
            'kind': self.kind, 'droppable': self.droppable,
            'probability': self.probability, 'count': self.count,
            'total': str(self.total) if show_money else None,
            'total_text': format_inr(self.total) if show_money else None,
            'weighted': str(self.weighted)
            if show_money and self.weighted is not None else None,
            'weighted_text': format_inr(self.weighted)
            if show_money and self.weighted is not None else None,
            **self.extra,
            }


@dataclass
class Filters:
    "What the board is narrowed to; from the page's query string."
    owner: object = None  # a user id, 'me' or 'none'
    team: int = None
    source: int = None
    band: str = None
    close_from: dt.date = None
    close_to: dt.date = None
    value_min: Decimal = None
    value_max: Decimal = None
    query: str = None

    @classmethod
    def from_args(cls, args):
        def number(name, kind):
            value = (args.get(name) or '').strip()
            if not value:
                return None
            try:
                return kind(value)
            except (ValueError, InvalidOperation):
                raise InboxRefusal('bad_filter', gettext(
                        'kraya_crm.msg_board_bad_filter', value=value))

        def date(name):
            value = (args.get(name) or '').strip()
            if not value:
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise InboxRefusal('bad_filter', gettext(
                        'kraya_crm.msg_board_bad_filter', value=value))
        owner = (args.get('owner') or '').strip() or None
        if owner not in {None, 'me', 'none'}:
            owner = number('owner', int)
        band = (args.get('band') or '').strip() or None
        if band is not None and band not in BANDS:
            raise InboxRefusal('bad_filter', gettext(
                    'kraya_crm.msg_board_bad_filter', value=band))
        return cls(owner=owner, team=number('team', int),
            source=number('source', int), band=band,
            close_from=date('close_from'), close_to=date('close_to'),
            value_min=number('value_min', Decimal),
            value_max=number('value_max', Decimal),
            query=((args.get('q') or '').strip()[:MAX_QUERY] or None))

    def common_domain(self):
        "Owner, team and search, as leads and deals both have them."
        domain = []
        if self.owner == 'me':
            domain.append(('owner', '=', Transaction().user))
        elif self.owner == 'none':
            domain.append(('owner', '=', None))
        elif self.owner is not None:
            domain.append(('owner', '=', self.owner))
        if self.team is not None:
            domain.append(('team', '=', self.team))
        return domain

    def deal_domain(self, access):
        domain = self.common_domain()
        if self.source is not None:
            access.require('source')
            domain.append(('lead.source', '=', self.source))
        if self.band:
            domain.append(('lead.band', '=', self.band))
        if self.close_from:
            domain.append(('expected_close', '>=', self.close_from))
        if self.close_to:
            domain.append(('expected_close', '<=', self.close_to))
        if self.value_min is not None:
            access.require('value')
            domain.append(('value', '>=', self.value_min))
        if self.value_max is not None:
            access.require('value')
            domain.append(('value', '<=', self.value_max))
        if self.query:
            domain.append(('title', 'ilike', f'%{self.query}%'))
        return domain

    def lead_domain(self, access):
        domain = self.common_domain()
        if self.source is not None:
            access.require('source')
            domain.append(('source', '=', self.source))
        if self.band:
            domain.append(('band', '=', self.band))
        if self.query:
            domain.append(('rec_name', 'ilike', f'%{self.query}%'))
        return domain


@dataclass
class Access:
    "What of the board the user may see and do."
    value: bool
    source: bool
    score: bool
    move_deals: bool
    move_leads: bool

    @classmethod
    def of_user(cls):
        pool = Pool()
        FieldAccess = pool.get('ir.model.field.access')
        ModelAccess = pool.get('ir.model.access')
        with check_access():
            return cls(
                value=FieldAccess.check('crm.deal', ['value'],
                    raise_exception=False),
                source=FieldAccess.check('crm.lead', ['source'],
                    raise_exception=False),
                score=FieldAccess.check('crm.lead', ['score'],
                    raise_exception=False),
                move_deals=ModelAccess.check('crm.deal', 'write',
                    raise_exception=False),
                move_leads=ModelAccess.check('crm.lead', 'write',
                    raise_exception=False))

    def require(self, what):
        "A filter on a field the user may not read is refused."
        if not getattr(self, what):
            raise InboxRefusal('not_allowed',
                gettext('kraya_crm.msg_board_filter_not_allowed'))


class Board(Model):
    "What the pipeline board page reads and does."
    __name__ = 'crm.board'
    __string__ = "Pipeline Board"

    MODES = ('deals', 'forecast', 'leads')

    # --- Reading ---

    @classmethod
    def board(cls, mode, filters, start=None, limit=PAGE):
        "Every column with its totals and first cards, and what to filter on."
        access = Access.of_user()
        columns = cls.columns(mode, filters, access, start)
        for column in columns:
            column.extra['cards'], column.extra['more'] = cls._cards(
                mode, column, filters, access, 0, limit)
        return {
            'mode': mode,
            'columns': [c.summary(cls._show_money(mode, access))
                for c in columns],
            'cursor': cls._cursor_now(),
            'start': columns_start(mode, start),
            'can_move': access.move_leads if mode == 'leads'
            else access.move_deals,
            'show_money': cls._show_money(mode, access),
            'options': cls.options(access),
            }

    @classmethod
    def more(cls, mode, column_id, filters, start=None, offset=0,
            limit=PAGE):
        "The next cards of one column."
        access = Access.of_user()
        column = cls._column(mode, column_id, start)
        cards, more = cls._cards(mode, column, filters, access,
            max(0, offset), max(1, min(limit, MAX_PAGE)))
        return {'column': column_id, 'cards': cards, 'more': more}

    @classmethod
    def summary(cls, mode, filters, start=None):
        "The columns' counts and totals, without cards."
        access = Access.of_user()
        return [c.summary(cls._show_money(mode, access))
            for c in cls.columns(mode, filters, access, start)]

    @staticmethod
    def _show_money(mode, access):
        # Leads' totals are their budgets, which everyone may read.
        return True if mode == 'leads' else access.value

    @staticmethod
    def _cursor_now():
        return utcnow().isoformat() + 'Z'

    @classmethod
    def columns(cls, mode, filters, access, start=None):
        "The mode's columns, each with its count and totals."
        if mode == 'deals':
            columns = cls.stage_columns()
            cls._deal_totals(columns, filters.deal_domain(access),
                lambda t: t.stage)
        elif mode == 'forecast':
            columns = cls.month_columns(start)
            cls._deal_totals(columns, filters.deal_domain(access)
                + cls.forecast_domain(), month_key(columns))
        elif mode == 'leads':
            columns = cls.status_columns()
            totals = grouped_totals(Pool().get('crm.lead'),
                filters.lead_domain(access), lambda t: [t.status],
                lambda t: t.budget)
            for column in columns:
                column.count, column.total = totals.get(
                    (column.id,), (0, Decimal(0)))
        else:
            raise InboxRefusal('bad_mode',
                gettext('kraya_crm.msg_board_bad_mode', mode=mode))
        return columns

    @classmethod
    def _deal_totals(cls, columns, domain, key):
        """Count, value and weighted value of each column: grouped by the
        column's key (an SQL expression of the deal) and the stage,
        weighted by the stage's probability."""
        Deal = Pool().get('crm.deal')
        probability = {s.id: s.probability for s in cls.stages()}
        by_column = {c.id: c for c in columns}
        for column in columns:
            column.weighted = Decimal(0)
        totals = grouped_totals(Deal,
            domain + [('stage', 'in', list(probability))],
            lambda t: [key(t), t.stage], lambda t: t.value)
        for (column_key, stage), (count, total) in totals.items():
            column = by_column.get(str(column_key))
            if column is None:
                continue
            column.count += count
            column.total += total
            column.weighted += (total * probability.get(stage, 0)
                / 100).quantize(Decimal(1))

    @classmethod
    def forecast_domain(cls):
        "The forecast is of open deals: won and lost ones are no forecast."
        return [('stage', 'in', [s.id for s in cls.stages()
                    if s.kind == 'open'])]

    @classmethod
    def stages(cls):
        Stage = Pool().get('crm.stage')
        with check_access():
            return Stage.search([], order=[('sequence', 'ASC'),
                    ('id', 'ASC')])

    @classmethod
    def stage_columns(cls):
        return [Column(id=str(s.id), name=s.rec_name,
                domain=[('stage', '=', s.id)], color=s.color or '#64748b',
                kind=s.kind, probability=s.probability)
            for s in cls.stages()]

    @classmethod
    def month_columns(cls, start=None):
        """The forecast's columns: overdue closes (before the first month),
        FORECAST_MONTHS months from `start` (this month), later ones, and
        deals without a date."""
        first = month_start(start)
        months = [add_months(first, i) for i in range(FORECAST_MONTHS + 1)]
        columns = [Column(id='earlier',
                name=gettext('kraya_crm.msg_board_earlier',
                    month=months[0].strftime('%b %Y')),
                domain=[('expected_close', '<', months[0])],
                color='#b91c1c', kind='earlier', droppable=False)]
        for begin, end in zip(months, months[1:]):
            columns.append(Column(id=begin.strftime('%Y-%m'),
                    name=begin.strftime('%B %Y'),
                    domain=[('expected_close', '>=', begin),
                        ('expected_close', '<', end)],
                    color='#0f766e', kind='month'))
        columns.append(Column(id='later',
                name=gettext('kraya_crm.msg_board_later',
                    month=months[-1].strftime('%b %Y')),
                domain=[('expected_close', '>=', months[-1])],
                color='#475569', kind='later', droppable=False))
        columns.append(Column(id='none',
                name=gettext('kraya_crm.msg_board_no_date'),
                domain=[('expected_close', '=', None)], color='#94a3b8',
                kind='none'))
        return columns

    @classmethod
    def status_columns(cls):
        Lead = Pool().get('crm.lead')
        colors = {'new': '#64748b', 'contacted': '#0ea5e9',
            'qualified': '#6366f1', 'unqualified': '#dc2626',
            'converted': '#16a34a'}
        selection = Lead.fields_get(['status'])['status']['selection']
        return [Column(id=value, name=label, domain=[('status', '=', value)],
                color=colors.get(value, '#64748b'), kind=value,
                droppable=value not in LEAD_STATUSES_FIXED)
            for value, label in selection]

    @classmethod
    def _column(cls, mode, column_id, start=None):
        if mode == 'deals':
            columns = cls.stage_columns()
        elif mode == 'forecast':
            columns = cls.month_columns(start)
        elif mode == 'leads':
            columns = cls.status_columns()
        else:
            raise InboxRefusal('bad_mode',
                gettext('kraya_crm.msg_board_bad_mode', mode=mode))
        for column in columns:
            if column.id == column_id:
                return column
        raise InboxRefusal('not_found',
            gettext('kraya_crm.msg_board_no_column', column=column_id))

    @classmethod
    def _cards(cls, mode, column, filters, access, offset, limit):
        "(the cards of the column from offset, whether it has more)."
        pool = Pool()
        if mode == 'leads':
            Model_ = pool.get('crm.lead')
            domain = filters.lead_domain(access) + column.domain
            order = [('score', 'DESC NULLS LAST'), ('id', 'DESC')]
        else:
            Model_ = pool.get('crm.deal')
            domain = filters.deal_domain(access) + column.domain
            if mode == 'forecast':
                domain += cls.forecast_domain()
                order = [('expected_close', 'ASC NULLS LAST'), ('id', 'ASC')]
            else:
                order = [('board_position', 'ASC'), ('id', 'DESC')]
        with check_access():
            records = Model_.search(domain, offset=offset, limit=limit + 1,
                order=order)
        more = len(records) > limit
        records = records[:limit]
        if mode == 'leads':
            return cls.lead_cards(records, access), more
        return cls.deal_cards(records, access, mode, column), more

    # --- Cards ---

    @classmethod
    def deal_cards(cls, deals, access, mode='deals', column=None):
        if not deals:
            return []
        pool = Pool()
        Deal = pool.get('crm.deal')
        Lead = pool.get('crm.lead')
        leads = [d.lead for d in deals if d.lead]
        with check_access():
            # The lead's band, of the leads the user may read only.
            readable = {l.id for l in Lead.search([
                        ('id', 'in', [l.id for l in leads])])} \
                if leads else set()
        tasks = cls.next_tasks('deal', deals)
        badges = Deal.board_card_badges(deals)
        timestamps = cls._timestamps(Deal, deals)
        now = utcnow()
        cards = []
        for deal in deals:
            lead = deal.lead if deal.lead and deal.lead.id in readable \
                else None
            entered = deal.stage_entered_at
            cards.append({
                    'id': deal.id, 'model': 'crm.deal',
                    'title': deal.title,
                    'customer': deal.party.rec_name if deal.party else None,
                    'value': str(deal.value) if access.value else None,
                    'value_text': format_inr(deal.value)
                    if access.value else None,
                    'owner': user_json(deal.owner),
                    'band': lead.band if lead else None,
                    'lead': {'id': lead.id, 'name': lead.rec_name}
                    if lead else None,
                    'stage': {'id': deal.stage.id, 'name': deal.stage.rec_name,
                        'kind': deal.stage.kind},
                    'probability': deal.stage.probability,
                    'expected_close': deal.expected_close.isoformat()
                    if deal.expected_close else None,
                    'expected_close_text': deal.expected_close.strftime(
                        '%d %b %Y') if deal.expected_close else None,
                    'days_in_stage': (now - entered).days
                    if entered else None,
                    'next_task': tasks.get(deal.id),
                    'badges': badges.get(deal.id, []),
                    'column': deal_column(deal, mode, column),
                    'position': deal.board_position,
                    'timestamp': timestamps.get(deal.id),
                    'desk_url': desk_url(deal),
                    })
        return cards

    @classmethod
    def lead_cards(cls, leads, access):
        if not leads:
            return []
        Lead = Pool().get('crm.lead')
        tasks = cls.next_tasks('lead', leads)
        timestamps = cls._timestamps(Lead, leads)
        now = utcnow()
        return [{
                'id': lead.id, 'model': 'crm.lead',
                'title': lead.name,
                'customer': lead.company_name,
                'value': str(lead.budget) if lead.budget is not None
                else None,
                'value_text': format_inr(lead.budget)
                if lead.budget is not None else None,
                'owner': user_json(lead.owner),
                'band': lead.band,
                'score': lead.score if access.score else None,
                'source': lead.source.rec_name
                if access.source and lead.source else None,
                'city': lead.city,
                'status': lead.status,
                'days_in_stage': (now - lead.create_date).days
                if lead.create_date else None,
                'next_task': tasks.get(lead.id),
                'badges': [],
                'column': lead.status,
                'timestamp': timestamps.get(lead.id),
                'desk_url': desk_url(lead),
                } for lead in leads]

    @classmethod
    def next_tasks(cls, field_name, records):
        """{record id: its first open task (soonest due) the user may
        read}, as card JSON."""
        Task = Pool().get('crm.task')
        with check_access():
            tasks = Task.search([
                    (field_name, 'in', [r.id for r in records]),
                    ('state', '=', 'open'),
                    ], order=[('due', 'ASC NULLS LAST'), ('id', 'ASC')])
        first = {}
        for task in tasks:
            first.setdefault(getattr(task, field_name).id, task)
        kinds = dict(KINDS)
        return {record_id: {'id': task.id, 'name': task.name,
                'kind': task.kind, 'kind_label': kinds[task.kind],
                'due': iso(task.due), 'due_text': task.due_text,
                'overdue': task.overdue, 'desk_url': desk_url(task)}
            for record_id, task in first.items()}

    @staticmethod
    def _timestamps(Model_, records):
        "The desk's concurrency stamps: a move of a changed card is refused."
        with without_check_access():
            return {r['id']: r['_timestamp'] for r in Model_.read(
                    [r.id for r in records], ['_timestamp'])}

    @classmethod
    def options(cls, access):
        "What the filters offer: owners, teams, sources, bands."
        pool = Pool()
        Inbox = pool.get('crm.inbox')
        Team = pool.get('crm.team')
        Source = pool.get('crm.source')
        Lead = pool.get('crm.lead')
        with check_access():
            teams = Team.search([], order=[('name', 'ASC')])
            sources = Source.search([], order=[('name', 'ASC')]) \
                if access.source else []
        bands = dict(Lead.fields_get(['band'])['band']['selection'])
        return {
            'owners': [{'id': u['id'], 'name': u['name']}
                for u in Inbox.teammates()],
            'teams': [{'id': t.id, 'name': t.rec_name} for t in teams],
            'sources': [{'id': s.id, 'name': s.rec_name} for s in sources],
            'bands': [{'id': b, 'name': bands[b]} for b in BANDS],
            }

    # --- Changing ---

    @classmethod
    def _readable(cls, model_name, record_id):
        "The record if the user may read it; else not found."
        Model_ = Pool().get(model_name)
        with check_access():
            found = Model_.search([('id', '=', record_id)])
        if not found:
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_board_not_found'))
        return found[0]

    @classmethod
    def move_deal(cls, deal_id, values):
        """Put the deal in values['stage'], between the cards
        values['after'] (above) and values['before'] (below), with the
        fields the stage asks for (values['fields']), through
        crm.deal.write as the user. Fields the stage requires that the deal
        lacks are answered as 'fields_required' with their description,
        for the page to ask for."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        deal = cls._readable('crm.deal', deal_id)
        stages = {s.id: s for s in cls.stages()}
        try:
            stage = stages[int(values.get('stage'))]
        except (TypeError, ValueError, KeyError):
            raise InboxRefusal('bad_stage',
                gettext('kraya_crm.msg_board_bad_stage'))
        given = values.get('fields') or {}
        if not isinstance(given, dict):
            raise InboxRefusal('bad_fields',
                gettext('kraya_crm.msg_board_bad_fields'))
        asked = cls.fields_required_in(deal, stage)
        written = {}
        for name, description in asked.items():
            value = convert_field_value(description, given.get(name))
            if value is None:
                raise FieldsRequired(stage, asked)
            written[name] = value
        if set(given) - set(asked):
            raise InboxRefusal('bad_fields',
                gettext('kraya_crm.msg_board_bad_fields'))
        if stage.id != deal.stage.id:
            written['stage'] = stage.id
        written['board_position'] = cls._position(deal, stage,
            values.get('after'), values.get('before'))
        cls._write_as_user(Deal, deal, written, values.get('timestamp'))
        return cls._moved(Deal(deal.id), 'deals', values)

    @classmethod
    def reschedule_deal(cls, deal_id, values):
        """The forecast's move: the deal's expected close into the month
        values['month'] ('YYYY-MM'; None: no date), on the same day of the
        month where it has one (the month's last day when shorter), else
        the month's last day."""
        Deal = Pool().get('crm.deal')
        deal = cls._readable('crm.deal', deal_id)
        month = values.get('month')
        if month in {None, '', 'none'}:
            close = None
        else:
            try:
                first = dt.date.fromisoformat(f'{month}-01')
            except (TypeError, ValueError):
                raise InboxRefusal('bad_month',
                    gettext('kraya_crm.msg_board_bad_month', month=month))
            close = same_day_in(first, deal.expected_close)
        cls._write_as_user(Deal, deal, {'expected_close': close},
            values.get('timestamp'))
        return cls._moved(Deal(deal.id), 'forecast', values)

    @classmethod
    def move_lead(cls, lead_id, values):
        "A lead to another status, through crm.lead.write as the user."
        Lead = Pool().get('crm.lead')
        lead = cls._readable('crm.lead', lead_id)
        status = values.get('status')
        statuses = {c.id for c in cls.status_columns()}
        if status not in statuses:
            raise InboxRefusal('bad_status',
                gettext('kraya_crm.msg_board_bad_status'))
        if status != lead.status and (LEAD_STATUSES_FIXED
                & {status, lead.status}):
            raise InboxRefusal('use_convert',
                gettext('kraya_crm.msg_board_lead_convert'))
        cls._write_as_user(Lead, lead, {'status': status},
            values.get('timestamp'))
        return cls._moved(Lead(lead.id), 'leads', values)

    @classmethod
    def _moved(cls, record, mode, values):
        "The moved card as it is now, and the columns' new totals."
        access = Access.of_user()
        start = values.get('start')
        if mode == 'leads':
            card, = cls.lead_cards([record], access)
        else:
            card, = cls.deal_cards([record], access, mode)
        filters = Filters.from_args(values.get('filters') or {})
        return {'card': card,
            'columns': cls.summary(mode, filters, start)}

    @staticmethod
    def _write_as_user(Model_, record, values, timestamp):
        """Model_.write as the desk does it: access checked, and refused
        when the record changed since the page read it (its timestamp)."""
        transaction = Transaction()
        if timestamp:
            transaction.timestamp = {
                f'{Model_.__name__},{record.id}': str(timestamp)}
        try:
            with check_access():
                Model_.write([record], values)
        except ConcurrencyException:
            raise InboxRefusal('changed',
                gettext('kraya_crm.msg_board_changed'))
        except AccessError as exception:
            raise InboxRefusal('not_allowed', exception.message)
        finally:
            transaction.timestamp = {}

    @classmethod
    def fields_required_in(cls, deal, stage):
        """{field name: its description} of the fields crm.deal requires
        in `stage` (a 'required' state of the field, evaluated as if the
        deal were in it) that the deal lacks: the lost reason of a lost
        stage, and whatever other modules make a stage require."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        FieldAccess = pool.get('ir.model.field.access')
        moved = Deal(deal.id)
        moved.stage = stage
        # The function fields computed from the stage (kind, probability).
        for name, field in Deal._fields.items():
            if (isinstance(field, fields.Function)
                    and field.getter == f'on_change_with_{name}'
                    and 'stage' in getattr(Deal, field.getter).depends):
                setattr(moved, name, getattr(moved, field.getter)())
        environment = EvalEnvironment(moved, Deal)
        missing = []
        for name, field in Deal._fields.items():
            required = (field.states or {}).get('required')
            if not required or not hasattr(required, 'pyson'):
                continue
            decoded = PYSONDecoder(environment).decode(
                PYSONEncoder().encode(required))
            value = getattr(deal, name)
            if decoded and (value is None or value == '' or value == []):
                missing.append(name)
        if not missing:
            return {}
        with check_access():
            FieldAccess.check('crm.deal', missing)
        descriptions = Deal.fields_get(missing)
        for name in missing:
            if descriptions[name]['type'] not in ASKABLE:
                raise InboxRefusal('open_in_desk', gettext(
                        'kraya_crm.msg_board_field_in_desk',
                        field=descriptions[name]['string']))
        return {name: {key: descriptions[name].get(key) for key in [
                    'name', 'string', 'type', 'help', 'selection']}
            for name in missing}

    @classmethod
    def _position(cls, deal, stage, above_id, below_id):
        """The deal's board_position between the card above and the card
        below it in the stage's column (order: position, then newest
        first); on top of the column without either; room is made below
        when two positions leave none between them."""
        Deal = Pool().get('crm.deal')
        neighbours = {}
        ids = [i for i in [above_id, below_id] if isinstance(i, int)]
        if ids:
            with check_access():
                neighbours = {d.id: d for d in Deal.search([
                            ('id', 'in', ids), ('id', '!=', deal.id),
                            ('stage', '=', stage.id)])}
        above = neighbours.get(above_id)
        below = neighbours.get(below_id)
        if above is None and below is None:
            top = cls._top_position(stage)
            if top is None or (stage.id == deal.stage.id
                    and deal.board_position is not None
                    and deal.board_position <= top):
                return deal.board_position
            return top - 1
        if above is None:
            return below.board_position - 1
        if below is None:
            return above.board_position + 1
        middle = (above.board_position + below.board_position) / 2
        if above.board_position < middle < below.board_position:
            return middle
        cls._make_room_below(stage, below)
        return above.board_position + 0.5

    @staticmethod
    def _top_position(stage):
        Deal = Pool().get('crm.deal')
        table = Deal.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(Min(table.board_position),
                where=table.stage == stage.id))
        top, = cursor.fetchone()
        return top

    @staticmethod
    def _make_room_below(stage, below):
        """Push the card below and every card after it down by one: the
        order stays, a gap opens above them. Only the layout changes, so
        no hook of the deals' write has anything to do."""
        Deal = Pool().get('crm.deal')
        table = Deal.__table__()
        cursor = Transaction().connection.cursor()
        position = below.board_position
        cursor.execute(*table.update([table.board_position],
                [table.board_position + 1],
                where=(table.stage == stage.id)
                & ((table.board_position > position)
                    | ((table.board_position == position)
                        & (table.id <= below.id)))))
        below.board_position = position + 1

    # --- Live updates ---

    @classmethod
    def changed_since(cls, mode, filters, cursor, start=None, shown=(),
            limit=MAX_PAGE):
        """(the next cursor, None) when nothing the user may read changed
        after the cursor (an ISO time), nor any of the cards the page shows
        (`shown`, ids), else (the next cursor, {'cards': the changed cards
        that are on the board, 'gone': the ids of those that left it (or
        that the user may no longer read, or that were deleted), 'columns':
        the new totals})."""
        pool = Pool()
        Model_ = pool.get('crm.lead' if mode == 'leads' else 'crm.deal')
        since = parse_iso(cursor)
        shown = list(shown)[:MAX_SHOWN]
        with check_access():
            changed = Model_.search([('write_date', '>', since)],
                order=[('write_date', 'ASC'), ('id', 'ASC')], limit=limit)
        # The page's own cards, whoever may read them now: the page knows
        # their ids, and learns only that they left.
        with without_check_access():
            still = Model_.search([('id', 'in', shown)]) if shown else []
        left = [r for r in still if r.write_date and r.write_date > since]
        deleted = set(shown) - {r.id for r in still}
        if not changed and not left and not deleted:
            return cursor, None
        stamps = [r.write_date for r in changed + left]
        # Exact to the microsecond: the next poll starts after the last one.
        next_cursor = max(stamps).isoformat() + 'Z' if stamps else cursor
        ids = list({r.id for r in changed + left})
        access = Access.of_user()
        columns = cls.columns(mode, filters, access, start)
        cards = []
        for column in columns:
            if mode == 'leads':
                domain = filters.lead_domain(access) + column.domain
            else:
                domain = filters.deal_domain(access) + column.domain
                if mode == 'forecast':
                    domain += cls.forecast_domain()
            with check_access():
                found = Model_.search(domain + [('id', 'in', ids)])
            if mode == 'leads':
                cards += cls.lead_cards(found, access)
            else:
                cards += cls.deal_cards(found, access, mode, column)
        on_board = {c['id'] for c in cards}
        return next_cursor, {
            'cards': cards,
            'gone': sorted({i for i in ids if i not in on_board} | deleted),
            'columns': [c.summary(cls._show_money(mode, access))
                for c in columns],
            }


class FieldsRequired(InboxRefusal):
    "The stage requires fields the deal lacks: the page asks for them."

    def __init__(self, stage, fields_):
        super().__init__('fields_required', gettext(
                'kraya_crm.msg_board_fields_required', stage=stage.rec_name,
                fields=', '.join(f['string'] for f in fields_.values())),
            fields=list(fields_.values()))


def user_json(user):
    return {'id': user.id, 'name': user.rec_name} if user else None


def deal_column(deal, mode, column=None):
    "The id of the deal's column in the mode."
    if mode != 'forecast':
        return str(deal.stage.id)
    if column is not None:
        return column.id
    if deal.expected_close is None:
        return 'none'
    return deal.expected_close.strftime('%Y-%m')


def month_start(start=None):
    "The first day of the month 'YYYY-MM' (this month in India if None)."
    if start:
        try:
            return dt.date.fromisoformat(f'{start}-01')
        except ValueError:
            raise InboxRefusal('bad_month',
                gettext('kraya_crm.msg_board_bad_month', month=start))
    return local_today().replace(day=1)


def columns_start(mode, start):
    return month_start(start).strftime('%Y-%m') if mode == 'forecast' \
        else None


def add_months(first, months):
    month = first.month - 1 + months
    return dt.date(first.year + month // 12, month % 12 + 1, 1)


def same_day_in(first, current):
    "A day of the month starting `first`: current's day, or the last."
    last = calendar.monthrange(first.year, first.month)[1]
    day = min(current.day, last) if current else last
    return first.replace(day=day)


def month_key(columns):
    """The SQL key of a deal's forecast column: the id of the month whose
    range holds its expected close, 'earlier', 'later' or 'none'."""
    months = [c for c in columns if c.kind == 'month']
    bounds = [dt.date.fromisoformat(f'{c.id}-01') for c in months]
    end = add_months(bounds[-1], 1)

    def key(table):
        close = table.expected_close
        return Case((close == Null, 'none'), (close < bounds[0], 'earlier'),
            *[(close < add_months(b, 1), c.id)
                for b, c in zip(bounds, months)],
            (close >= end, 'later'), else_='none')
    return key


def convert_field_value(description, value):
    """A value the page typed for a field a stage asks for, as the field
    takes it; None when empty or not one."""
    if value is None:
        return None
    kind = description['type']
    if kind in {'char', 'text'}:
        value = str(value).strip()
        return value or None
    if kind == 'selection':
        choices = {str(k) for k, _ in description['selection'] or []
            if k not in {None, ''}}
        return value if value in choices else None
    if kind == 'date':
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            return None
    try:
        if kind == 'integer':
            return int(value)
        if kind == 'numeric':
            return Decimal(str(value))
        if kind == 'float':
            return float(value)
    except (ValueError, InvalidOperation):
        return None
    return None
