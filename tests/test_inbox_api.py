"""The team inbox's HTTP API on a real site, as its page uses it: the desk's
session cookie, the CSRF token of the page, record rules per user, and
live updates by long poll. Leads write in through the WhatsApp simulator;
answers reach it through the real outbox and worker."""
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request

import pytest

from .conftest import eventually


class InboxClient:
    """The inbox page's requests (or another page's of the module, like
    my-day), with a desk session signed in as `login`."""

    def __init__(self, crm_site, login, password=None, page='inbox'):
        self.session = crm_site.login(login, password)
        self.user_id = self.session.user_id
        self.base = f'{crm_site.url}/{crm_site.database}/crm/{page}'
        status, page, _ = self.request('GET', '', raw=True)
        assert status == 200, page
        self.csrf = re.search(
            rb'<meta name="csrf-token" content="([0-9a-f]+)"', page)[1].decode()

    def request(self, method, path, body=None, headers=None, raw=False,
            cookie=True, csrf=True, timeout=30):
        headers = dict(headers or {})
        if cookie:
            headers['Cookie'] = self.session.cookie
        if method == 'POST' and csrf and hasattr(self, 'csrf'):
            headers.setdefault('X-CSRF-Token', self.csrf)
        data = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            else:
                data = json.dumps(body).encode()
                headers.setdefault('Content-Type', 'application/json')
        request = urllib.request.Request(f'{self.base}{path}', data=data,
            method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, answer = response.status, response.read()
                answer_headers = response.headers
        except urllib.error.HTTPError as error:
            with error:
                status, answer = error.code, error.read()
                answer_headers = error.headers
        if raw:
            return status, answer, answer_headers
        return status, json.loads(answer)

    def get(self, path, **kwargs):
        return self.request('GET', f'/api/{path}', **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request('POST', f'/api/{path}',
            body if body is not None else {}, **kwargs)

    def thread(self, conversation_id):
        status, answer = self.get(f'conversations/{conversation_id}')
        assert status == 200, answer
        return answer


def new_number():
    return '+9198' + ''.join(secrets.choice('0123456789') for _ in range(8))


@pytest.fixture(scope='module')
def rep(crm_site):
    return InboxClient(crm_site, 'rep')


@pytest.fixture(scope='module')
def rep2(crm_site):
    return InboxClient(crm_site, 'rep2')


@pytest.fixture(scope='module')
def manager_inbox(crm_site):
    return InboxClient(crm_site, 'manager')


def writes_in(crm_site, manager, text, name=None, owner=None):
    """A new lead writes on WhatsApp; (conversation id, lead id, number)
    once the worker wrote it, the lead given to `owner` (a user id)."""
    number = new_number()
    crm_site.whatsapp.reply(number, text, name=name or "Asha Kulkarni")
    leads = eventually(lambda: manager.search('crm.lead',
            [('phone', '=', number)]))
    assert leads, f'no lead for {number}'
    if owner:
        # After the demo's assignment rules have given it to someone, as a
        # manager reassigns it.
        assert eventually(lambda: manager.model('crm.lead', 'read', leads,
                ['assigned_at'])[0]['assigned_at'], timeout=20)
        manager.model('crm.lead', 'write', leads, {'owner': owner})
    conversations = eventually(lambda: manager.search('crm.conversation',
            [('lead', '=', leads[0])]))
    return conversations[0], leads[0], number


@pytest.fixture(scope='module')
def rep_lead(crm_site, manager, rep):
    "A lead of the rep's who asked about a flat."
    return writes_in(crm_site, manager, "Hi, 3BHK price?", owner=rep.user_id)


def test_page_and_api_refuse_without_a_session(crm_site, rep):
    status, page, _ = rep.request('GET', '', raw=True, cookie=False)
    assert status == 401
    assert b'Sign in' in page and f'/#{crm_site.database}'.encode() in page
    status, answer = rep.get('conversations', cookie=False)
    assert (status, answer['error']) == (401, 'login_required')


def test_page_carries_csrf_token_and_strict_headers(rep):
    status, page, headers = rep.request('GET', '', raw=True)
    assert status == 200
    assert "frame-ancestors 'none'" in headers['Content-Security-Policy']
    assert headers['Cache-Control'] == 'no-store'
    assert len(rep.csrf) == 64


def test_lead_writing_in_appears_waiting_and_unread(rep, rep_lead):
    conversation_id, lead_id, number = rep_lead
    status, answer = rep.get('conversations?filter=waiting')
    assert status == 200
    listed = {c['id']: c for c in answer['conversations']}
    assert conversation_id in listed
    conversation = listed[conversation_id]
    assert conversation['unread'] == 1
    assert conversation['waiting'] is True
    assert conversation['owner']['id'] == rep.user_id
    assert conversation['last_message']['summary'] == "Hi, 3BHK price?"
    assert conversation['window']['open'] is True
    assert 0 < conversation['window']['seconds_left'] <= 24 * 3600
    assert answer['counts']['waiting'] >= 1


def test_search_finds_the_number_however_typed(rep, rep_lead):
    conversation_id, _, number = rep_lead
    typed = f'0{number[3:8]} {number[8:]}'  # 098xxx xxxxx
    status, answer = rep.get(
        'conversations?filter=all&q=' + urllib.request.quote(typed))
    assert status == 200
    assert [c['id'] for c in answer['conversations']] == [conversation_id]


def test_rep_answers_on_whatsapp_and_it_is_the_first_response(
        crm_site, manager, rep, rep_lead):
    conversation_id, lead_id, number = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        {'channel': 'whatsapp', 'text': "Namaste! 3BHK starts at ₹1.2 Cr."})
    assert status == 201, answer
    item = answer['item']
    assert (item['direction'], item['author']['id'], item['status']) == (
        'outbound', rep.user_id, 'queued')
    sent = eventually(lambda: [m for m in crm_site.whatsapp.sent
            if m.get('to') == number.lstrip('+')])
    assert sent and sent[0]['text'] == "Namaste! 3BHK starts at ₹1.2 Cr."
    # The simulator reports sent, delivered and read by webhook.
    assert eventually(lambda: [i for i in rep.thread(conversation_id)['items']
            if i['id'] == item['id'] and i['status'] == 'read'], timeout=20)
    lead, = manager.model('crm.lead', 'read', [lead_id],
        ['first_response_at', 'first_response_by'])
    assert lead['first_response_by'] == rep.user_id
    assert lead['first_response_at']
    thread = rep.thread(conversation_id)
    assert thread['conversation']['waiting'] is False


def test_opening_a_conversation_clears_its_unread_and_sends_blue_ticks(
        crm_site, rep, rep_lead):
    conversation_id, _, number = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/read')
    assert status == 200, answer
    assert answer['conversation']['unread'] == 0
    asked = [i for i in rep.thread(conversation_id)['items']
        if i['direction'] == 'inbound']
    (wamid,), = crm_site.sql(
        "SELECT provider_id FROM crm_message WHERE id = %s",
        (int(asked[-1]['id'][1:]),))
    assert eventually(lambda: wamid in crm_site.whatsapp.reads)


def test_a_photo_the_lead_sends_shows_in_the_thread(crm_site, manager, rep):
    conversation_id, _, number = writes_in(crm_site, manager,
        "Hello", owner=rep.user_id)
    photo = b'\x89PNG\r\n\x1a\n' + b'\x00' * 64
    crm_site.whatsapp.reply(number, media={'image': {
                'filename': 'flat.png', 'mime_type': 'image/png',
                'data': photo, 'caption': "This one?"}})

    def fetched():
        return [i for i in rep.thread(conversation_id)['items']
            if i['kind'] == 'image' and i['attachment']
            and i['attachment']['state'] == 'fetched']
    item, = eventually(fetched, timeout=20)
    assert item['body'] == "This one?"
    status, raw, headers = rep.request('GET',
        item['attachment']['url'].split('/crm/inbox', 1)[1], raw=True)
    assert (status, raw) == (200, photo)
    assert headers['Content-Type'] == 'image/png'
    assert headers['Content-Disposition'].startswith('inline;')


def test_quoted_reply_and_buttons_are_kept_on_the_message(rep, rep_lead):
    conversation_id, _, _ = rep_lead
    question = [i for i in rep.thread(conversation_id)['items']
        if i['direction'] == 'inbound'][0]
    status, answer = rep.post(f'conversations/{conversation_id}/messages', {
            'channel': 'whatsapp', 'text': "When can you visit?",
            'reply_to': question['id'],
            'buttons': ["Saturday", "Sunday"]})
    assert status == 201, answer
    assert answer['item']['reply_to']['id'] == question['id']
    assert answer['item']['buttons'] == ["Saturday", "Sunday"]
    status, answer = rep.post(f'conversations/{conversation_id}/messages', {
            'channel': 'whatsapp', 'text': "Pick one",
            'buttons': ["A", "B", "C", "D"]})
    assert (status, answer['error']) == (400, 'bad_buttons')
    status, answer = rep.post(f'conversations/{conversation_id}/messages', {
            'channel': 'whatsapp', 'text': "Pick one",
            'buttons': ["A site visit this Saturday"]})
    assert (status, answer['error']) == (400, 'bad_buttons')


def test_outside_the_window_only_a_template_goes(crm_site, manager, rep):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Interested", owner=rep.user_id)
    crm_site.sql("UPDATE crm_lead SET last_inbound_at = %s WHERE id = %s",
        ('2026-01-01 10:00:00', lead_id))
    conversation = rep.thread(conversation_id)['conversation']
    assert conversation['window'] == {
        'open': False, 'closes_at': None, 'seconds_left': 0}
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        {'channel': 'whatsapp', 'text': "Still interested?"})
    assert (status, answer['error']) == (400, 'window_closed')
    assert '24 hours' in answer['message']


