"""A real site made by `./crm new-site` without --demo, as a script makes
it (options in the environment, no terminal): its company, its own secrets
and none of the demo's, and what it does while it has no company."""
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from kraya_crm.settings import DEMO_VALUES
from kraya_site import sites
from kraya_site.cli import site_processes

from .conftest import TEST_DATABASE, RunningSite, eventually, free_port, serving
from .test_whatsapp_webhook import lead_of, new_wa_id
from .whatsapp_payloads import WebhookClient, inbound

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = 'a-Strong-pass-123'
SENDER = "Acme Traders <sales@acme.in>"
BUSINESS = {'KRAYA_COMPANY': "Acme Traders", 'KRAYA_STATE': 'Karnataka',
    'KRAYA_GSTIN': '29AAPFU0939F1ZR', 'KRAYA_ADMIN_EMAIL': 'admin@acme.in',
    'KRAYA_STREET': "12 MG Road", 'KRAYA_CITY': "Bengaluru",
    'KRAYA_PIN': '560001'}


def crm(*args, env=None):
    "./crm ARGS as a script runs it: no terminal, options in the environment."
    return subprocess.run(['./crm', *args], cwd=ROOT,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='module')
def real_site(tmp_path_factory):
    "One non-demo site for the module, made and run as a user would."
    name = f'kraya_real_{os.getpid()}'
    site = sites.Site(name)
    env = {**BUSINESS, 'KRAYA_ADMIN_PASSWORD': PASSWORD,
        'KRAYA_EMAIL_FROM': SENDER,
        'KRAYA_WHATSAPP_APP_SECRET': secrets.token_urlsafe(24),
        'KRAYA_WHATSAPP_VERIFY_TOKEN': secrets.token_urlsafe(12)}
    db = ['--db', f'{TEST_DATABASE}/{name}'] if TEST_DATABASE else []
    try:
        made = crm('new-site', name, *db,
            '--listen', f'127.0.0.1:{free_port()}', env=env)
        assert made.returncode == 0, made.stderr
        log = tmp_path_factory.mktemp('real-site') / 'trytond.log'
        with serving(site, log) as processes:
            yield RunningSite(site, processes, None, None)
    finally:
        site.drop()


@pytest.fixture(scope='module')
def admin(real_site):
    return real_site.login('admin', PASSWORD)


@pytest.fixture(scope='module')
def webhook(real_site):
    return WebhookClient(real_site)


def settle(admin):
    assert eventually(lambda: admin.search_count('crm.whatsapp.inbox',
        [('processed_at', '=', None)]) == 0)


def test_new_site_sets_up_the_company_in_inr_with_gstin(admin):
    company, = admin.search_read('company.company',
        [], ['rec_name', 'timezone', 'currency', 'party'])
    currency, = admin.model('currency.currency', 'read',
        [company['currency']], ['code'])
    identifiers = admin.search_read('party.identifier',
        [('party', '=', company['party'])], ['type', 'code'])
    assert (company['rec_name'], company['timezone'], currency['code']) == (
        "Acme Traders", 'Asia/Kolkata', 'INR')
    assert [(i['type'], i['code']) for i in identifiers] == [
        ('in_vat', '29AAPFU0939F1ZR')]


def test_new_site_admin_is_a_crm_manager_in_the_company(admin):
    user, = admin.search_read('res.user',
        [('login', '=', 'admin')], ['company', 'email', 'groups'])
    manager, = admin.search('res.group', [('name', '=', "CRM Manager")])
    assert user['company'] is not None
    assert user['email'] == 'admin@acme.in'
    assert manager in user['groups']


def test_new_site_has_no_demo_value(real_site):
    config = real_site.site.config()
    values = {name: config.get('kraya_crm', name) for name in DEMO_VALUES}
    assert config.get('kraya_crm', 'demo') == 'False'
    assert [name for name, value in values.items()
        if value == DEMO_VALUES[name]] == []
    assert (values['whatsapp_api_url'], values['whatsapp_access_token'],
        values['whatsapp_phone_number_id']) == ('', '', '')


def test_new_site_may_listen_beyond_this_machine(real_site, tmp_path):
    from kraya_site import exposure
    from .test_exposure import copy_of
    assert exposure.problems(
        copy_of(real_site.site, '0.0.0.0:8443', root=tmp_path)) == []


