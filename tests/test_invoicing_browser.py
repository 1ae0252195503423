"""GST invoicing through the desk, at desktop and phone size, as users do
it: the demo rep opens a deal of a registered customer in Karnataka (IGST)
with a brokerage line, clicks Create Quotation, then Quote and Confirm on
the sale (the deal is won and gets its draft invoice); the accountant
opens that invoice in Financial › Invoices › Customer Invoices, posts it
(INV/ numbering), records a part payment with the Pay wizard and reads
the deal's Invoicing tab: Partly paid, with the amount due. Screenshots
tests/screenshots/invoicing-<viewport>-<step>.png."""
import re
import secrets
from decimal import Decimal

import pytest
from playwright.sync_api import expect
from stdnum import luhn

from .conftest import desk_login, eventually, until
# The roles' sessions, as the rules test has them.
from .test_record_rules_rpc import accountant, rep  # noqa: F401
from .test_webhooks_browser import VIEWPORTS, open_menu

# Brokerage at ₹1,00,000 to Karnataka from Maharashtra: + IGST 18 %.
PRICE = Decimal('100000')
TOTAL = Decimal('118000')
PAID = Decimal('40000')


def decimal(value):
    return {'__class__': 'Decimal', 'decimal': str(value)}


def gstin(state_code, number):
    "A GSTIN of the state whose check character is right."
    code = f'{state_code}AABCK{number:04d}L1Z'
    return code + luhn.calc_check_digit(
        code, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ')


def new_deal(rep, customer, title):
    """The rep's open deal for a new registered customer in Karnataka,
    with a line of the demo's brokerage (GST 18 %)."""
    state, = rep.search('country.subdivision', [('code', '=', 'IN-KA')])
    country, = rep.search('country.country', [('code', '=', 'IN')])
    party, = rep.model('party.party', 'create', [{
                'name': customer, 'gst_registration': 'regular',
                'addresses': [['create', [{'city': "Bengaluru",
                                'subdivision': state, 'country': country}]]],
                'identifiers': [['create', [{'type': 'in_vat',
                                'code': gstin(29, secrets.randbelow(10000))}]]],
                }])
    product, = rep.search('product.product',
        [('name', '=', "Brokerage on sale of property")])
    deal, = rep.model('crm.deal', 'create', [{
                'title': title, 'party': party,
                'lines': [['create', [{'product': product, 'quantity': 1,
                                'unit_price': decimal(PRICE)}]]],
                }])
    values, = rep.model('crm.deal', 'read', [deal],
        ['owner.login', 'stage.kind'])
    assert values['owner.']['login'] == 'rep'
    assert values['stage.']['kind'] == 'open'
    return deal


def rows(tab, text):
    return tab.locator('.content-box table.tree tbody > tr', has_text=text)


def active_tab(page):
    "The desk's tab on show (a form's notebook has tab panes of its own)."
    return page.locator('#tabcontent > .tab-pane.active')


def click_button(page, name):
    "A button of the active tab's form, by its label."
    tab = active_tab(page)
    tab.get_by_role('button', name=name, exact=True).click()


def open_record(page, crm_site, model, record_id):
    """Open a record at its desk address, as the board's cards and the
    inbox link to it (on a phone sao hides the lists' search box)."""
    page.goto(f'{crm_site.url}/#{crm_site.database}/model/{model}/'
        f'{record_id}')


def rupees(amount):
    "An amount as the desk shows it: ₹1,18,000 is 1,18,000.00."
    whole = f'{int(amount):d}'
    head, tail = whole[:-3], whole[-3:]
    groups = []
    while head:
        groups.insert(0, head[-2:])
        head = head[:-2]
    return ','.join(groups + [tail]) + '.00'


def pay(page, amount, method, screenshot):
    """The invoice's Pay wizard: part of the amount due by method, the
    rest left due (Partial Payment); the screenshot of its form filled."""
    click_button(page, 'Pay')
    dialog = page.locator('.modal-dialog:visible').last
    shown = dialog.locator('input[name="amount"][type="text"]')
    # The wizard proposes the amount due: typed before, it is replaced.
    expect(shown).not_to_have_value('')
    # The payee comes with the wizard's defaults. sao edits a number in an
    # input of its own, shown on focus; it may take the focus back to the
    # first field while it finishes drawing the form (with both CI halves
    # running, the payee was not even focused yet when the form showed).
    expect(dialog.locator('input[name="payee"]')).not_to_have_value('')
    edited = dialog.locator('input[name="amount"][type="number"]')
    until(shown.focus, expect(edited).to_be_focused)
    edited.fill(str(amount))
    edited.press('Tab')
    expect(shown).to_have_value(rupees(amount))
    dialog.locator('select[name="payment_method"]').select_option(
        label=method)
    page.screenshot(path=str(screenshot))
    dialog.get_by_role('button', name='OK').click()
    dialog = page.locator('.modal-dialog:visible').last
    expect(dialog.locator('select[name="type"]')).to_have_value('"partial"')
    press_until_closed(page, dialog, 'OK')


def press_until_closed(page, dialog, button):
    "Press a wizard's last button until its dialog closes."
    until(lambda: dialog.get_by_role('button', name=button).click(),
        lambda timeout: expect(page.locator('.modal-dialog:visible')
            ).to_have_count(0, timeout=timeout))


def press_until(page, button, done):
    """Press a form's button until done (an expectation, given a timeout)
    holds: sao may not take a press while it still draws the form."""
    until(lambda: active_tab(page).get_by_role('button', name=button,
            exact=True).click(timeout=5_000), done)


def press_until_asked(page, button, question):
    "Press a form's button until sao asks its question."
    press_until(page, button, expect(page.locator(
                '.modal-dialog:visible', has_text=question)).to_be_visible)


def answer(page, question, button):
    "Answer sao's dialog that asks question by its button."
    dialog = page.locator('.modal-dialog:visible').last
    expect(dialog).to_contain_text(question)
    dialog.get_by_role('button', name=button, exact=True).click()
    expect(page.locator('.modal-dialog:visible')).to_have_count(0)


@pytest.mark.parametrize('viewport', VIEWPORTS)
def test_rep_quotes_and_accountant_posts_and_part_pays(
        crm_site, rep, accountant, chromium_browser, screenshots, viewport):
    width, height = VIEWPORTS[viewport]
    token = secrets.token_hex(3)
    customer = f"Kaveri Traders {token}"
    title = f"{customer}: brokerage"
    deal = new_deal(rep, customer, title)
    errors = []

    def shot(page, step):
        page.screenshot(
            path=str(screenshots / f'invoicing-{viewport}-{step}.png'))

    def new_page(login):
        context = chromium_browser.new_context(
            viewport={'width': width, 'height': height})
        context.set_default_timeout(20_000)
        expect.set_options(timeout=20_000)
        page = context.new_page()
        page.on('pageerror', lambda error: errors.append(error.message))
        desk_login(page, crm_site, login)
        return context, page

    # The rep: the deal's quotation, quoted and confirmed.
    context, page = new_page('rep')
    try:
        open_record(page, crm_site, 'crm.deal', deal)
        tab = active_tab(page)
        expect(tab.locator('input[name="title"]:visible')).to_have_value(title)
        shot(page, 'deal')
        # It opens the quotation made, as a form. A second press is safe:
        # a deal that has its quotation keeps it.
        press_until(page, 'Create Quotation',
            lambda timeout: expect(active_tab(page)).to_contain_text(
                f"Quotation ({title})", timeout=timeout))
        sale = active_tab(page)
        expect(sale.locator('input[name="description"]:visible')
            ).to_have_value(title)
        shot(page, 'quotation')
        state = sale.locator('select[name="state"]')
        press_until(page, 'Quote', lambda timeout: expect(state
                ).to_have_value(re.compile('quotation'), timeout=timeout))
        press_until(page, 'Confirm', lambda timeout: expect(state
                ).to_have_value(re.compile('confirmed|processing'),
                timeout=timeout))
        shot(page, 'sale')
    except Exception:
        shot(page, 'failed-rep')
        raise
    finally:
        context.close()
    values, = rep.model('crm.deal', 'read', [deal],
        ['stage.kind', 'sale', 'invoice_state'])
    assert values['stage.']['kind'] == 'won'
    # The worker processes the confirmed sale into its draft invoice.
    invoice, = eventually(lambda: accountant.search('account.invoice', [
                ('lines.origin.sale', '=', values['sale'], 'sale.line'),
                ('state', '=', 'draft')]), timeout=60)

    # The accountant: the invoice posted and part paid, the deal read.
    context, page = new_page('accountant')
    try:
        open_menu(page, 'Financial', 'Invoices', 'Customer Invoices')
        expect(rows(active_tab(page), '').first).to_be_visible()
        shot(page, 'invoices')
        open_record(page, crm_site, 'account.invoice', invoice)
        invoice_tab = active_tab(page)
        expect(invoice_tab.locator('input[name="party"]:visible')
            ).to_have_value(customer)
        shot(page, 'draft-invoice')
        press_until_asked(page, 'Post', "Are you sure you want to post")
        answer(page, "Are you sure you want to post", 'OK')
        expect(invoice_tab.locator('input[name="number"]:visible')
            ).to_have_value(re.compile(r'^INV/'))
        shot(page, 'posted-invoice')
        pay(page, PAID, "Bank transfer / UPI",
            screenshots / f'invoicing-{viewport}-pay.png')
        shot(page, 'paid-invoice')
        values, = accountant.model('account.invoice', 'read', [invoice],
            ['state', 'number', 'total_amount', 'amount_to_pay'])
        assert values['state'] == 'posted'
        assert values['number'].startswith('INV/')
        assert values['total_amount'] == decimal(f'{TOTAL}.00')
        assert values['amount_to_pay'] == decimal(f'{TOTAL - PAID}.00')

        open_record(page, crm_site, 'crm.deal', deal)
        deal_tab = active_tab(page)
        expect(deal_tab.locator('input[name="title"]:visible')
            ).to_have_value(title)
        deal_tab.get_by_role('tab', name='Invoicing').click()
        expect(deal_tab.locator('select[name="invoice_state"]:visible')
            ).to_have_value('"partly_paid"')
        expect(deal_tab.locator('input[name="amount_due"]:visible')
            ).to_have_value(rupees(TOTAL - PAID))
        shot(page, 'deal-invoicing')
        values, = accountant.model('crm.deal', 'read', [deal],
            ['invoice_state', 'amount_due'])
        assert values == {'id': deal, 'invoice_state': 'partly_paid',
            'amount_due': decimal(f'{TOTAL - PAID}.00')}
    except Exception:
        shot(page, 'failed-accountant')
        raise
    finally:
        context.close()
    assert errors == []
