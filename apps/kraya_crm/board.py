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
# What a card shows, read at once.
DEAL_CARD_FIELDS = ['title', 'value', 'owner', 'lead', 'party', 'stage',
    'expected_close', 'stage_entered_at', 'board_position', '_timestamp']
LEAD_CARD_FIELDS = ['name', 'company_name', 'budget', 'owner', 'city',
    'status', 'create_date', '_timestamp']
LEAD_COLOURS = {'new': '#64748b', 'contacted': '#0ea5e9',
    'qualified': '#6366f1', 'unqualified': '#dc2626', 'converted': '#16a34a'}
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
        "From a query string, or the JSON object a move sends them in."
        if not hasattr(args, 'get'):
            args = {}

        def text(name):
            return str(args.get(name) or '').strip()

        def number(name, kind):
            value = text(name)
            if not value:
                return None
            try:
                return kind(value)
            except (ValueError, InvalidOperation):
                raise InboxRefusal('bad_filter', gettext(
                        'kraya_crm.msg_board_bad_filter', value=value))

        def date(name):
            value = text(name)
            if not value:
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise InboxRefusal('bad_filter', gettext(
                        'kraya_crm.msg_board_bad_filter', value=value))
        owner = text('owner') or None
        if owner not in {None, 'me', 'none'}:
            owner = number('owner', int)
        band = text('band') or None
        if band is not None and band not in BANDS:
            raise InboxRefusal('bad_filter', gettext(
                    'kraya_crm.msg_board_bad_filter', value=band))
        return cls(owner=owner, team=number('team', int),
            source=number('source', int), band=band,
            close_from=date('close_from'), close_to=date('close_to'),
            value_min=number('value_min', Decimal),
            value_max=number('value_max', Decimal),
            query=text('q')[:MAX_QUERY] or None)

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
            access.require('band')
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
            access.require('band')
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
    band: bool
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
                band=FieldAccess.check('crm.lead', ['band'],
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


class View:
    """What one request of the board looks at: the mode, its filters, the
    first month of the forecast, what the user may see, and the stages,
    read once."""
    MODES = ('deals', 'forecast', 'leads')

    def __init__(self, mode, filters, start=None):
        if mode not in self.MODES:
            raise InboxRefusal('bad_mode',
                gettext('kraya_crm.msg_board_bad_mode', mode=mode))
        Stage = Pool().get('crm.stage')
        self.mode = mode
        self.filters = filters
        self.start = month_start(start).strftime('%Y-%m') \
            if mode == 'forecast' else None
        self.access = Access.of_user()
        with check_access():
            self.stages = Stage.search([],
                order=[('sequence', 'ASC'), ('id', 'ASC')])
        self.model_name = 'crm.lead' if mode == 'leads' else 'crm.deal'

    @property
    def show_money(self):
        # Leads' totals are their budgets, which everyone may read.
        return self.mode == 'leads' or self.access.value

    @property
    def can_move(self):
        return (self.access.move_leads if self.mode == 'leads'
            else self.access.move_deals)

    @property
    def order(self):
        if self.mode == 'leads':
            return [('score', 'DESC NULLS LAST'), ('id', 'DESC')]
        if self.mode == 'forecast':
            return [('expected_close', 'ASC NULLS LAST'), ('id', 'ASC')]
        return [('board_position', 'ASC'), ('id', 'DESC')]

    def base_domain(self):
        "The filters, and for the forecast its open deals."
        if self.mode == 'leads':
            return self.filters.lead_domain(self.access)
        domain = self.filters.deal_domain(self.access)
        if self.mode == 'forecast':
            # Won and lost deals are no forecast.
            domain.append(('stage', 'in',
                    [s.id for s in self.stages if s.kind == 'open']))
        return domain

    def columns(self):
        "The mode's columns, without their totals."
        if self.mode == 'deals':
            return [Column(id=str(s.id), name=s.rec_name,
                    domain=[('stage', '=', s.id)],
                    color=s.color or '#64748b', kind=s.kind,
                    probability=s.probability)
                for s in self.stages]
        if self.mode == 'forecast':
            return month_columns(self.start)
        Lead = Pool().get('crm.lead')
        selection = Lead.fields_get(['status'])['status']['selection']
        return [Column(id=value, name=label, domain=[('status', '=', value)],
                color=LEAD_COLOURS.get(value, '#64748b'), kind=value,
                droppable=value not in LEAD_STATUSES_FIXED)
            for value, label in selection]

    def column_of(self, stage, close):
        "The id of the column of a deal in the stage, closing then."
        if self.mode != 'forecast':
            return str(stage.id)
        first = month_start(self.start)
        if close is None:
            return 'none'
        if close < first:
            return 'earlier'
        if close >= add_months(first, FORECAST_MONTHS):
            return 'later'
        return close.strftime('%Y-%m')

    def column(self, column_id):
        for column in self.columns():
            if column.id == column_id:
                return column
        raise InboxRefusal('not_found',
            gettext('kraya_crm.msg_board_no_column', column=column_id))

    def totalled_columns(self):
        "The columns, each with its count and totals."
        columns = self.columns()
        if self.mode == 'leads':
            totals = grouped_totals(Pool().get('crm.lead'),
                self.base_domain(), lambda t: [t.status],
                lambda t: t.budget)
            for column in columns:
                column.count, column.total = totals.get(
                    (column.id,), (0, Decimal(0)))
            return columns
        if self.mode == 'forecast':
            key = month_key(columns)
        else:
            def key(table):
                return table.stage
        probability = {s.id: s.probability for s in self.stages}
        by_column = {c.id: c for c in columns}
        for column in columns:
            column.weighted = Decimal(0)
        # Grouped by the column's key and the stage, each stage's value
        # weighted by its probability.
        totals = grouped_totals(Pool().get('crm.deal'),
            self.base_domain() + [('stage', 'in', list(probability))],
            lambda t: [key(t), t.stage], lambda t: t.value)
        for (column_key, stage), (count, total) in totals.items():
            column = by_column.get(str(column_key))
            if column is None:
                continue
            column.count += count
            column.total += total
            column.weighted += (total * probability.get(stage, 0)
                / 100).quantize(Decimal(1))
        return columns

    def summaries(self, columns=None):
        return [c.summary(self.show_money)
            for c in (columns or self.totalled_columns())]


class Board(Model):
    "What the pipeline board page reads and does."
    __name__ = 'crm.board'
    __string__ = "Pipeline Board"

    # --- Reading ---

    @classmethod
    def board(cls, mode, filters, start=None, limit=PAGE):
        "Every column with its totals and first cards, and what to filter on."
        view = View(mode, filters, start)
        columns = view.totalled_columns()
        pages = cls._pages(view, columns, 0, limit)
        for column in columns:
            column.extra['cards'], column.extra['more'] = pages[column.id]
        return {
            'mode': mode,
            'columns': view.summaries(columns),
            'cursor': utcnow().isoformat() + 'Z',
            'start': view.start,
            'can_move': view.can_move,
            'show_money': view.show_money,
            'options': cls.options(view.access),
            }

    @classmethod
    def more(cls, mode, column_id, filters, start=None, offset=0,
            limit=PAGE):
        "The next cards of one column."
        view = View(mode, filters, start)
        column = view.column(column_id)
        cards, more = cls._pages(view, [column], max(0, offset),
            max(1, min(limit, MAX_PAGE)))[column.id]
        return {'column': column_id, 'cards': cards, 'more': more}

    @classmethod
    def _pages(cls, view, columns, offset, limit, among=None):
        """{column id: (its cards from offset, whether it has more)}: a
        search of each column, then the cards of them all at once.
        among: only these ids (the live updates)."""
        Model_ = Pool().get(view.model_name)
        found = {}
        with check_access():
            for column in columns:
                domain = view.base_domain() + column.domain
                if among is not None:
                    domain.append(('id', 'in', among))
                found[column.id] = Model_.search(domain, offset=offset,
                    limit=limit + 1 if limit else None, order=view.order)
        records = [r for page in found.values() for r in page[:limit]]
        cards = cls.cards(view, records, {r.id: column_id
                for column_id, page in found.items() for r in page})
        by_id = {c['id']: c for c in cards}
        return {column_id: ([by_id[r.id] for r in page[:limit]],
                bool(limit) and len(page) > limit)
            for column_id, page in found.items()}

    @classmethod
    def cards(cls, view, records, column_of=None):
        "The cards of the records, in a few queries for them all."
        if not records:
            return []
        if view.mode == 'leads':
            return cls.lead_cards(view, records)
        return cls.deal_cards(view, records, column_of or {})

    # --- Cards ---

    @classmethod
    def deal_cards(cls, view, deals, column_of):
        pool = Pool()
        Deal = pool.get('crm.deal')
        Lead = pool.get('crm.lead')
        Party = pool.get('party.party')
        stages = {s.id: s for s in view.stages}
        # The plain values in one read (attributes would cost a lookup
        # each), the stamp of the desk's concurrency check with them.
        with without_check_access():
            rows = Deal.read([d.id for d in deals], DEAL_CARD_FIELDS)
        owners = user_names({r['owner'] for r in rows if r['owner']})
        lead_ids = list({r['lead'] for r in rows if r['lead']})
        bands = {}
        if lead_ids and view.access.band:
            # The band of the leads the user may read only.
            with check_access():
                bands = {l['id']: l['band'] for l in Lead.search_read(
                        [('id', 'in', lead_ids)], fields_names=['band'])}
        with without_check_access():
            customers = {p['id']: p['name'] for p in Party.read(
                    list({r['party'] for r in rows if r['party']}),
                    ['name'])}
        tasks = cls.next_tasks('deal', deals)
        badges = Deal.board_card_badges(deals)
        now = utcnow()
        cards = []
        for row in rows:
            stage = stages.get(row['stage']) or Pool().get('crm.stage')(
                row['stage'])
            entered = row['stage_entered_at']
            close = row['expected_close']
            cards.append({
                    'id': row['id'], 'model': 'crm.deal',
                    'title': row['title'],
                    'customer': customers.get(row['party']),
                    'value': str(row['value']) if view.access.value
                    else None,
                    'value_text': format_inr(row['value'])
                    if view.access.value else None,
                    'owner': {'id': row['owner'],
                        'name': owners.get(row['owner'])}
                    if row['owner'] else None,
                    'band': bands.get(row['lead']),
                    'stage': {'id': stage.id, 'name': stage.rec_name,
                        'kind': stage.kind},
                    'probability': stage.probability,
                    'expected_close': close.isoformat() if close else None,
                    'expected_close_text': close.strftime('%d %b %Y')
                    if close else None,
                    'days_in_stage': (now - entered).days
                    if entered else None,
                    'next_task': tasks.get(row['id']),
                    'badges': badges.get(row['id'], []),
                    'column': column_of.get(row['id'])
                    or view.column_of(stage, close),
                    'position': row['board_position'],
                    'timestamp': row['_timestamp'],
                    'desk_url': desk_url(Deal(row['id'])),
                    })
        return cards

    @classmethod
    def lead_cards(cls, view, leads):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Source = pool.get('crm.source')
        fields_names = LEAD_CARD_FIELDS + [name for name, allowed in [
                ('band', view.access.band), ('score', view.access.score),
                ('source', view.access.source)] if allowed]
        with without_check_access():
            rows = Lead.read([l.id for l in leads], fields_names)
            sources = {s['id']: s['name'] for s in Source.read(
                    list({r['source'] for r in rows if r.get('source')}),
                    ['name'])}
        owners = user_names({r['owner'] for r in rows if r['owner']})
        tasks = cls.next_tasks('lead', leads)
        now = utcnow()
        return [{
                'id': row['id'], 'model': 'crm.lead',
                'title': row['name'],
                'customer': row['company_name'],
                'value': str(row['budget']) if row['budget'] is not None
                else None,
                'value_text': format_inr(row['budget'])
                if row['budget'] is not None else None,
                'owner': {'id': row['owner'],
                    'name': owners.get(row['owner'])}
                if row['owner'] else None,
                'band': row.get('band'),
                'score': row.get('score'),
                'source': sources.get(row.get('source')),
                'city': row['city'],
                'status': row['status'],
                'days_in_stage': (now - row['create_date']).days
                if row['create_date'] else None,
                'next_task': tasks.get(row['id']),
                'badges': [],
                'column': row['status'],
                'timestamp': row['_timestamp'],
                'desk_url': desk_url(Lead(row['id'])),
                } for row in rows]

    @classmethod
    def next_tasks(cls, field_name, records):
        """{record id: its first open task (soonest due) the user may
        read}, as card JSON."""
        Task = Pool().get('crm.task')
        with check_access():
            tasks = Task.search_read([
                    (field_name, 'in', [r.id for r in records]),
                    ('state', '=', 'open'),
                    ], order=[('due', 'ASC NULLS LAST'), ('id', 'ASC')],
                fields_names=[field_name, 'name', 'kind', 'due'])
        first = {}
        for task in tasks:
            first.setdefault(task[field_name], task)
        kinds = dict(KINDS)
        now = utcnow()
        return {record_id: {'id': task['id'], 'name': task['name'],
                'kind': task['kind'], 'kind_label': kinds[task['kind']],
                'due': iso(task['due']),
                'due_text': Task(due=task['due']).due_text,
                'overdue': bool(task['due'] and task['due'] < now),
                'desk_url': desk_url(Task(task['id']))}
            for record_id, task in first.items()}

    @classmethod
    def options(cls, access):
        "What the filters offer: owners, teams, sources, bands."
        pool = Pool()
        Inbox = pool.get('crm.inbox')
        Team = pool.get('crm.team')
        Source = pool.get('crm.source')
        Lead = pool.get('crm.lead')
        with check_access():
            teams = Team.search_read([], order=[('name', 'ASC')],
                fields_names=['name'])
            sources = Source.search_read([], order=[('name', 'ASC')],
                fields_names=['name']) if access.source else []
        bands = dict(Lead.fields_get(['band'])['band']['selection'])
        return {
            'owners': [{'id': u['id'], 'name': u['name']}
                for u in Inbox.teammates()],
            'teams': [{'id': t['id'], 'name': t['name']} for t in teams],
            'sources': [{'id': s['id'], 'name': s['name']}
                for s in sources],
            'bands': [{'id': b, 'name': bands[b]} for b in BANDS]
            if access.band else [],
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
        stages = {s.id: s for s in View('deals', Filters()).stages}
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
        statuses = {c.id for c in View('leads', Filters()).columns()}
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
        view = View(mode, Filters.from_args(values.get('filters')),
            values.get('start'))
        card, = cls.cards(view, [record])
        return {'card': card, 'columns': view.summaries()}

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
        Model_ = Pool().get('crm.lead' if mode == 'leads' else 'crm.deal')
        since = parse_iso(cursor)
        with check_access():
            changed = Model_.search([('write_date', '>', since)],
                order=[('write_date', 'ASC'), ('id', 'ASC')], limit=limit)
        left, deleted = shown_changes(Model_, shown, since)
        if not changed and not left and not deleted:
            return cursor, None
        stamps = [r.write_date for r in changed] + list(left.values())
        # Exact to the microsecond: the next poll starts after the last one.
        next_cursor = max(stamps).isoformat() + 'Z' if stamps else cursor
        ids = list({r.id for r in changed} | set(left))
        view = View(mode, filters, start)
        columns = view.totalled_columns()
        pages = cls._pages(view, columns, 0, None, among=ids)
        cards = [card for page, _ in pages.values() for card in page]
        on_board = {c['id'] for c in cards}
        return next_cursor, {
            'cards': cards,
            'gone': sorted({i for i in ids if i not in on_board} | deleted),
            'columns': view.summaries(columns),
            }


def shown_changes(Model_, shown, since):
    """({id: write date} of the page's cards changed since, whoever may
    read them now, the ids of those deleted): the page knows their ids,
    and learns only that they left."""
    shown = list(shown)[:MAX_SHOWN]
    if not shown:
        return {}, set()
    table = Model_.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.id,
            Case((table.write_date > since, table.write_date)),
            where=table.id.in_(shown)))
    rows = list(cursor)
    changed = {i: at if isinstance(at, dt.datetime)
        else dt.datetime.fromisoformat(at) for i, at in rows if at}
    return changed, set(shown) - {i for i, _ in rows}


def user_names(ids):
    "{user id: name} (a user's rec_name is their name)."
    User = Pool().get('res.user')
    table = User.__table__()
    cursor = Transaction().connection.cursor()
    ids = list(ids)
    if not ids:
        return {}
    cursor.execute(*table.select(table.id, table.name,
            where=table.id.in_(ids)))
    return dict(cursor)


class FieldsRequired(InboxRefusal):
    "The stage requires fields the deal lacks: the page asks for them."

    def __init__(self, stage, fields_):
        super().__init__('fields_required', gettext(
                'kraya_crm.msg_board_fields_required', stage=stage.rec_name,
                fields=', '.join(f['string'] for f in fields_.values())),
            fields=list(fields_.values()))




def month_start(start=None):
    "The first day of the month 'YYYY-MM' (this month in India if None)."
    if start:
        try:
            return dt.date.fromisoformat(f'{start}-01')
        except ValueError:
            raise InboxRefusal('bad_month',
                gettext('kraya_crm.msg_board_bad_month', month=start))
    return local_today().replace(day=1)


def month_columns(start):
    """The forecast's columns: overdue closes (before the first month),
    FORECAST_MONTHS months from `start` ('YYYY-MM'), later ones, and deals
    without a date."""
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
