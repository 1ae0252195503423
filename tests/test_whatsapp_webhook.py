"""Real signed WhatsApp Cloud API deliveries over HTTP to the running site."""
import contextlib
import functools
import json
import os
import random
import signal
import sqlite3
import threading
import time
import urllib.parse

import pytest

from .conftest import eventually
from .whatsapp_payloads import WebhookClient, inbound, status, wamid


@pytest.fixture(scope='module')
def webhook(crm_site):
    return WebhookClient(crm_site)


@pytest.fixture
def settle(manager):
    "Wait until the worker has written every accepted delivery."
    def settle():
        assert eventually(lambda: manager.search_count('crm.whatsapp.inbox',
            [('processed_at', '=', None)]) == 0), \
            "the worker did not process the deliveries"
    return settle


def new_wa_id():
    "A WhatsApp id (country code and number, no plus) no lead has yet."
    return '91' + str(random.choice([9, 8, 7])) + '%09d' % random.randrange(
        10 ** 9)


def run_together(functions):
    "Call the functions at once, each in a thread, and wait for them all."
    threads = [threading.Thread(target=function) for function in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def lead_of(manager, wa_id):
    return manager.search_read('crm.lead',
        [('whatsapp', '=', '+' + wa_id)],
        ['name', 'source', 'replied_at', 'last_inbound_at', 'status'])


def messages_of(manager, wa_id, fields=('provider_id', 'body', 'kind')):
    "The lead's WhatsApp messages (not the activity, e.g. its assignment)."
    return manager.search_read('crm.message',
        [('lead.whatsapp', '=', '+' + wa_id), ('channel', '=', 'whatsapp')],
        list(fields), order=[('id', 'ASC')])


def test_verification_echoes_challenge_for_our_token(webhook):
    query = urllib.parse.urlencode({'hub.mode': 'subscribe',
            'hub.verify_token': webhook.verify_token,
            'hub.challenge': '1158201444'})
    assert webhook.get(query) == (200, '1158201444')


def test_verification_refuses_wrong_token(webhook):
    query = urllib.parse.urlencode({'hub.mode': 'subscribe',
            'hub.verify_token': 'guess', 'hub.challenge': '1'})
    assert webhook.get(query)[0] == 403


def test_message_from_unknown_number_creates_whatsapp_lead(webhook, manager, settle):
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Imran Shaikh"))[0] == 200
    settle()
    lead, = lead_of(manager, wa_id)
    source, = manager.model('crm.source', 'read', [lead['source']], ['code'])
    assert lead['name'] == "Imran Shaikh"
    assert source['code'] == 'whatsapp'
    assert lead['replied_at'] is None
    message, = messages_of(manager, wa_id)
    assert message['body'] == "Hi, is the 2 BHK in Powai still available?"


def test_first_message_records_whatsapp_opt_in_by_chat(webhook, manager, settle):
    wa_id = new_wa_id()
    webhook.post(inbound(wa_id))
    settle()
    consent, = manager.search_read('crm.lead.consent',
        [('lead.whatsapp', '=', '+' + wa_id)],
        ['channel', 'state', 'opted_in_how'])
    assert (consent['channel'], consent['state'], consent['opted_in_how']) \
        == ('whatsapp', 'opted_in', 'inbound_chat')


def test_message_from_known_lead_lands_on_its_timeline_and_marks_reply(
        webhook, manager, settle):
    lead_id, = manager.model('crm.lead', 'create', [{
                'name': "Known Person", 'phone': '+919812345670'}])
    webhook.post(inbound('919812345670', name="Someone Else"))
    settle()
    lead, = manager.model('crm.lead', 'read', [lead_id],
        ['name', 'replied_at', 'messages'])
    assert lead['name'] == "Known Person"
    assert lead['replied_at'] is not None
    assert len(lead['messages']) == 1


def test_redelivered_message_is_stored_once(webhook, manager, settle):
    wa_id, message_id = new_wa_id(), wamid()
    payload = inbound(wa_id, message_id=message_id)
    for _ in range(3):
        assert webhook.post(payload)[0] == 200
    settle()
    assert len(messages_of(manager, wa_id)) == 1
    assert len(lead_of(manager, wa_id)) == 1


def test_concurrent_duplicate_deliveries_are_stored_once(webhook, manager, settle):
    wa_id, message_id = new_wa_id(), wamid()
    payload = inbound(wa_id, message_id=message_id)
    answers = []
    run_together(
        [lambda: answers.append(webhook.post(payload)[0])] * 6)
    assert answers == [200] * 6
    settle()
    assert len(messages_of(manager, wa_id)) == 1


def test_burst_of_deliveries_is_written_batch_after_batch(
        webhook, manager, settle):
    "More deliveries than a batch (4 here) wait: every one is written."
    wa_ids = [new_wa_id() for _ in range(24)]
    answers = []

    def post(ids):
        for wa_id in ids:
            answers.append(webhook.post(inbound(wa_id))[0])
    run_together([functools.partial(post, wa_ids[i::6]) for i in range(6)])
    assert answers == [200] * 24
    settle()
    assert [len(messages_of(manager, wa_id)) for wa_id in wa_ids] == [1] * 24
    assert manager.search_count('crm.dead_letter',
        [('reason', 'like', '%locked%')]) == 0


@pytest.mark.parametrize('kind,content,expected', [
        ('image', {'id': '1479', 'mime_type': 'image/jpeg',
                'caption': "Floor plan"}, ('image', "Floor plan")),
        ('location', {'latitude': 19.1197, 'longitude': 72.9051,
                'name': "Powai Lake"}, ('location', "Powai Lake")),
        ('interactive', {'type': 'button_reply', 'button_reply': {
                    'id': 'visit', 'title': "Book a site visit"}},
            ('interactive', "Book a site visit")),
        ('hologram', {'shape': 'cube'}, ('hologram', None)),
        ])
def test_every_message_type_is_kept_on_the_timeline(
        webhook, manager, kind, content, expected, settle):
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, kind=kind, content=content))[0] == 200
    settle()
    message, = messages_of(manager, wa_id)
    assert (message['kind'], message['body']) == expected


