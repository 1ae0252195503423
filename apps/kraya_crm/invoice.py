"""From a won deal to a paid GST invoice, with Tryton's own sale and
invoicing doing the accounting.

"Create Quotation" makes a sale.sale of the deal's lines (its origin is
the deal); confirming that quotation marks the deal won, and the sale
makes its invoice, which the accountant posts and records payments on.
The deal only reads back what the accounts say: the invoice's state, the
amount due and when it was paid. A posted invoice is never deleted: a
deal that is lost after invoicing needs its credit note first."""
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import Index, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval, If
from trytond.rpc import RPC
from trytond.transaction import without_check_access

from .contact import format_inr
from .exceptions import DealInvoicedError, QuotationError

INVOICE_STATES = [
    (None, ""),
    ('quotation', "Quotation"),
    ('to_invoice', "To invoice"),
    ('draft', "Invoice draft"),
    ('posted', "Invoice posted"),
    ('partly_paid', "Partly paid"),
    ('paid', "Paid"),
    ('credited', "Credited"),
    ]
# The board card's badge tone of each state.
BADGE_TONES = {
    'quotation': 'neutral', 'to_invoice': 'warning', 'draft': 'neutral',
    'posted': 'warning', 'partly_paid': 'warning', 'paid': 'good',
    'credited': 'bad',
    }


class Deal(metaclass=PoolMeta):
    __name__ = 'crm.deal'
    sale = fields.Many2One('sale.sale', "Quotation", readonly=True,
        ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        help="The quotation (a Tryton sale) made from the deal's lines.")
    invoices = fields.Function(fields.Many2Many(
            'account.invoice', None, None, "Invoices",
            help="The sale's invoices and their credit notes."),
        'get_invoicing')
    invoice_state = fields.Function(fields.Selection(
            INVOICE_STATES, "Invoicing"), 'get_invoicing')
    amount_invoiced = fields.Function(Monetary("Invoiced",
            currency='currency', digits='currency'), 'get_invoicing')
    amount_due = fields.Function(Monetary("Amount Due",
            currency='currency', digits='currency'), 'get_invoicing')
    paid_on = fields.Function(fields.Date("Paid On",
            help="When the last payment settled the invoices."),
        'get_invoicing')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.sale, Index.Range())))
        # The board reads its cards' badges (the base may register it too).
        cls.__rpc__.setdefault('board_card_badges',
            RPC(instantiate=0, readonly=True))
        cls._buttons.update({
                'create_quotation': {
                    'invisible': Bool(Eval('sale')),
                    'readonly': ~Eval('party') | ~Eval('lines', []),
                    'depends': ['sale', 'party', 'lines'],
                    },
                'open_quotation': {
                    'invisible': ~Eval('sale'),
                    'depends': ['sale'],
                    },
                })

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//label[@id="won_hint"]', 'states', {
                    'invisible': (Eval('stage_kind') != 'won')
                    | Bool(Eval('sale')),
                    }),
            ]

    @classmethod
    def copy(cls, deals, default=None):
        default = dict(default or {})
        default.setdefault('sale', None)
        return super().copy(deals, default=default)

    @classmethod
    @ModelView.button_action('kraya_crm.act_deal_quotation')
    def create_quotation(cls, deals):
        "Create Quotation, then open it."
        cls.make_quotations(deals)
        return cls._show_quotations(deals)

    @classmethod
    @ModelView.button_action('kraya_crm.act_deal_quotation')
    def open_quotation(cls, deals):
        return cls._show_quotations(deals)

    @classmethod
    def _show_quotations(cls, deals):
        "The deals' quotations to open: one opens as its form, ready to Quote."
        ModelData = Pool().get('ir.model.data')
        sales = [d.sale.id for d in cls.browse(deals) if d.sale]
        views = [(ModelData.get_id('sale', f'sale_view_{type_}'), type_)
            for type_ in ['tree', 'form']]
        if len(sales) == 1:
            views.reverse()
        return {'res_id': sales, 'views': views}

    @classmethod
    def make_quotations(cls, deals):
        """A draft sale of each deal's lines for its customer, with the taxes
        of its place of supply; deals that have one keep it."""
        pool = Pool()
        Sale = pool.get('sale.sale')
        deals = [d for d in deals if not d.sale]
        for deal in deals:
            if not deal.party or not deal.lines:
                raise QuotationError(gettext(
                        'kraya_crm.msg_quotation_needs_party_and_lines',
                        deal=deal.rec_name))
        sales = [deal._quotation() for deal in deals]
        Sale.save(sales)
        for deal, sale in zip(deals, sales):
            deal.sale = sale
        cls.save(deals)
        return sales

    def _quotation(self):
        pool = Pool()
        Sale = pool.get('sale.sale')
        SaleLine = pool.get('sale.line')
        sale = Sale(company=self.company, party=self.party,
            currency=self.currency, origin=self, description=self.title)
        sale.on_change_party()
        lines = []
        for deal_line in self.lines:
            line = SaleLine(sale=sale, type='line',
                product=deal_line.product, quantity=deal_line.quantity)
            line.on_change_product()
            line.description = deal_line.description or (
                deal_line.product.rec_name if deal_line.product else None)
            if not line.product:
                line.taxes = line.compute_taxes(sale.party)
            # The taxable value is after the deal's discount (Rule 46).
            line.unit_price = deal_line.net_unit_price
            lines.append(line)
        sale.lines = lines
        return sale

    @classmethod
    def get_invoicing(cls, deals, names):
        result = {name: {} for name in names}
        for deal in deals:
            for name, value in deal._invoicing().items():
                if name in result:
                    result[name][deal.id] = value
        return result

    def _invoicing(self):
        "The invoices of the deal's sale and what they say of payment."
        pool = Pool()
        InvoiceLine = pool.get('account.invoice.line')
        zero = Decimal(0)
        values = {'invoices': [], 'invoice_state': None,
            'amount_invoiced': None, 'amount_due': None, 'paid_on': None}
        sale = self.sale
        if not sale:
            return values
        if sale.state in {'draft', 'quotation'}:
            values['invoice_state'] = 'quotation'
            return values
        # A posted invoice cancelled by its credit note keeps its move.
        invoices = [i for i in sale.invoices
            if i.state != 'cancelled' or i.move]
        lines = [l.id for i in invoices for l in i.lines]
        credit_notes = sorted({l.invoice for l in InvoiceLine.search([
                        ('origin', 'in', [
                                f'account.invoice.line,{l}' for l in lines]),
                        ('invoice.state', '!=', 'cancelled'),
                        ])}, key=lambda i: i.id) if lines else []
        values['invoices'] = [i.id for i in invoices + credit_notes]
        if not invoices:
            values['invoice_state'] = 'to_invoice'
            return values
        posted = [i for i in invoices if i.state in {'posted', 'paid'}]
        values['amount_invoiced'] = sum(
            (i.total_amount for i in invoices + credit_notes), zero)
        values['amount_due'] = sum(
            (i.amount_to_pay for i in posted + credit_notes
                if i.state == 'posted'), zero)
        if credit_notes and values['amount_invoiced'] <= 0:
            state = 'credited'
        elif any(i.state in {'draft', 'validated'} for i in invoices):
            state = 'draft'
        elif all(i.state == 'paid' for i in posted):
            state = 'paid'
            values['paid_on'] = max(
                (i.reconciled for i in posted if i.reconciled), default=None)
        elif values['amount_due'] < values['amount_invoiced']:
            state = 'partly_paid'
        else:
            state = 'posted'
        values['invoice_state'] = state
        return values

    @classmethod
    def board_card_badges(cls, deals):
        "The pipeline board's badges of each deal, with its invoice state."
        badges = super().board_card_badges(deals)
        for deal in deals:
            state = deal.invoice_state
            if not state:
                continue
            text = dict(INVOICE_STATES)[state]
            if state in {'posted', 'partly_paid'} and deal.amount_due:
                text = gettext('kraya_crm.msg_badge_amount_due',
                    state=text, amount=format_inr(deal.amount_due))
            badges.setdefault(deal.id, []).append({
                    'kind': 'invoice', 'text': text,
                    'tone': BADGE_TONES[state]})
        return badges

    @classmethod
    def write(cls, *args):
        pool = Pool()
        Stage = pool.get('crm.stage')
        actions = iter(args)
        for deals, values in zip(actions, actions):
            if values.get('stage') and Stage(values['stage']).kind == 'lost':
                cls.check_no_open_invoice(deals)
        super().write(*args)

    @classmethod
    def delete(cls, deals):
        cls.check_no_open_invoice(deals)
        super().delete(deals)

    @classmethod
    def check_no_open_invoice(cls, deals):
        "A posted invoice is cancelled by its credit note, not by the deal."
        for deal in deals:
            if deal.invoice_state in {'posted', 'partly_paid', 'paid'}:
                raise DealInvoicedError(gettext(
                        'kraya_crm.msg_deal_invoiced',
                        deal=deal.rec_name,
                        invoice=', '.join(i.rec_name for i in deal.invoices)))