def test_note_with_mention_notifies_the_manager(
        crm_site, manager, manager_inbox, rep, rep_lead):
    conversation_id, lead_id, _ = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/notes',
        {'text': "@manager can we give 2% off?"})
    assert status == 201, answer
    note = answer['item']
    assert (note['type'], note['direction']) == ('note', 'internal')
    assert [m['id'] for m in note['mentions']] == [manager_inbox.user_id]
    notifications = manager.search_read('res.notification', [
            ('user', '=', manager_inbox.user_id),
            ('records', '=', json.dumps([lead_id]))], ['label'])
    assert any('mentioned you' in n['label'] for n in notifications)
    status, answer = manager_inbox.get('mentions')
    assert note['id'] in [i['id'] for i in answer['items']]
    # Never sent to the lead.
    assert not [m for m in crm_site.whatsapp.sent
        if "2% off" in (m.get('text') or '')]


def test_logged_call_counts_as_first_response(crm_site, manager, rep):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Call me", owner=rep.user_id)
    status, answer = rep.post(f'conversations/{conversation_id}/calls', {
            'outcome': 'connected', 'duration_seconds': 185,
            'note': "Wants a site visit on Sunday"})
    assert status == 201, answer
    assert answer['item']['call'] == {'outcome': 'connected',
        'outcome_label': "Connected", 'duration_seconds': 185}
    lead, = manager.model('crm.lead', 'read', [lead_id],
        ['first_response_by'])
    assert lead['first_response_by'] == rep.user_id
    status, answer = rep.post(f'conversations/{conversation_id}/calls',
        {'outcome': 'maybe', 'duration_seconds': 10})
    assert (status, answer['error']) == (400, 'bad_outcome')