def test_stop_opts_out_and_is_acknowledged_once(webhook, manager, settle):
    wa_id = new_wa_id()
    webhook.post(inbound(wa_id, content={'body': 'STOP'}))
    webhook.post(inbound(wa_id, content={'body': 'stop'}))
    webhook.post(inbound(wa_id, content={'body': 'बंद'}))
    settle()
    consent, = manager.search_read('crm.lead.consent',
        [('lead.whatsapp', '=', '+' + wa_id), ('channel', '=', 'whatsapp')],
        ['state'])
    assert consent['state'] == 'opted_out'
    acks = [m for m in messages_of(manager, wa_id, ['kind', 'direction'])
        if m['direction'] == 'outbound']
    assert [a['kind'] for a in acks] == ['opt_out_ack']


def test_status_for_unknown_message_is_accepted(webhook):
    assert webhook.post(status(wamid(), 'delivered'))[0] == 200


def test_missing_signature_is_refused_401(webhook, manager):
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id), sign=False)[0] == 401
    assert lead_of(manager, wa_id) == []


def test_bad_signature_is_refused_403(webhook, manager):
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id), signature='sha256=' + '0' * 64)[0] \
        == 403
    assert lead_of(manager, wa_id) == []


def test_body_signed_with_another_secret_is_refused(webhook):
    body = json.dumps(inbound(new_wa_id())).encode()
    webhook_secret, webhook.secret = webhook.secret, 'not-our-secret'
    try:
        signature = webhook.sign(body)
    finally:
        webhook.secret = webhook_secret
    assert webhook.post(body=body, signature=signature)[0] == 403