class DealLine(metaclass=PoolMeta):
    __name__ = 'crm.deal.line'
    discount = fields.Numeric("Discount %", digits=(5, 2),
        domain=[If(Eval('discount'),
                [('discount', '>=', 0), ('discount', '<=', 100)], [])],
        help="Taken off the unit price: the invoice shows the taxable value "
        "after it.")
    net_unit_price = fields.Function(Monetary("Net Unit Price",
            currency='currency', digits=(16, 4)), 'on_change_with_net_unit_price')

    @fields.depends('unit_price', 'discount')
    def on_change_with_net_unit_price(self, name=None):
        if self.unit_price is None:
            return None
        discount = (self.discount or Decimal(0)) / 100
        return (self.unit_price * (1 - discount)).quantize(Decimal('0.0001'))

    @fields.depends('quantity', 'unit_price', 'discount')
    def on_change_with_amount(self, name=None):
        if self.quantity is None or self.unit_price is None:
            return None
        return (Decimal(str(self.quantity))
            * self.on_change_with_net_unit_price()).quantize(Decimal('0.01'))


class Sale(metaclass=PoolMeta):
    __name__ = 'sale.sale'
    crm_deals = fields.One2Many('crm.deal', 'sale', "Deals", readonly=True)

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['crm.deal']

    @classmethod
    def confirm(cls, sales):
        "A confirmed quotation is a won deal."
        super().confirm(sales)
        pool = Pool()
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        won = Stage.search([('kind', '=', 'won')], limit=1)
        deals = [d for s in sales for d in s.crm_deals
            if d.stage.kind != 'won']
        if won and deals:
            # The sale decided it: whoever may confirm it moves its deals.
            with without_check_access():
                Deal.write(deals, {'stage': won[0].id})