def test_new_site_sends_email_through_its_own_mail_server(real_site):
    "This machine's mail server unless told, never the demo's local sink."
    config = real_site.site.config()
    assert (config.get('email', 'uri'), config.get('email', 'from')) == (
        'smtp://localhost:25', SENDER)
    assert site_processes(real_site.site) == ['web', 'cron', 'worker']


def test_delivery_signed_with_the_sites_secret_makes_a_lead(
        webhook, admin):
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Kiran Rao"))[0] == 200
    settle(admin)
    assert [l['name'] for l in lead_of(admin, wa_id)] == ["Kiran Rao"]


def test_delivery_signed_with_the_demo_secret_is_refused(webhook, admin):
    wa_id = new_wa_id()
    body = json.dumps(inbound(wa_id)).encode()
    signature = 'sha256=' + hmac.new(
        DEMO_VALUES['whatsapp_app_secret'].encode(), body,
        hashlib.sha256).hexdigest()
    assert webhook.post(body=body, signature=signature)[0] == 403
    assert lead_of(admin, wa_id) == []


def test_verification_echoes_the_challenge_for_the_sites_token(webhook):
    query = urllib.parse.urlencode({'hub.mode': 'subscribe',
            'hub.verify_token': webhook.verify_token, 'hub.challenge': '42'})
    assert webhook.get(query) == (200, '42')


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope='module')
def companyless_site(tmp_path_factory):
    """A site as the older new-site made it: the database and its own
    secrets, no company (a company cannot be deleted once its accounts
    exist, so this is the one way a site lacks it)."""
    name = f'kraya_bare_{os.getpid()}'
    site = sites.Site(name)
    try:
        site.write_config(
            db_uri=f'{TEST_DATABASE}/{name}' if TEST_DATABASE else None,
            listen=f'127.0.0.1:{free_port()}', demo=False, values={
                'whatsapp_app_secret': secrets.token_urlsafe(24),
                'whatsapp_verify_token': secrets.token_urlsafe(12)})
        site.create_database(admin_password=PASSWORD)
        site.mark_up_to_date()
        log = tmp_path_factory.mktemp('bare-site') / 'trytond.log'
        with serving(site, log) as processes:
            yield RunningSite(site, processes, None, None)
    finally:
        site.drop()


def test_site_without_company_answers_503_keeps_and_replays_everything(
        companyless_site, tmp_path):
    site = companyless_site
    config = site.site.config()
    webhook = WebhookClient(site)
    base = f'{site.url}/{site.database}/crm'
    wa_id = new_wa_id()
    payload = inbound(wa_id, name="Kept Person")
    form = json.dumps({'name': "Form Person", 'mobile': '98450 12345'}
        ).encode()
    email = (b'From: Mail Person <mail.person@example.in>\r\n'
        b'To: crm@acme.in\r\nSubject: Price?\r\n'
        b'Message-ID: <no-company@example.in>\r\n\r\nWhat is the price?\r\n')
    inbound_secret = config.get('kraya_crm', 'email_inbound_secret')
    # The site's form, switched on past the desk: no one may use it yet.
    (key,), = site.sql("UPDATE crm_source SET web_form = %s "
        "WHERE code = 'website' RETURNING capture_key", (True,))

    # Twice, as Meta delivers again after a 503: kept once.
    assert [webhook.post(payload)[0] for _ in range(2)] == [503, 503]
    assert post(f'{base}/capture/{key}', form,
        {'Content-Type': 'application/json'}) == 503
    assert post(f'{base}/email/inbound', email, {
            'X-Kraya-Signature': 'sha256=' + hmac.new(
                inbound_secret.encode(), email, hashlib.sha256).hexdigest(),
            'Content-Type': 'message/rfc822'}) == 503
    csv = tmp_path / 'leads.csv'
    csv.write_text("Name,Mobile\r\nFile Person,98450 54321\r\n")
    imported = crm('import', str(csv), '--source', 'import',
        '--site', site.site.name)
    assert imported.returncode == 1
    assert "no company" in imported.stderr

    # The fix the error names, as a script runs it; the running
    # processes see the company at once.
    fixed = crm('setup-company', '--site', site.site.name, env=BUSINESS)
    assert fixed.returncode == 0, fixed.stderr
    admin = site.login('admin', PASSWORD)
    letters = admin.search_read('crm.dead_letter',
        [('state', '=', 'new')], ['endpoint', 'reason'])
    assert sorted(l['endpoint'] for l in letters) == [
        'email', 'web_form:website', 'whatsapp']
    assert all("no company" in l['reason'] for l in letters)
    admin.model('crm.dead_letter', 'replay', [l['id'] for l in letters])
    assert [l['name'] for l in lead_of(admin, wa_id)] == ["Kept Person"]
    assert admin.search_count('crm.lead',
        [('name', 'in', ["Form Person", "Mail Person"])]) == 2


