"""Lead scoring on the running demo site: a lead who writes on WhatsApp
(through the simulator) after a rep's answer gets the points of a reply
and of asking the price, with the breakdown, and the inbox shows the band."""
import re
import secrets
import urllib.error
import urllib.request

import pytest

from .conftest import eventually
from .test_inbox_api import InboxClient, writes_in


@pytest.fixture(scope='module')
def rep(crm_site):
    return InboxClient(crm_site, 'rep')


def breakdown(manager, lead_id):
    return {l['reason'].split(' (')[0]: l['points']
        for l in manager.search_read('crm.lead.score_line',
            [('lead', '=', lead_id)], ['reason', 'points'])}


def test_lead_asking_kitna_rate_on_whatsapp_scores_reply_and_price(
        crm_site, manager, rep):
    conversation_id, lead_id, number = writes_in(crm_site, manager,
        "Namaste", name="Kiran Mehta", owner=rep.user_id)
    assert breakdown(manager, lead_id) == {}, "a first message is no reply"
    status, answer = rep.post(f'conversations/{conversation_id}/messages',
        {'channel': 'whatsapp', 'text': "Namaste Kiran! Which flat?"})
    assert status == 201, answer

    crm_site.whatsapp.reply(number, "kitna rate hai 3BHK?")
    assert eventually(lambda: len(breakdown(manager, lead_id)) == 2), \
        breakdown(manager, lead_id)
    assert breakdown(manager, lead_id) == {
        "Replied on WhatsApp": 25, "Asked for a price": 15}
    lead, = manager.model('crm.lead', 'read', [lead_id],
        ['score', 'band', 'score_lines'])
    assert (lead['score'], lead['band']) == (40, 'warm')
    reasons = [l['reason'] for l in manager.model('crm.lead.score_line',
            'read', lead['score_lines'], ['reason'])]
    assert any(r.endswith(': kitna rate hai 3BHK?') for r in reasons), reasons
    events = manager.search_read('crm.lead.score_event',
        [('lead', '=', lead_id)], ['kind', 'points'])
    assert sorted((e['kind'], e['points']) for e in events) == [
        ('asked_price', 15), ('replied_whatsapp', 25)]

    status, answer = rep.get('conversations')
    assert status == 200
    listed = {c['id']: c for c in answer['conversations']}
    assert listed[conversation_id]['band'] == 'warm'


def test_lead_form_has_the_why_tab_and_the_list_the_band(manager):
    form = manager.model('crm.lead', 'fields_view_get', None, 'form')
    assert 'Why this score' in form['arch']
    assert {'score_lines', 'win_probability', 'win_reasons'} <= set(
        form['fields'])
    tree = manager.model('crm.lead', 'fields_view_get', None, 'tree')
    assert 'band' in tree['fields']


def test_demo_model_learnt_from_its_closed_deals(manager):
    model, = manager.search_read('crm.scoring.model', [], [
            'state', 'n_won', 'n_lost', 'auc', 'coefficients_text'], limit=1)
    assert model['state'] == 'trained', model
    assert model['n_won'] + model['n_lost'] >= 200
    assert model['auc'] > 0.55
    # What is true in the demo's history: referrals and fast answers win.
    weights = {label: float(weight) for weight, label in (
            line.split('  ', 1)
            for line in model['coefficients_text'].splitlines())}
    assert weights["Source: Referral"] > 0.3, weights
    assert weights["Hours to the first response"] < -0.3, weights


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_a_click_on_a_link_of_our_email_counts_as_engagement(
        crm_site, manager, rep):
    conversation_id, lead_id, _ = writes_in(crm_site, manager,
        "Email me the brochure", name="Farah Khan", owner=rep.user_id)
    address = f'farah{secrets.token_hex(4)}@example.in'
    manager.model('crm.lead', 'write', [lead_id], {'email': address})
    status, answer = rep.post(f'conversations/{conversation_id}/messages', {
            'channel': 'email', 'subject': "Powai brochure",
            'text': "Here it is: https://www.example.in/powai.pdf, enjoy."})
    assert status == 201, answer
    email, = eventually(lambda: crm_site.mail.sent_to(address))
    html = email.get_body(('html',)).get_content()
    link = re.search(r'href="([^"]*/crm/link/[^"]*)"', html)[1].replace(
        '&amp;', '&')
    assert 'https://www.example.in/powai.pdf' in \
        email.get_body(('plain',)).get_content()
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as followed:
        opener.open(link, timeout=10)
    assert followed.value.code == 302
    assert followed.value.headers['Location'] == \
        'https://www.example.in/powai.pdf'
    assert "Engaged with an email" in eventually(
        lambda: breakdown(manager, lead_id))
    # A link that was not in our email goes nowhere.
    forged = link.replace('powai.pdf', 'evil.exe')
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(forged, timeout=10)
    assert refused.value.code == 404
