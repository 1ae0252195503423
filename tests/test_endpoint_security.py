"""Every URL the module answers, declared with how it is protected, and
each protection tried on the running demo site: pages and their APIs on
the desk's session (none, expired, live; cross-site changes; another
rep's ids), signed endpoints without their signature.

A route added to routes.py without its line here fails
test_every_route_of_the_module_is_declared."""
import datetime as dt
import urllib.request

import pytest
from trytond.wsgi import app

import kraya_crm.api  # noqa: F401 (registers the integration API's routes)
import kraya_crm.routes  # noqa: F401 (registers the module's routes)

from .test_inbox_api import InboxClient, writes_in
from .test_my_day_api import new_task

# How each route is protected.
SIGNED = 'signed: an HMAC of the body with a site secret'
SIGNED_LINK = 'a link we signed (email unsubscribe, tracked link)'
FORM_KEY = "a web form source's capture key, origins, rate limits"
STATIC = 'public files of static/, nothing above them'
DESK_PAGE = "a page of ours on the desk's session"
DESK_API = "a page's API: desk session, CSRF token, record rules"
API_KEY = ("an API key (Bearer), its scopes, its user's record rules, "
    "rate limits (tests/test_integration_api.py)")
PUBLIC_DOCUMENT = "the integration API's OpenAPI document: no data"

ROUTES = {
    '/<database_name>/crm/whatsapp/webhook': SIGNED,
    '/<database_name>/crm/email/inbound': SIGNED,
    '/<database_name>/crm/capture/<key>': FORM_KEY,
    '/<database_name>/crm/unsubscribe/<token>': SIGNED_LINK,
    '/<database_name>/crm/link/<int:message_id>': SIGNED_LINK,
    '/<database_name>/crm/static/<path:name>': STATIC,
    '/<database_name>/crm/inbox': DESK_PAGE,
    '/<database_name>/crm/inbox/api/<path:action>': DESK_API,
    '/<database_name>/crm/my-day': DESK_PAGE,
    '/<database_name>/crm/my-day/api/<path:action>': DESK_API,
    '/<database_name>/crm/my-day/inbox/<int:lead_id>': DESK_PAGE,
    '/<database_name>/crm/board': DESK_PAGE,
    '/<database_name>/crm/board/api/<path:action>': DESK_API,
    '/<database_name>/crm/dashboard': DESK_PAGE,
    '/<database_name>/crm/dashboard/api/<path:action>': DESK_API,
    '/<database_name>/crm/api/v1/<api_path:action>': API_KEY,
    '/<database_name>/crm/api/v1/openapi.json': PUBLIC_DOCUMENT,
    }


def test_every_route_of_the_module_is_declared():
    routes = {rule.rule for rule in app.url_map.iter_rules()
        if '/crm/' in rule.rule}
    assert routes == set(ROUTES)


@pytest.fixture(scope='module')
def rep(crm_site):
    return InboxClient(crm_site, 'rep')


@pytest.fixture(scope='module')
def expired_rep(crm_site):
    """A rep whose desk session is past [session] max_age: its ir.session
    row is as old as a session that timed out."""
    client = InboxClient(crm_site, 'rep')
    crm_site.sql('UPDATE ir_session SET create_date = %s WHERE id = '
        '(SELECT MAX(id) FROM ir_session WHERE create_uid = %s)',
        (dt.datetime(2000, 1, 1).isoformat(' '), client.user_id))
    return client


@pytest.fixture(scope='module')
def rep2_records(crm_site, manager, rep):
    "A conversation, lead and task of rep2's, which rep may not reach."
    rep2_id, = manager.search('res.user', [('login', '=', 'rep2')])
    conversation, lead, _ = writes_in(crm_site, manager,
        "Is the Powai flat ready to move in?", owner=rep2_id)
    task = new_task(manager, rep2_id, lead, -1)
    return {'conversation': conversation, 'lead': lead, 'task': task}


