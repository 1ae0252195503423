"""Web form capture over real HTTP: POST /<db>/crm/capture/<key> on the
running demo site, as a website's form, Facebook Lead Ads (through Zapier)
and IndiaMART post it.

Each request comes from its own loopback address (127.x.y.z) so that the
per-IP rate limit of one test never touches another; the sources are made
for this module and removed with their leads at the end."""
import http.client
import itertools
import json
import random
import urllib.parse
import uuid

import pytest

from .rpc import RpcError

SITE_ORIGIN = 'https://www.shreeganeshrealty.in'
# The defaults of [kraya_crm] web_form_rate_limit and web_form_max_bytes.
IP_LIMIT = 10
MAX_BYTES = 64 * 1024
HONEYPOT = 'kraya_hp'
_addresses = itertools.count(1)


def new_ip():
    n = next(_addresses)
    return f'127.50.{n // 250}.{n % 250 + 2}'


def new_mobile():
    "A valid Indian mobile number (10 digits) no lead has yet."
    return random.choice('6789') + '%09d' % random.randrange(10 ** 9)


class CaptureClient:
    "Posts to the capture endpoint the way browsers and servers do."

    def __init__(self, crm_site):
        parts = urllib.parse.urlsplit(crm_site.url)
        self.host, self.port = parts.hostname, parts.port
        self.database = crm_site.database

    def request(self, key, body=b'', content_type='application/json',
            origin=None, ip=None, method='POST', headers=None):
        "(status, response, answer) with the answer parsed when it is JSON."
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers = dict(headers or {})
        if content_type:
            headers['Content-Type'] = content_type
        if origin:
            headers['Origin'] = origin
        connection = http.client.HTTPConnection(self.host, self.port,
            timeout=30, source_address=(ip or new_ip(), 0))
        try:
            connection.request(method,
                f'/{self.database}/crm/capture/{key}', body=body or None,
                headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer = data
            if 'json' in (response.getheader('Content-Type') or ''):
                answer = json.loads(data)
            return response.status, response, answer
        finally:
            connection.close()

    def post(self, key, payload, **kwargs):
        return self.request(key, payload, **kwargs)

    def post_form(self, key, fields, **kwargs):
        return self.request(key, urllib.parse.urlencode(fields),
            content_type='application/x-www-form-urlencoded', **kwargs)

    def preflight(self, key, origin, ip=None):
        return self.request(key, method='OPTIONS', content_type=None,
            origin=origin, ip=ip, headers={
                'Access-Control-Request-Method': 'POST',
                'Access-Control-Request-Headers': 'content-type',
                })


@pytest.fixture(scope='module')
def client(crm_site):
    return CaptureClient(crm_site)


@pytest.fixture(scope='module')
def sources(manager):
    """Three web-form sources: the website's own form, Facebook Lead Ads
    and IndiaMART; by name, each {'id', 'code', 'key'}. Removed at the
    end with every lead and dead letter they made."""
    tag = uuid.uuid4().hex[:8]
    settings = {
        'form': {'allowed_origins': SITE_ORIGIN},
        'facebook': {'field_map_preset': 'facebook'},
        'indiamart': {'field_map_preset': 'indiamart'},
        }
    made = {}
    for name, values in settings.items():
        code = f'web-test-{name}-{tag}'
        source_id, = manager.model('crm.source', 'create', [{
                    'name': f"Test {name}", 'code': code, 'web_form': True,
                    **values}])
        key = manager.model('crm.source', 'read', [source_id],
            ['capture_key'])[0]['capture_key']
        made[name] = {'id': source_id, 'code': code, 'key': key}
    yield made
    ids = [s['id'] for s in made.values()]
    leads = manager.search('crm.lead', [('source', 'in', ids)])
    manager.model('crm.lead', 'delete', leads)
    letters = manager.search('crm.dead_letter', [
            ('endpoint', 'in', [f"web_form:{s['code']}"
                    for s in made.values()])])
    manager.model('crm.dead_letter', 'delete', letters)
    manager.model('crm.source', 'delete', ids)


def leads_with(manager, domain, fields=('name', 'phone', 'email', 'source')):
    return manager.search_read('crm.lead',
        domain, list(fields), order=[('id', 'ASC')])


def test_json_submission_creates_lead_with_e164_phone_and_source(
        client, sources, manager):
    mobile = new_mobile()
    status, _, answer = client.post(sources['form']['key'], {
            'name': "Kavita Rao", 'phone': mobile[:5] + ' ' + mobile[5:],
            'email': ' Kavita.Rao@Example.IN', 'message': "2BHK in Thane?"})
    assert (status, answer) == (200, {'ok': True})
    lead, = leads_with(manager, [('phone', '=', '+91' + mobile)])
    assert (lead['name'], lead['email'], lead['source']) == (
        "Kavita Rao", 'kavita.rao@example.in', sources['form']['id'])


def test_form_encoded_submission_creates_lead(client, sources, manager):
    mobile = new_mobile()
    status, _, _ = client.post_form(sources['form']['key'], {
            'name': "Farhan Ali", 'phone': '0' + mobile, 'city': "Pune"})
    assert status == 200
    lead, = leads_with(manager, [('phone', '=', '+91' + mobile)],
        ['name', 'city'])
    assert (lead['name'], lead['city']) == ("Farhan Ali", "Pune")


def test_second_submission_with_same_phone_attaches_to_existing_lead(
        client, sources, manager):
    mobile = new_mobile()
    key = sources['form']['key']
    assert client.post(key, {'name': "Meena Iyer", 'phone': mobile})[0] == 200
    assert client.post(key, {'name': "Meena I.", 'phone': '+91 ' + mobile,
            'message': "Call me after 6"})[0] == 200
    lead, = leads_with(manager, [('phone', '=', '+91' + mobile)],
        ['name', 'messages'])
    assert lead['name'] == "Meena Iyer"
    assert len(lead['messages']) == 2


def test_ticked_consent_records_whatsapp_opt_in_with_form_text(
        client, sources, manager):
    mobile = new_mobile()
    status, _, _ = client.post(sources['form']['key'], {
            'name': "Sunil Patil", 'phone': mobile, 'consent': 'yes'})
    assert status == 200
    lead, = leads_with(manager, [('phone', '=', '+91' + mobile)])
    text = manager.model('crm.source', 'read', [sources['form']['id']],
        ['consent_text'])[0]['consent_text']
    consents = manager.search_read('crm.lead.consent',
        [('lead', '=', lead['id'])],
        ['channel', 'state', 'opted_in_how', 'opted_in_basis'])
    assert [(c['channel'], c['state'], c['opted_in_how'], c['opted_in_basis'])
        for c in consents] == [('whatsapp', 'opted_in', 'form', text)]


def test_filled_honeypot_answers_ok_and_stores_nothing(
        client, sources, manager):
    mobile = new_mobile()
    status, _, answer = client.post(sources['form']['key'], {
            'name': "Bot", 'phone': mobile, HONEYPOT: 'http://spam.example'})
    assert (status, answer) == (200, {'ok': True})
    assert leads_with(manager, [('phone', '=', '+91' + mobile)]) == []


def test_invalid_phone_is_400_naming_the_field_and_stores_nothing(
        client, sources, manager):
    name = f"Invalid Phone {uuid.uuid4().hex[:6]}"
    status, _, answer = client.post(sources['form']['key'],
        {'name': name, 'phone': '12345'}, origin=SITE_ORIGIN)
    assert status == 400
    assert (answer['error'], answer['field']) == ('invalid_phone', 'phone')
    assert '12345' in answer['message']
    assert leads_with(manager, [('name', '=', name)]) == []


def test_refused_server_push_is_kept_as_dead_letter(client, sources, manager):
    body = {'CODE': 200, 'STATUS': 'SUCCESS', 'RESPONSE': {
            'SENDER_NAME': "Bad Number", 'SENDER_MOBILE': '+91-12345'}}
    status, _, answer = client.post(sources['indiamart']['key'], body)
    assert (status, answer['field']) == (400, 'RESPONSE.SENDER_MOBILE')
    letters = manager.search_read('crm.dead_letter', [
            ('endpoint', '=', f"web_form:{sources['indiamart']['code']}"),
            ('body', '=', json.dumps(body))], ['reason'])
    assert len(letters) == 1


def test_submission_without_phone_or_email_is_400(client, sources):
    status, _, answer = client.post(sources['form']['key'], {'name': "Anon"})
    assert (status, answer['error']) == (400, 'missing_contact')


def test_invalid_json_is_400(client, sources):
    status, _, answer = client.post(sources['form']['key'], '{"name": ')
    assert (status, answer['error']) == (400, 'invalid_body')


@pytest.mark.parametrize('body', [
        {'name': {'first': "Asha"}, 'phone': '9876543210'},
        {'phone': ['12', {'x': 1}]},
        {'phone': True},
        {'email': 'x' * 500 + '@example.in'},
        [1, 2],
        'null',
        b'\xff\xfe{}',
        ])
def test_junk_body_is_400_never_500(client, sources, body):
    assert client.post(sources['form']['key'], body)[0] == 400


def test_unknown_key_is_404(client, sources):
    assert client.post('no-such-key', {'phone': new_mobile()})[0] == 404


def test_source_without_web_form_is_404(client, manager):
    website, = manager.search_read('crm.source',
        [('code', '=', 'website')], ['capture_key', 'web_form'])
    assert not website['web_form']
    assert client.post(website['capture_key'],
        {'phone': new_mobile()})[0] == 404


def test_body_over_size_limit_is_413(client, sources):
    body = {'phone': new_mobile(), 'message': 'x' * MAX_BYTES}
    assert client.post(sources['form']['key'], body)[0] == 413


@pytest.fixture(scope='module')
def limited_ip(client, sources):
    "An address that has sent the most submissions a minute allows."
    ip = new_ip()
    for _ in range(IP_LIMIT):
        status, _, _ = client.post(sources['form']['key'],
            {'phone': new_mobile(), HONEYPOT: 'x'}, ip=ip)
        assert status == 200
    return ip


def test_submission_over_rate_limit_is_429(client, sources, limited_ip):
    status, response, _ = client.post(sources['form']['key'],
        {'phone': new_mobile(), HONEYPOT: 'x'}, ip=limited_ip)
    assert status == 429
    assert response.getheader('Retry-After') == '60'


def test_rate_limit_is_per_ip(client, sources, limited_ip):
    assert client.post(sources['form']['key'],
        {'phone': new_mobile(), HONEYPOT: 'x'})[0] == 200


def test_preflight_from_allowed_origin_is_204_with_cors_headers(
        client, sources):
    status, response, _ = client.preflight(sources['form']['key'], SITE_ORIGIN)
    assert status == 204
    assert response.getheader('Access-Control-Allow-Origin') == SITE_ORIGIN
    assert 'POST' in response.getheader('Access-Control-Allow-Methods')
    assert 'Content-Type' in response.getheader(
        'Access-Control-Allow-Headers')


def test_preflight_from_other_origin_is_403(client, sources):
    status, response, answer = client.preflight(
        sources['form']['key'], 'https://evil.example')
    assert (status, answer['error']) == (403, 'origin_not_allowed')
    assert response.getheader('Access-Control-Allow-Origin') is None


def test_post_from_other_origin_is_403_and_stores_nothing(
        client, sources, manager):
    mobile = new_mobile()
    status, _, answer = client.post(sources['form']['key'], {'phone': mobile},
        origin='https://evil.example')
    assert (status, answer['error']) == (403, 'origin_not_allowed')
    assert leads_with(manager, [('phone', '=', '+91' + mobile)]) == []


def test_post_from_allowed_origin_may_be_read_by_the_page(client, sources):
    status, response, _ = client.post(sources['form']['key'],
        {'phone': new_mobile()}, origin=SITE_ORIGIN)
    assert status == 200
    assert response.getheader('Access-Control-Allow-Origin') == SITE_ORIGIN


def test_facebook_lead_is_mapped_by_preset(client, sources, manager):
    mobile = new_mobile()
    lead = {
        'id': '1422873591823464',
        'created_time': '2026-11-20T09:14:02+0000',
        'ad_id': '23851234567890123',
        'form_id': '1020304050607080',
        'campaign_name': "Thane 2BHK Diwali",
        'platform': 'fb',
        'field_data': [
            {'name': 'full_name', 'values': ["Sneha Joshi"]},
            {'name': 'phone_number', 'values': ['+91' + mobile]},
            {'name': 'email', 'values': ["Sneha.Joshi@Example.in"]},
            {'name': 'city', 'values': ["Thane"]},
            ],
        }
    assert client.post(sources['facebook']['key'], lead)[0] == 200
    found, = leads_with(manager, [('phone', '=', '+91' + mobile)],
        ['name', 'email', 'city', 'campaign', 'source'])
    assert {k: v for k, v in found.items() if k != 'id'} == {
        'name': "Sneha Joshi", 'email': 'sneha.joshi@example.in',
        'city': "Thane", 'campaign': "Thane 2BHK Diwali",
        'source': sources['facebook']['id']}


def test_indiamart_push_is_mapped_by_preset(client, sources, manager):
    mobile = new_mobile()
    push = {'CODE': 200, 'STATUS': 'SUCCESS', 'RESPONSE': {
            'UNIQUE_QUERY_ID': '2789123456',
            'QUERY_TYPE': 'W',
            'QUERY_TIME': '2026-11-20 10:05:41',
            'SENDER_NAME': "Rakesh Gupta",
            'SENDER_MOBILE': f'+91-{mobile}',
            'SENDER_EMAIL': 'rakesh@guptatraders.in',
            'SUBJECT': "Requirement for Office Space",
            'SENDER_COMPANY': "Gupta Traders",
            'SENDER_CITY': "Navi Mumbai",
            'SENDER_STATE': "Maharashtra",
            'SENDER_COUNTRY_ISO': 'IN',
            'QUERY_PRODUCT_NAME': "Office Space",
            'QUERY_MESSAGE': "Need 1200 sq ft near Vashi station.",
            }}
    assert client.post(sources['indiamart']['key'], push)[0] == 200
    found, = leads_with(manager, [('phone', '=', '+91' + mobile)],
        ['name', 'company_name', 'city', 'subdivision.code', 'notes'])
    assert (found['name'], found['company_name'], found['city']) == (
        "Rakesh Gupta", "Gupta Traders", "Navi Mumbai")
    assert found['subdivision.']['code'] == 'IN-MH'
    assert "Need 1200 sq ft near Vashi station." in found['notes']


def test_snippet_posts_to_site_capture_url(crm_site, sources, manager):
    source, = manager.model('crm.source', 'read', [sources['form']['id']],
        ['snippet', 'capture_url'])
    url = (f"{crm_site.url}/{crm_site.database}/crm/capture/"
        f"{sources['form']['key']}")
    assert source['capture_url'] == url
    assert f'var url = "{url}"' in source['snippet']


def test_invalid_field_map_is_refused_with_its_error(sources, manager):
    with pytest.raises(RpcError) as error:
        manager.model('crm.source', 'write', [sources['form']['id']],
            {'field_map': '{"SENDER_MOBILE": "mobile_no"}'})
    assert 'not a lead field' in error.value.message