def test_the_inbox_of_a_real_site_shows_its_first_whatsapp_lead(
        real_site, webhook, admin):
    from .test_inbox_api import InboxClient
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Inbox First"))[0] == 200
    settle(admin)
    inbox = InboxClient(real_site, 'admin', PASSWORD)
    status, answer = inbox.get('conversations?filter=waiting')
    assert status == 200
    conversation, = [c for c in answer['conversations']
        if c['lead']['name'] == "Inbox First"]
    # No team yet on a new site: the lead waits unassigned for the manager.
    assert (conversation['owner'], conversation['team']) == (None, None)
    status, answer = inbox.post(
        f"conversations/{conversation['id']}/notes", {'text': "Call today"})
    assert status == 201, answer
    thread = inbox.thread(conversation['id'])
    assert [i['type'] for i in thread['items']] == ['message', 'note']


def test_a_real_site_erases_a_person_and_never_captures_them_again(
        real_site, webhook, admin):
    "new-site wrote the site's own privacy pepper: erasure works at once."
    config = real_site.site.config()
    assert config.get('kraya_crm', 'privacy_pepper') not in (
        '', DEMO_VALUES['privacy_pepper'])
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Erase Me"))[0] == 200
    settle(admin)
    lead, = lead_of(admin, wa_id)
    admin.model('crm.lead', 'erase_personal_data', [lead['id']])
    assert webhook.post(inbound(wa_id, name="Erase Me"))[0] == 200
    settle(admin)
    assert lead_of(admin, wa_id) == []
    assert [l['action'] for l in admin.search_read('crm.privacy.log',
            [('lead', '=', lead['id'])], ['action'])] == ['erasure']


def test_a_real_sites_reports_count_its_first_leads(real_site, webhook, admin):
    "The reports on a site with no demo data: its stages and its leads."
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Report Me"))[0] == 200
    settle(admin)
    whatsapp, = admin.search('crm.source', [('code', '=', 'whatsapp')])
    sources = {row['source']: row['leads'] for row in admin.search_read(
            'crm.reporting.source', [], ['source', 'leads'])}
    assert sources[whatsapp] == admin.search_count('crm.lead',
        [('source', '=', whatsapp)]) >= 1
    stages = admin.search('crm.stage', [])
    assert sorted(row['id'] for row in admin.search_read(
            'crm.reporting.funnel', [], ['reached'])) == sorted(stages)


def test_a_real_sites_webhook_gets_its_first_whatsapp_lead_signed(
        real_site, webhook, admin):
    "A manager's n8n webhook on a site with no demo data."
    from kraya_crm.tests.test_webhook import Receiver
    from .test_webhooks_rpc import verified
    with Receiver() as receiver:
        hook, = admin.model('crm.webhook', 'create', [{'name': "n8n",
                    'url': receiver.url, 'events': ['lead.created']}])
        secret = admin.model('crm.webhook', 'read', [hook],
            ['secret'])[0]['secret']
        wa_id = new_wa_id()
        assert webhook.post(inbound(wa_id, name="Hook Me"))[0] == 200
        settle(admin)
        # Other tests' leads may come in meanwhile: find this one's.
        (headers, body), = eventually(lambda: [(h, b)
                for h, b in receiver.received
                if json.loads(b)['data']['name'] == "Hook Me"])
        admin.model('crm.webhook', 'delete', [hook])
    assert verified(secret, headers, body)
    event = json.loads(body)
    assert (event['event'],
        event['data']['whatsapp'] or event['data']['phone']) == (
        'lead.created', f'+{wa_id}')