def test_assign_snooze_done_and_reopen(crm_site, manager, rep, rep2):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Need a 2BHK", owner=rep.user_id)
    path = f'conversations/{conversation_id}'
    status, answer = rep.post(f'{path}/assign', {'user': rep2.user_id})
    assert status == 200, answer
    assert answer['conversation']['owner']['id'] == rep2.user_id
    # Now rep2's: they snooze it, then the lead writes again and wakes it.
    status, answer = rep2.post(f'{path}/snooze',
        {'until': '2099-01-01T04:30:00Z'})
    assert answer['conversation']['state'] == 'snoozed'
    status, answer = rep2.post(f'{path}/done')
    assert answer['conversation']['state'] == 'done'
    status, answer = rep2.post(f'{path}/reopen')
    assert answer['conversation']['state'] == 'open'
    status, answer = rep2.post(f'{path}/snooze', {'until': '2001-01-01T00:00Z'})
    assert (status, answer['error']) == (400, 'bad_time')
    texts = [i['text'] for i in rep2.thread(conversation_id)['items']
        if i['type'] in {'assignment', 'event'}]
    assert "Assigned to Anita Desai" in texts
    assert {"Snoozed", "Marked done", "Reopened"} <= set(texts)


def test_a_rep_cannot_read_or_answer_another_reps_conversation(
        crm_site, manager, rep, rep2, rep_lead):
    conversation_id, _, _ = rep_lead
    path = f'conversations/{conversation_id}'
    assert rep2.get(path)[0] == 404
    assert rep2.get(f'{path}/templates')[0] == 404
    for action, body in [('messages', {'text': "hi"}), ('notes',
                {'text': "x"}), ('read', {}), ('assign', {'user': None}),
            ('done', {})]:
        status, answer = rep2.post(f'{path}/{action}', body)
        assert (status, answer['error']) == (404, 'not_found'), action
    listed = [c['id'] for c in rep2.get('conversations?filter=all')[1][
            'conversations']]
    assert conversation_id not in listed


