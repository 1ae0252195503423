"""GST invoicing on the running demo site, over the real JSON-RPC as each
role: the rep makes the quotation but cannot post (Tryton's Sales group
reads invoices, it does not post them); the accountant posts,
prints and sends the invoice, reads deals and cannot edit leads; the
demo's four invoiced deals show their payment state."""
import base64

from kraya_crm.invoice_send import TEMPLATE, TEMPLATE_BODY
from kraya_crm.tests.tools import document_text, keep_picture

from .conftest import eventually
# The roles' sessions and the check of a refusal, as the rules test has them.
from .test_record_rules_rpc import accountant, refused, rep  # noqa: F401


def demo_deal(session, customer):
    "The demo's invoiced deal of `customer` (see demo_invoicing.INVOICED)."
    deal, = session.search_read('crm.deal', [('party.name', '=', customer)],
        ['invoice_state', 'amount_due', 'paid_on', 'sale', 'lead'])
    return deal


def test_demo_deals_show_their_payment_state(accountant):
    states = {name: demo_deal(accountant, name)['invoice_state'] for name in [
            "Patel Constructions", "Nair Infotech", "Sneha Joshi",
            "Kulkarni Foods"]}
    assert states == {"Patel Constructions": 'paid', "Nair Infotech": 'posted',
        "Sneha Joshi": 'paid', "Kulkarni Foods": 'partly_paid'}
    part_paid = demo_deal(accountant, "Kulkarni Foods")
    # ₹1,50,000 + 18 % = ₹1,77,000, of which ₹50,000 paid.
    assert part_paid['amount_due'] == {'__class__': 'Decimal',
        'decimal': '127000.00'}
    assert demo_deal(accountant, "Patel Constructions")['paid_on']


def test_rep_makes_the_quotation_but_cannot_post_the_invoice(
        rep, accountant, crm_site):
    party, = rep.search('party.party', [('name', '=', "Patel Constructions")])
    product, = rep.search('product.product',
        [('name', '=', "Brokerage on sale of property")])
    deal, = rep.model('crm.deal', 'create', [{
                'title': "Patel Constructions: second flat", 'party': party,
                'lines': [['create', [{'product': product, 'quantity': 1,
                                'unit_price': {'__class__': 'Decimal',
                                    'decimal': '200000'}}]]],
                }])
    rep.model('crm.deal', 'create_quotation', [deal])
    sale = rep.model('crm.deal', 'read', [deal], ['sale'])[0]['sale']
    rep.model('sale.sale', 'quote', [sale])
    rep.model('sale.sale', 'confirm', [sale])
    # The worker processes the confirmed sale into its draft invoice.
    invoice = eventually(lambda: accountant.search('account.invoice', [
                ('lines.origin.sale', '=', sale, 'sale.line'),
                ]), timeout=60)[0]
    with refused():
        rep.model('account.invoice', 'post', [invoice])
    accountant.model('account.invoice', 'post', [invoice])
    values, = accountant.model('account.invoice', 'read', [invoice],
        ['state', 'number', 'total_amount'])
    assert values['state'] == 'posted'
    assert values['number'].startswith('INV/')
    assert values['total_amount'] == {'__class__': 'Decimal',
        'decimal': '236000.00'}
    deal_values, = rep.model('crm.deal', 'read', [deal],
        ['invoice_state', 'stage.kind'])
    assert deal_values['invoice_state'] == 'posted'
    assert deal_values['stage.']['kind'] == 'won'


def test_accountant_reads_deals_and_parties_but_cannot_edit_leads(
        accountant, crm_site):
    assert accountant.search('crm.deal', [], limit=1)
    assert accountant.search('party.party', [], limit=1)
    lead, = accountant.search('crm.lead', [], limit=1)
    with refused():
        accountant.model('crm.lead', 'write', [lead], {'city': "Nagpur"})


def test_accountant_prints_the_rule_46_invoice(accountant):
    deal = demo_deal(accountant, "Nair Infotech")
    invoice, = accountant.search('account.invoice', [
            ('party.name', '=', "Nair Infotech")])
    extension, content, _, name = accountant.call(
        'report.account.invoice.gst.execute', [invoice], {},
        accountant.context)
    assert extension == 'pdf'
    pdf = base64.b64decode(content['base64'])
    keep_picture(pdf, 'gst-invoice-demo-inter-state')
    text = document_text(extension, pdf)
    for expected in ["TAX INVOICE", "Shree Ganesh Realty Pvt Ltd",
            "Nair Infotech", "29AABCN1234K1ZH", "9972", "IGST 18%",
            "₹27,000.00", "₹1,77,000.00",
            "Place of supply: Karnataka (29)", "Reverse charge: No",
            "Rupees One Lakh Seventy Seven Thousand Only", "Pay by UPI",
            "Authorised signatory"]:
        assert expected in text, expected
    assert deal['invoice_state'] == 'posted'


def test_send_on_whatsapp_queues_the_pdf_as_a_utility_template(
        accountant, admin, crm_site):
    crm_site.whatsapp.set_templates([{'name': TEMPLATE, 'language': 'en',
                'category': 'UTILITY', 'header': 'DOCUMENT',
                'body': TEMPLATE_BODY}])
    invoice, = accountant.search('account.invoice', [
            ('party.name', '=', "Nair Infotech")])
    accountant.model('account.invoice', 'send_whatsapp', [invoice])
    message, = admin.search_read('crm.message', [
            ('kind', 'in', ['document', 'template']),
            ('template_name', '=', TEMPLATE)],
        ['status', 'kind', 'media.name', 'template_parameters'])
    assert message['media.']['name'].endswith('.pdf')
    # The lead never wrote: the window is closed, so the template goes.
    sent = eventually(lambda: [m for m in crm_site.whatsapp.sent
            if m['type'] == 'template'
            and m['template']['name'] == TEMPLATE], timeout=60)
    assert sent[-1]['media']['kind'] == 'document'
    assert sent[-1]['media']['mime_type'] == 'application/pdf'
    assert sent[-1]['template']['parameters'][0] == "Nair Infotech"
    assert eventually(lambda: admin.model('crm.message', 'read',
            [message['id']], ['status'])[0]['status'] in {'sent',
            'delivered', 'read'}, timeout=60)