def test_a_real_sites_automation_rule_acts_on_its_first_whatsapp_lead(
        real_site, webhook, admin):
    """A rule the site's manager writes (no demo rules here) gives the
    owner a call task for a new WhatsApp lead, from the worker."""
    rule, = admin.model('crm.automation.rule', 'create', [{
                'name': "New WhatsApp lead: call within the hour",
                'applies_to': 'crm.lead', 'trigger': 'created',
                'condition': '[["name", "=", "Rule Me"]]',
                'actions': [('create', [{'kind': 'create_task',
                                'task_kind': 'call', 'due_in_hours': 1,
                                'task_name': "Call the WhatsApp lead"}])],
                }])
    try:
        wa_id = new_wa_id()
        assert webhook.post(inbound(wa_id, name="Rule Me"))[0] == 200
        settle(admin)
        (lead,) = lead_of(admin, wa_id)
        tasks = lambda: admin.search_read('crm.task',
            [('lead', '=', lead['id'])], ['name'])
        assert eventually(tasks), "the rule did not act"
        assert [t['name'] for t in tasks()] == ["Call the WhatsApp lead"]
        (run,) = admin.search_read('crm.automation.run',
            [('lead', '=', lead['id'])], ['state'])
        assert run['state'] == 'done'
    finally:
        admin.model('crm.automation.rule', 'delete', [rule])


def test_a_real_site_turns_a_won_deal_into_a_gst_invoice(real_site, admin):
    """The Indian setup new-site made (chart, GST taxes and rules, series):
    a Karnataka company invoicing a Maharashtra customer charges IGST, and
    the invoice prints with Rule 46's fields."""
    import base64

    from kraya_crm.tests.tools import document_text, keep_picture

    def decimal(value):
        return {'__class__': 'Decimal', 'decimal': value}

    category, = admin.search('product.category', [('name', '=', "GST 18%")])
    unit, = admin.search('product.uom', [('symbol', '=', 'u')], limit=1)
    template, = admin.model('product.template', 'create', [{
                'name': "Store fit-out consultancy", 'type': 'service',
                'list_price': decimal('100000'), 'default_uom': unit,
                'salable': True, 'sale_uom': unit, 'hsn_sac': '998311',
                'account_category': category,
                'products': [['create', [{}]]]}])
    product, = admin.search('product.product', [('template', '=', template)])
    india, = admin.search('country.country', [('code', '=', 'IN')])
    maharashtra, = admin.search('country.subdivision',
        [('code', '=', 'IN-MH')])
    party, = admin.model('party.party', 'create', [{
                'name': "Deshmukh Retail", 'gst_registration': 'regular',
                'addresses': [['create', [{'street': "FC Road",
                                'city': "Pune", 'postal_code': '411004',
                                'country': india,
                                'subdivision': maharashtra}]]],
                'identifiers': [['create', [{'type': 'in_vat',
                                'code': '27AAGCP4321R1ZY'}]]]}])
    deal, = admin.model('crm.deal', 'create', [{
                'title': "Deshmukh Retail: Pune store", 'party': party,
                'lines': [['create', [{'product': product, 'quantity': 1,
                                'unit_price': decimal('100000')}]]]}])
    admin.model('crm.deal', 'create_quotation', [deal])
    sale = admin.model('crm.deal', 'read', [deal], ['sale'])[0]['sale']
    admin.model('sale.sale', 'quote', [sale])
    admin.model('sale.sale', 'confirm', [sale])
    invoice = eventually(lambda: admin.search('account.invoice', [
                ('lines.origin.sale', '=', sale, 'sale.line')]),
        timeout=60)[0]
    admin.model('account.invoice', 'post', [invoice])
    values, = admin.model('account.invoice', 'read', [invoice],
        ['number', 'total_amount', 'tax_amount'])
    assert (values['total_amount'], values['tax_amount']) == (
        decimal('118000.00'), decimal('18000.00'))
    extension, content, _, _ = admin.call(
        'report.account.invoice.gst.execute', [invoice], {}, admin.context)
    pdf = base64.b64decode(content['base64'])
    keep_picture(pdf, 'gst-invoice-real-site')
    text = document_text(extension, pdf)
    for expected in ["TAX INVOICE", "Acme Traders", "12 MG Road",
            "Bengaluru", "560001", "29AAPFU0939F1ZR",
            "Deshmukh Retail", "27AAGCP4321R1ZY", "9983", "IGST 18%",
            "₹18,000.00", "₹1,18,000.00", values['number'],
            "Place of supply: Maharashtra (27)",
            "Rupees One Lakh Eighteen Thousand Only"]:
        assert expected in text, expected
    assert admin.model('crm.deal', 'read', [deal],
        ['invoice_state'])[0]['invoice_state'] == 'posted'