def test_the_accountant_reads_but_cannot_answer(crm_site, rep_lead):
    accountant = InboxClient(crm_site, 'accountant')
    conversation_id, _, _ = rep_lead
    assert accountant.get(f'conversations/{conversation_id}')[0] == 200
    status, answer = accountant.post(
        f'conversations/{conversation_id}/messages', {'text': "hello"})
    assert (status, answer['error']) == (403, 'not_allowed')


@pytest.mark.parametrize('headers', [
        {'X-CSRF-Token': ''},
        {'X-CSRF-Token': '0' * 64},
        {'Sec-Fetch-Site': 'cross-site'},
        {'Sec-Fetch-Site': 'same-site'},
        ], ids=['no-token', 'wrong-token', 'cross-site', 'same-site'])
def test_changes_from_another_site_are_refused(rep, rep_lead, headers):
    conversation_id, _, _ = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/notes',
        {'text': "forged"}, headers=headers)
    assert (status, answer['error']) == (403, 'cross_site')


def test_another_sites_origin_is_refused(crm_site, rep, rep_lead):
    conversation_id, _, _ = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/notes',
        {'text': "forged"}, headers={'Origin': 'https://evil.example'})
    assert (status, answer['error']) == (403, 'cross_site')
    notes = [i['body'] for i in rep.thread(conversation_id)['items']]
    assert "forged" not in notes


def test_what_leads_write_comes_back_as_text_in_json(
        crm_site, manager, rep):
    name = '<img src=x onerror=alert(1)>'
    conversation_id, _, _ = writes_in(crm_site, manager,
        "<script>alert('hi')</script>", name=name, owner=rep.user_id)
    status, raw, headers = rep.request(
        'GET', f'/api/conversations/{conversation_id}', raw=True)
    assert headers['Content-Type'] == 'application/json'
    thread = json.loads(raw)
    assert thread['conversation']['lead']['name'] == name
    inbound, = [i for i in thread['items'] if i['direction'] == 'inbound']
    assert inbound['body'] == "<script>alert('hi')</script>"


def test_new_message_reaches_a_waiting_long_poll_within_two_seconds(
        crm_site, manager, rep, rep_lead):
    conversation_id, _, number = rep_lead
    status, listed = rep.get('conversations')
    seen = []

    def poll():
        # As the page does: poll again with each answer's cursor until the
        # new message shows (a late status of an earlier send may come
        # first).
        cursor = listed['cursor']
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            status, answer = rep.get(
                'events?cursor=' + urllib.request.quote(cursor), timeout=60)
            assert status == 200, answer
            cursor = answer['cursor']
            for conversation in answer['conversations']:
                summary = (conversation['last_message'] or {}).get('summary')
                if (conversation['id'] == conversation_id
                        and summary == "Is parking included?"):
                    seen.append(time.monotonic())
                    return
    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    sent_at = time.monotonic()
    crm_site.whatsapp.reply(number, "Is parking included?")
    poller.join(timeout=45)
    assert seen, "the poll never showed the new message"
    assert seen[0] - sent_at < 2.5


