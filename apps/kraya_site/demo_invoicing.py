"""The demo's invoicing: the products get their GST rate and SAC code,
the company its UPI ID, and four won deals are already invoiced as an
accountant would have done it: one within Maharashtra (CGST + SGST, paid
by bank), one to Karnataka (IGST, posted and due), one to a walk-in buyer
without a GSTIN (paid in cash) and one part-paid.

Called from demo.load, inside its transaction (trytond is imported)."""
import datetime as dt
from decimal import Decimal

from trytond.pool import Pool
from trytond.transaction import Transaction

UPI_ID = 'shreeganesh@okhdfc'
# demo product name: (GST rate category, SAC code)
PRODUCT_TAXES = {
    "1 BHK, Kandivali East": ("GST 5%", '995411'),
    "2 BHK, Powai": ("GST 5%", '995411'),
    "3 BHK, Andheri West": ("GST 5%", '995411'),
    "Shop, Thane West": ("GST 18%", '995412'),
    "Home loan assistance": ("GST 18%", '997159'),
    }
BROKERAGE = ("Brokerage on sale of property", Decimal('150000'), "GST 18%",
    '997222')
# name, phone, city, state, GSTIN, what happened, quantity x product
INVOICED = [
    ("Patel Constructions", '+919820011001', "Mumbai", 'IN-MH',
        '27AAGCP4321R1ZY', 'paid', 'brokerage'),
    ("Nair Infotech", '+919845022002', "Bengaluru", 'IN-KA',
        '29AABCN1234K1ZH', 'posted', 'brokerage'),
    ("Sneha Joshi", '+919930033003', "Thane", 'IN-MH',
        None, 'paid_cash', "Home loan assistance"),
    ("Kulkarni Foods", '+919822044004', "Pune", 'IN-MH',
        '27AAHCK5678M1ZQ', 'part_paid', 'brokerage'),
    ]
PART_PAYMENT = Decimal('50000')


def load_invoicing(company, users):
    "The demo's GST rates, UPI ID and four invoiced won deals."
    pool = Pool()
    Company = pool.get('company.company')
    Company.write([company], {'upi_vpa': UPI_ID})
    brokerage = set_product_taxes()
    deals = won_deals(company, users, brokerage)
    invoice(deals)
    load_invoice_template()


def load_invoice_template():
    """The approved utility template invoices go as outside WhatsApp's
    24-hour window, its document header carrying the PDF."""
    from kraya_crm.invoice_send import TEMPLATE, TEMPLATE_BODY
    Template = Pool().get('crm.whatsapp.template')
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    Template.create([dict(Template._catalogue_values({
                        'name': TEMPLATE, 'language': 'en',
                        'category': 'UTILITY', 'status': 'APPROVED',
                        'components': [
                            {'type': 'HEADER', 'format': 'DOCUMENT'},
                            {'type': 'BODY', 'text': TEMPLATE_BODY}],
                        }), synced_at=now)])


def set_product_taxes():
    "Each demo product's rate and code; the brokerage service, made."
    pool = Pool()
    Template = pool.get('product.template')
    Category = pool.get('product.category')
    Uom = pool.get('product.uom')
    categories = {c.name: c for c in Category.search([('accounting', '=', True)])}
    templates = Template.search([('name', 'in', list(PRODUCT_TAXES))])
    unit, = Uom.search([('symbol', '=', 'u')], limit=1)
    for template in templates:
        category, code = PRODUCT_TAXES[template.name]
        template.account_category = categories[category]
        template.hsn_sac = code
        template.salable = True
        template.sale_uom = unit
    name, price, category, code = BROKERAGE
    brokerage = Template(name=name, type='service', list_price=price,
        default_uom=unit, salable=True, sale_uom=unit,
        account_category=categories[category], hsn_sac=code, products=[{}])
    Template.save(templates + [brokerage])
    return brokerage.products[0]


def won_deals(company, users, brokerage):
    """A converted lead per customer, with its GSTIN, and its deal's
    quotation confirmed: the deals are won."""
    pool = Pool()
    Lead = pool.get('crm.lead')
    Deal = pool.get('crm.deal')
    Line = pool.get('crm.deal.line')
    Product = pool.get('product.product')
    Party = pool.get('party.party')
    Identifier = pool.get('party.identifier')
    Subdivision = pool.get('country.subdivision')
    Sale = pool.get('sale.sale')
    states = {s.code: s for s in Subdivision.search(
            [('code', 'in', [c[3] for c in INVOICED])])}
    leads = Lead.create([{
                'name': name, 'company_name': name, 'phone': phone,
                'whatsapp': phone, 'city': city,
                'subdivision': states[state].id,
                'owner': users['rep'].id,
                } for name, phone, city, state, *_ in INVOICED])
    Lead.opt_in(leads, 'whatsapp', 'manual',
        "Asked for the invoice on WhatsApp")
    deals = Lead.convert_to_deals(leads)
    for deal, (name, _, _, _, gstin, _, product) in zip(deals, INVOICED):
        party = deal.party
        party.gst_registration = 'regular' if gstin else 'unregistered'
        if gstin:
            party.identifiers += (Identifier(type='in_vat', code=gstin),)
        if product == 'brokerage':
            product, quantity = brokerage, 1
        else:
            product, = Product.search([('rec_name', '=', product)], limit=1)
            quantity = 1
        price = product.template.list_price
        deal.title = f"{name}: {product.rec_name}"
        deal.lines = [Line(product=product, description=product.rec_name,
                quantity=quantity, unit_price=price)]
        deal.value = price * quantity
        Party.save([party])
    Deal.save(deals)
    sales = Deal.make_quotations(deals)
    Sale.quote(sales)
    Sale.confirm(sales)
    # Confirming queues the sales' processing for the worker; the demo
    # wants its invoices now (processing twice does nothing more).
    Sale.process(sales)
    return deals


def invoice(deals):
    "Post each deal's invoice and record the payments the story says."
    pool = Pool()
    Invoice = pool.get('account.invoice')
    Method = pool.get('account.invoice.payment.method')
    MoveLine = pool.get('account.move.line')
    Date = pool.get('ir.date')
    today = Date.today()
    methods = {m.name: m for m in Method.search([])}
    invoices = [d.sale.invoices[0] for d in deals]
    Invoice.write(invoices, {'invoice_date': today - dt.timedelta(days=3)})
    Invoice.post(invoices)
    for invoice, (*_, story, _) in zip(invoices, INVOICED):
        if story == 'posted':
            continue
        method = methods["Cash" if story == 'paid_cash'
            else "Bank transfer / UPI"]
        amount = (PART_PAYMENT if story == 'part_paid'
            else invoice.amount_to_pay)
        invoice.pay_invoice(amount, method, today)
        if story != 'part_paid':
            invoice = Invoice(invoice.id)
            MoveLine.reconcile([l for l in invoice.lines_to_pay
                    + tuple(invoice.payment_lines) if not l.reconciliation])
    with Transaction().set_context(_check_access=False):
        Invoice.process(invoices)