# Per page of ours: a read of its API, a change (None: it changes
# nothing), and the requests that name a record of rep2's
# ({conversation}, {lead}, {task}).
PAGES = {
    'dashboard': {
        'read': 'figures',
        'change': None,
        'others': [],
        },
    'inbox': {
        'read': 'conversations',
        'change': ('conversations/{conversation}/notes', {'text': "hi"}),
        'others': [
            ('GET', 'conversations/{conversation}', None),
            ('POST', 'conversations/{conversation}/notes', {'text': "x"}),
            ('POST', 'conversations/{conversation}/messages',
                {'text': "x"}),
            ],
        },
    'board': {
        'read': 'board',
        'change': ('leads/{lead}/move', {'status': 'contacted'}),
        'others': [
            ('POST', 'leads/{lead}/move', {'status': 'contacted'}),
            ],
        },
    'my-day': {
        'read': 'day',
        'change': ('leads/{lead}/calls', {'outcome': 'connected'}),
        'others': [
            ('POST', 'tasks/{task}/outcome', {'outcome': 'connected'}),
            ('POST', 'tasks/{task}/next', {'kind': 'call'}),
            ('POST', 'leads/{lead}/calls', {'outcome': 'connected'}),
            ],
        },
    }


def client_of(crm_site, page, base):
    "base's session, on another page of ours."
    client = object.__new__(InboxClient)
    client.session, client.user_id = base.session, base.user_id
    client.base = f'{crm_site.url}/{crm_site.database}/crm/{page}'
    if hasattr(base, 'csrf'):
        # The token is the session's: the same on every page.
        client.csrf = base.csrf
    return client


@pytest.mark.parametrize('page', sorted(PAGES))
def test_page_and_api_refuse_an_expired_session(crm_site, expired_rep, page):
    client = client_of(crm_site, page, expired_rep)
    status, body, _ = client.request('GET', '', raw=True)
    assert status == 401 and b'Sign in' in body
    status, answer = client.get(PAGES[page]['read'])
    assert (status, answer['error']) == (401, 'login_required')


@pytest.mark.parametrize('page', sorted(PAGES))
def test_page_api_refuses_no_session_and_cross_site_changes(
        crm_site, rep, rep2_records, page):
    client = client_of(crm_site, page, rep)
    assert client.get(PAGES[page]['read'], cookie=False)[0] == 401
    if PAGES[page]['change'] is None:
        # A page that only reads takes no POST at all.
        status, _, _ = client.request('POST', f"/api/{PAGES[page]['read']}",
            {}, raw=True)
        assert status == 405
        return
    path, body = PAGES[page]['change']
    path = path.format(**rep2_records)
    assert client.post(path, body, cookie=False)[0] == 401
    for headers in [{'X-CSRF-Token': ''}, {'Sec-Fetch-Site': 'cross-site'},
            {'Origin': 'https://evil.example'}]:
        status, answer = client.post(path, body, headers=headers)
        assert (status, answer['error']) == (403, 'cross_site'), headers


@pytest.mark.parametrize('page', sorted(PAGES))
def test_page_api_answers_not_found_for_another_reps_records(
        crm_site, rep, rep2_records, page):
    client = client_of(crm_site, page, rep)
    for method, path, body in PAGES[page]['others']:
        path = path.format(**rep2_records)
        status, answer = client.request(method, f'/api/{path}', body)
        assert (status, answer['error']) == (404, 'not_found'), path


def test_my_day_inbox_link_of_another_reps_lead_is_not_found(
        crm_site, rep, rep2_records):
    client = client_of(crm_site, 'my-day', rep)
    status, body, _ = client.request(
        'GET', f"/inbox/{rep2_records['lead']}", raw=True)
    assert status == 404


@pytest.mark.parametrize('path', ['whatsapp/webhook', 'email/inbound'])
def test_signed_endpoints_refuse_an_unsigned_body(crm_site, path):
    request = urllib.request.Request(
        f'{crm_site.url}/{crm_site.database}/crm/{path}',
        data=b'{"object": "whatsapp_business_account"}', method='POST',
        headers={'Content-Type': 'application/json'})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 401