def test_email_answer_threads_and_comes_from_the_rep(
        crm_site, manager, rep):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Send details by email", owner=rep.user_id)
    address = f'lead{secrets.token_hex(4)}@example.in'
    manager.model('crm.lead', 'write', [lead_id], {'email': address})
    status, answer = rep.post(f'conversations/{conversation_id}/messages', {
            'channel': 'email', 'subject': "Flat details",
            'text': "Please find the details below."})
    assert status == 201, answer
    emails = eventually(lambda: crm_site.mail.sent_to(address))
    email = emails[0]
    assert email['Subject'] == "Flat details"
    assert email['From'].startswith('Rahul Verma <')


def post_inbound_email(crm_site, raw):
    "The lead's email, as an inbound-parse service posts it to the site."
    import hashlib
    import hmac
    secret = crm_site.site.config().get('kraya_crm', 'email_inbound_secret')
    request = urllib.request.Request(
        f'{crm_site.url}/{crm_site.database}/crm/email/inbound', data=raw,
        headers={'X-Kraya-Signature': 'sha256=' + hmac.new(
                secret.encode(), raw, hashlib.sha256).hexdigest()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_email_answer_goes_on_the_leads_thread(crm_site, manager, rep):
    address = f'lead{secrets.token_hex(4)}@example.in'
    asked = f'<{secrets.token_hex(8)}@mail.example.in>'
    assert post_inbound_email(crm_site, (
            f"From: Kavya Nair <{address}>\r\nTo: sales@example.in\r\n"
            f"Subject: Brochure for Powai towers\r\nMessage-ID: {asked}\r\n"
            "Date: Tue, 01 Dec 2026 10:00:00 +0530\r\n\r\n"
            "Please send the brochure.\r\n").encode()) == {'status': 'stored'}
    lead_id, = eventually(lambda: manager.search('crm.lead',
            [('email', '=', address)]))
    assert eventually(lambda: manager.model('crm.lead', 'read', [lead_id],
            ['assigned_at'])[0]['assigned_at'], timeout=20)
    manager.model('crm.lead', 'write', [lead_id], {'owner': rep.user_id})
    conversation_id, = manager.search('crm.conversation',
        [('lead', '=', lead_id)])
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        {'channel': 'email', 'text': "Attached is the brochure."})
    assert status == 201, answer
    email, = eventually(lambda: crm_site.mail.sent_to(address))
    assert email['Subject'] == "Re: Brochure for Powai towers"
    assert email['In-Reply-To'] == asked
    assert asked in email['References']
    assert email['From'].startswith('Rahul Verma <')


def test_static_files_are_served_and_nothing_above_them(crm_site, rep):
    base = f'{crm_site.url}/{crm_site.database}/crm/static'
    with urllib.request.urlopen(f'{base}/custom.js', timeout=10) as response:
        assert response.headers['Content-Type'] == 'text/javascript'
        assert b'Sao' in response.read()
    for path in ['../routes.py', '..%2Froutes.py', 'inbox/../../tryton.cfg',
            'nothing.js']:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f'{base}/{path}', timeout=10)
        assert refused.value.code == 404, path


def test_oversized_request_is_refused_and_nothing_kept(rep, rep_lead):
    conversation_id, _, _ = rep_lead
    status, answer = rep.post(f'conversations/{conversation_id}/notes',
        {'text': 'x' * (70 * 1024)})
    assert (status, answer['error']) == (413, 'too_large')


def test_demo_inbox_holds_the_teams_chats(manager_inbox):
    # Page by page: the other tests' leads, newer, come first (CI once had
    # more than 200 of them before this test).
    conversations = []
    while True:
        status, answer = manager_inbox.get(
            f'conversations?filter=all&limit=200&offset={len(conversations)}')
        assert status == 200, answer
        if not answer['conversations']:
            break
        conversations += answer['conversations']
    summaries = {c['last_message']['summary']
        for c in conversations if c['last_message']}
    assert {"Hi, 3BHK price?", "Booked. Rahul will meet you at the gate."} \
        <= summaries
    opened = [c for c in conversations
        if c['last_message'] and c['last_message']['summary']
        == "Hi, 3BHK price?"]
    assert all(c['window']['open'] and c['waiting'] for c in opened)