def test_malformed_json_is_400_and_kept_as_dead_letter(webhook, manager):
    body = b'{"object": "whatsapp_business_account", "entry": [ oops'
    code, answer = webhook.post(body=body)
    assert code == 400
    assert 'invalid JSON' in json.loads(answer)['error']
    letters = manager.search_read('crm.dead_letter',
        [('body', '=', body.decode())], ['endpoint', 'state'])
    assert [(l['endpoint'], l['state']) for l in letters] == [
        ('whatsapp', 'new')]


def test_json_that_is_not_a_delivery_is_400(webhook):
    assert webhook.post({'hello': 'world'})[0] == 400


def test_huge_body_is_refused_413(webhook):
    body = b'{"pad": "' + b'x' * (2 * 1024 * 1024) + b'"}'
    assert webhook.post(body=body)[0] == 413



def test_manager_can_set_a_dead_letter_aside(webhook, manager):
    body = '{"broken": '
    assert webhook.post(body=body.encode())[0] == 400
    letter, = manager.search('crm.dead_letter', [('body', '=', body)])
    manager.model('crm.dead_letter', 'ignore', [letter])
    letter, = manager.model('crm.dead_letter', 'read', [letter], ['state'])
    assert letter['state'] == 'ignored'


@contextlib.contextmanager
def worker_paused(crm_site):
    """The site's queue worker stopped (SIGSTOP) and resumed on leaving, so
    that what is posted meanwhile waits for it in one batch. Stopped
    between two transactions: inside one on SQLite it would hold the lock
    every post waits for (and they would answer 503)."""
    worker = crm_site.processes[1]
    for _ in range(200):
        os.kill(worker.pid, signal.SIGSTOP)
        if not crm_site.site.is_sqlite or sqlite_unlocked(crm_site.site):
            break
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.05)
    try:
        yield
    finally:
        os.kill(worker.pid, signal.SIGCONT)


def sqlite_unlocked(site):
    "Whether no other connection holds the site's SQLite database now."
    try:
        with contextlib.closing(sqlite3.connect(
                    site.path / f'{site.database}.sqlite', timeout=0.2,
                    isolation_level=None)) as database:
            database.execute('BEGIN EXCLUSIVE')
            database.execute('ROLLBACK')
        return True
    except sqlite3.OperationalError:
        return False


def dead_letters_about(manager, text):
    return manager.search_read('crm.dead_letter',
        [('endpoint', '=', 'whatsapp'), ('body', 'like', f'%{text}%')],
        ['reason'])


def test_bad_delivery_becomes_one_dead_letter_and_its_batch_is_written(
        crm_site, webhook, manager, settle):
    "A batch (4 here): a sender that is no phone number, then three leads."
    bad_sender = 'abc' + str(random.randrange(10 ** 9))
    good = [new_wa_id() for _ in range(3)]
    with worker_paused(crm_site):
        assert webhook.post(inbound(bad_sender))[0] == 200
        for wa_id in good:
            assert webhook.post(inbound(wa_id))[0] == 200
    settle()
    assert [len(lead_of(manager, wa_id)) for wa_id in good] == [1, 1, 1]
    letter, = dead_letters_about(manager, bad_sender)
    assert 'not a valid phone number' in letter['reason']
    assert manager.search_count('crm.dead_letter',
        [('reason', 'like', '%locked%')]) == 0


def test_bad_delivery_amid_good_ones_spares_those_before_and_after(
        crm_site, webhook, manager, settle):
    bad_sender = 'xyz' + str(random.randrange(10 ** 9))
    before, after = new_wa_id(), new_wa_id()
    with worker_paused(crm_site):
        for sender in [before, bad_sender, after]:
            assert webhook.post(inbound(sender))[0] == 200
    settle()
    assert (len(lead_of(manager, before)), len(lead_of(manager, after))) \
        == (1, 1)
    assert len(dead_letters_about(manager, bad_sender)) == 1
