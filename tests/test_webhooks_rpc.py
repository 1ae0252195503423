"""Outgoing webhooks on the running demo site, as a manager sets one up in
the desk: the worker POSTs each event after the change is committed,
signed with the webhook's secret; a receiver that was down gets it once it
is back; one that answers 410 switches the webhook off."""
import hashlib
import hmac
import json
import secrets

import pytest

from kraya_crm.tests.test_webhook import Receiver

from .conftest import eventually
from .test_board_api import rpc_decimal


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def subscribe(manager):
    """subscribe(url, events): a webhook made as in the desk, deleted
    after the test so that the other tests' changes are no events."""
    made = []

    def subscribe(url, events):
        webhook, = manager.model('crm.webhook', 'create', [{
                    'name': "n8n", 'url': url, 'events': events}])
        made.append(webhook)
        secret, = manager.model('crm.webhook', 'read', [webhook], ['secret'])
        return webhook, secret['secret']
    yield subscribe
    manager.model('crm.webhook', 'delete', made)


def new_lead(session, name):
    lead, = session.model('crm.lead', 'create', [{'name': name,
                'phone': f'+9197{secrets.randbelow(10 ** 8):08d}'}])
    return lead


def verified(secret, headers, body):
    expected = 'sha256=' + hmac.new(secret.encode(),
        headers['X-Kraya-Timestamp'].encode() + b'.' + body,
        hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers['X-Kraya-Signature'], expected)


def deliveries(manager, webhook):
    return manager.search_read('crm.webhook.delivery',
        [('webhook', '=', webhook)],
        ['state', 'attempts', 'last_status', 'last_error', 'event_name'],
        order=[('id', 'ASC')])


def test_new_lead_and_won_deal_reach_the_receiver_signed(
        crm_site, manager, receiver, subscribe):
    webhook, secret = subscribe(receiver.url,
        ['lead.created', 'deal.stage_changed', 'deal.won'])
    rep = crm_site.login('rep')
    lead = new_lead(rep, "Webhook Asha")
    assert eventually(lambda: receiver.received)
    (headers, body), = receiver.received
    assert verified(secret, headers, body)
    event = json.loads(body)
    assert (event['event'], event['data']['id'], event['data']['name']) == (
        'lead.created', lead, "Webhook Asha")

    won, = manager.search('crm.stage', [('kind', '=', 'won')])
    deal, = manager.model('crm.deal', 'create', [{'title': "Webhook 2 BHK",
                'lead': lead, 'value': rpc_decimal(4500000)}])
    manager.model('crm.deal', 'write', [deal], {'stage': won})
    assert eventually(lambda: len(receiver.received) == 3)
    assert [json.loads(b)['event'] for _, b in receiver.received[1:]] == [
        'deal.stage_changed', 'deal.won']
    assert all(verified(secret, h, b) for h, b in receiver.received)
    # The worker writes the answer just after the receiver has the body.
    assert eventually(lambda: [d['state'] for d in deliveries(
                manager, webhook)] == ['delivered'] * 3)


def test_receiver_down_gets_the_event_when_back(
        crm_site, manager, run_crons, subscribe):
    with Receiver() as down:
        port = down.server.server_port
    webhook, secret = subscribe(down.url, ['lead.created'])
    new_lead(manager, "Webhook Ravi")
    assert eventually(lambda: (deliveries(manager, webhook) or [{}])[0].get(
            'last_error'))
    waiting, = deliveries(manager, webhook)
    assert waiting['state'] == 'pending'
    assert 'ConnectionError' in waiting['last_error']
    with Receiver(port=port) as back:
        # The cron's minute: the retry's time (1 s here) has come.
        assert eventually(lambda: run_crons('crm.webhook.delivery|wake')
            or deliveries(manager, webhook)[0]['state'] == 'delivered',
            timeout=30, interval=1)
        (headers, body), = back.received
        assert verified(secret, headers, body)
        assert json.loads(body)['attempt'] >= 2


def test_receiver_gone_switches_the_webhook_off(
        crm_site, manager, subscribe):
    with Receiver(answers=[(410, 0)]) as gone:
        webhook, _ = subscribe(gone.url, ['lead.created'])
        new_lead(manager, "Webhook Meena")
        assert eventually(lambda: not manager.model('crm.webhook', 'read',
                [webhook], ['active'])[0]['active'])
    record, = manager.model('crm.webhook', 'read', [webhook],
        ['disabled_reason'])
    assert '410' in record['disabled_reason']
    assert [d['state'] for d in deliveries(manager, webhook)] == ['failed']