def test_new_whatsapp_lead_reaches_the_team_and_a_rep_within_seconds(
        crm_site, manager, manager_inbox):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Any 1BHK in Thane?")

    def assigned():
        conversation = manager_inbox.thread(conversation_id)['conversation']
        return conversation if conversation['owner'] else None
    conversation = eventually(assigned, timeout=20)
    assert conversation, "the demo's assignment rules gave it no owner"
    assert conversation['team']['name'] == "Mumbai Sales"
    rep = InboxClient(crm_site, {
            "Rahul Verma": 'rep', "Anita Desai": 'rep2',
            "Vikram Patil": 'agent', "Priya Sharma": 'manager',
            }[conversation['owner']['name']])
    listed = [c['id'] for c in rep.get('conversations?filter=mine')[1][
            'conversations']]
    assert conversation_id in listed


def test_open_in_inbox_makes_the_conversation_of_a_lead_made_in_the_desk(
        crm_site, rep):
    lead_id, = rep.session.model('crm.lead', 'create', [{
                'name': "Walk-in Meera", 'phone': '98200 11223'}])
    action = rep.session.model('crm.lead', 'open_inbox', [lead_id])
    assert action['type'] == 'ir.action.url'
    conversation_id = int(action['url'].rsplit('?c=', 1)[1])
    assert action['url'] == (
        f'/{crm_site.database}/crm/inbox?c={conversation_id}')
    thread = rep.thread(conversation_id)
    assert thread['conversation']['lead']['name'] == "Walk-in Meera"
    assert thread['conversation']['window']['open'] is False


def multipart(fields, files):
    "A multipart/form-data body as a browser's FormData posts it."
    boundary = secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; '
            f'name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, mime_type, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; '
            f'name="{name}"; filename="{filename}"\r\n'
            f'Content-Type: {mime_type}\r\n\r\n'.encode() + data + b'\r\n')
    parts.append(f'--{boundary}--\r\n'.encode())
    return b''.join(parts), f'multipart/form-data; boundary={boundary}'


PDF = (b'%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n'
    b'2 0 obj<</Type/Pages/Count 0/Kids[]>>endobj\ntrailer<</Root 1 0 R>>\n'
    b'%%EOF\n')


def test_rep_sends_a_brochure_and_the_leads_phone_gets_it(
        crm_site, manager, rep):
    conversation_id, _, number = writes_in(crm_site, manager,
        "Send the brochure", owner=rep.user_id)
    body, content_type = multipart({'caption': "Our Powai brochure"},
        {'file': ('powai-brochure.pdf', 'application/pdf', PDF)})
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        body, headers={'Content-Type': content_type})
    assert status == 201, answer
    item = answer['item']
    assert (item['kind'], item['body']) == ('document', "Our Powai brochure")
    assert item['attachment']['name'] == 'powai-brochure.pdf'
    sent = eventually(lambda: [m for m in crm_site.whatsapp.sent
            if m['to'] == number.lstrip('+') and m['type'] == 'document'],
        timeout=20)
    assert sent, [m for m in rep.thread(conversation_id)['items']
        if m['id'] == item['id']]
    assert sent[0]['media']['filename'] == 'powai-brochure.pdf'
    status, raw, headers = rep.request('GET',
        item['attachment']['url'].split('/crm/inbox', 1)[1], raw=True)
    assert (status, raw) == (200, PDF)
    assert headers['Content-Disposition'].startswith('attachment;')


def test_a_file_whatsapp_refuses_is_explained_and_nothing_queued(
        crm_site, manager, rep):
    conversation_id, _, _ = writes_in(crm_site, manager,
        "Floor plan?", owner=rep.user_id)
    body, content_type = multipart({}, {'file': (
                'floor-plan.heic', 'image/heic', b'\x00' * 100)})
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        body, headers={'Content-Type': content_type})
    assert status == 400
    assert 'floor-plan.heic' in answer['message']
    outbound = [i for i in rep.thread(conversation_id)['items']
        if i['direction'] == 'outbound' and i['type'] == 'message']
    assert outbound == []
