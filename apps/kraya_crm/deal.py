import datetime as dt
from decimal import Decimal

from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from .contact import format_inr
from .indexes import CoveredIndexes
from .lead import OwnedMixin


class Deal(OwnedMixin, CoveredIndexes, ModelSQL, ModelView):
    "Something a customer may buy, moving through the pipeline stages."
    __name__ = 'crm.deal'
    __string__ = "Deal"
    _rec_name = 'title'

    title = fields.Char("Title", required=True)
    lead = fields.Many2One(
        'crm.lead', "Lead", ondelete='SET NULL',
        domain=[('company', '=', Eval('company', -1))])
    party = fields.Many2One(
        'party.party', "Customer", ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    currency = fields.Many2One('currency.currency', "Currency", required=True)
    value = Monetary(
        "Value", currency='currency', digits='currency', required=True,
        help="The expected revenue; the sum of the lines when there are any.")
    value_text = fields.Function(fields.Char("Value (₹)"), 'get_value_text')
    stage = fields.Many2One(
        'crm.stage', "Stage", required=True, ondelete='RESTRICT')
    stage_kind = fields.Function(
        fields.Selection('get_stage_kinds', "Stage Kind"), 'on_change_with_stage_kind')
    probability = fields.Function(
        fields.Integer("Probability %"), 'on_change_with_probability')
    stage_entered_at = fields.Timestamp("In Stage Since", readonly=True)
    expected_close = fields.Date("Expected Close")
    lines = fields.One2Many('crm.deal.line', 'deal', "Lines")
    lost_reason = fields.Text(
        "Lost Reason",
        states={
            'invisible': Eval('stage_kind') != 'lost',
            'required': Eval('stage_kind') == 'lost',
            })
    stage_history = fields.One2Many(
        'crm.deal.stage_history', 'deal', "Stage History", readonly=True)
    tasks = fields.One2Many('crm.task', 'deal', "Tasks")
    messages = fields.One2Many(
        'crm.message', 'deal', "Timeline", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # The pipeline board reads deals by stage, then by owner.
        cls._sql_indexes.update({
                Index(t, (t.stage, Index.Equality()), (t.owner, Index.Range())),
                Index(t, (t.lead, Index.Range())),
                Index(t, (t.party, Index.Range())),
                })
        cls._order = [('expected_close', 'ASC NULLS LAST'), ('id', 'DESC')]

    @staticmethod
    def default_currency():
        pool = Pool()
        Company = pool.get('company.company')
        company = Transaction().context.get('company')
        if company is not None and company >= 0:
            return Company(company).currency.id

    @staticmethod
    def default_value():
        return Decimal(0)

    @staticmethod
    def default_stage():
        pool = Pool()
        Stage = pool.get('crm.stage')
        stage = Stage.first_open()
        return stage.id if stage else None

    @classmethod
    def get_stage_kinds(cls):
        pool = Pool()
        Stage = pool.get('crm.stage')
        return Stage.fields_get(['kind'])['kind']['selection']

    @fields.depends('stage')
    def on_change_with_stage_kind(self, name=None):
        return self.stage.kind if self.stage else None

    @fields.depends('stage')
    def on_change_with_probability(self, name=None):
        return self.stage.probability if self.stage else None

    def get_value_text(self, name):
        return format_inr(self.value) if self.value is not None else None

    @fields.depends('lines', 'value')
    def on_change_lines(self):
        if (total := self.lines_total()) is not None:
            self.value = total

    def lines_total(self):
        "The sum of the lines' amounts; None without a priced line."
        amounts = [l.amount for l in self.lines if l.amount is not None]
        return sum(amounts, Decimal(0)) if amounts else None

    @classmethod
    def value_from_lines(cls, deals):
        """Each deal's value becomes the sum of its lines, however they
        were saved: the desk sums them as they are typed, the API and
        imports save them as they come."""
        to_write = []
        for deal in deals:
            total = deal.lines_total()
            if total is not None and total != deal.value:
                to_write.extend(([deal], {'value': total}))
        if to_write:
            cls.write(*to_write)

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'create' or 'stage' in values:
            values.setdefault(
                'stage_entered_at', dt.datetime.now(dt.timezone.utc).replace(
                    tzinfo=None))
        return values

    @classmethod
    def create(cls, vlist):
        # Lines saved with their deal are summed once, after it.
        with Transaction().set_context(_crm_deal_saving_lines=True):
            deals = super().create(vlist)
        cls._record_stage_changes([(d, None, None) for d in deals])
        cls.value_from_lines(
            [d for d, v in zip(deals, vlist) if v.get('lines')])
        return deals

    @classmethod
    def write(cls, *args):
        moves = []
        actions = iter(args)
        for deals, values in zip(actions, actions):
            if 'stage' in values:
                moves.extend(
                    (d, d.stage, d.stage_entered_at) for d in deals
                    if d.stage.id != values['stage'])
        with Transaction().set_context(_crm_deal_saving_lines=True):
            super().write(*args)
        cls._record_stage_changes(moves)
        actions = iter(args)
        cls.value_from_lines(cls.browse({d.id
                    for deals, values in zip(actions, actions)
                    if 'lines' in values for d in deals}))

    @classmethod
    def board_card_badges(cls, deals):
        """The badges on each deal's card of the pipeline board:
        {deal id: [{'kind': str, 'text': str, 'tone': 'neutral', 'good',
        'warning' or 'bad'}, ...]}. Modules add theirs (the invoice and
        payment state) by extending it and calling super()."""
        return {deal.id: [] for deal in deals}

    @classmethod
    def _record_stage_changes(cls, moves):
        "Write who moved which deal to which stage, and how long it sat before."
        pool = Pool()
        History = pool.get('crm.deal.stage_history')
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        user = Transaction().user or None
        # The history is the system's record of the move: reps only read it.
        with without_check_access():
            History.save([History(
                        deal=deal,
                        from_stage=from_stage,
                        to_stage=deal.stage,
                        changed_by=user,
                        changed_at=now,
                        time_in_previous=(now - entered) if entered else None,
                        ) for deal, from_stage, entered in moves])


class DealLine(ModelSQL, ModelView):
    "A product or service offered in a deal."
    __name__ = 'crm.deal.line'
    __string__ = "Deal Line"
    deal = fields.Many2One(
        'crm.deal', "Deal", required=True, ondelete='CASCADE')
    product = fields.Many2One('product.product', "Product")
    description = fields.Char("Description")
    quantity = fields.Float("Quantity", digits=(16, 2), required=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    unit_price = Monetary(
        "Unit Price", currency='currency', digits=(16, 2), required=True)
    amount = fields.Function(
        Monetary("Amount", currency='currency', digits='currency'),
        'on_change_with_amount')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.deal, Index.Range())))

    @staticmethod
    def default_quantity():
        return 1

    @classmethod
    def on_modification(cls, mode, lines, field_names=None):
        super().on_modification(mode, lines, field_names)
        if (mode != 'delete'
                and not Transaction().context.get('_crm_deal_saving_lines')):
            Deal = Pool().get('crm.deal')
            Deal.value_from_lines(Deal.browse({l.deal.id for l in lines}))

    @classmethod
    def on_delete(cls, lines):
        callbacks = super().on_delete(lines)
        if not Transaction().context.get('_crm_deal_saving_lines'):
            Deal = Pool().get('crm.deal')
            deal_ids = {l.deal.id for l in lines}
            callbacks.append(
                lambda: Deal.value_from_lines(Deal.browse(deal_ids)))
        return callbacks

    @fields.depends('deal', '_parent_deal.currency')
    def on_change_with_currency(self, name=None):
        return self.deal.currency if self.deal else None

    @fields.depends('product', 'description', 'unit_price')
    def on_change_product(self):
        if not self.product:
            return
        if not self.description:
            self.description = self.product.rec_name
        if self.unit_price is None and self.product.list_price is not None:
            self.unit_price = self.product.list_price

    @fields.depends('quantity', 'unit_price')
    def on_change_with_amount(self, name=None):
        if self.quantity is None or self.unit_price is None:
            return None
        return (Decimal(str(self.quantity)) * self.unit_price).quantize(
            Decimal('0.01'))


class StageHistory(ModelSQL, ModelView):
    "A deal entering a stage: who moved it, when, and how long it sat before."
    __name__ = 'crm.deal.stage_history'
    __string__ = "Deal Stage Change"
    deal = fields.Many2One(
        'crm.deal', "Deal", required=True, ondelete='CASCADE')
    from_stage = fields.Many2One('crm.stage', "From Stage", ondelete='RESTRICT')
    to_stage = fields.Many2One(
        'crm.stage', "To Stage", required=True, ondelete='RESTRICT')
    changed_by = fields.Many2One('res.user', "Changed By")
    changed_at = fields.Timestamp("Changed At", required=True)
    time_in_previous = fields.TimeDelta(
        "Time in Previous Stage",
        help="How long the deal sat in the stage it left.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.deal, Index.Range())))
        cls._order = [('changed_at', 'DESC'), ('id', 'DESC')]
