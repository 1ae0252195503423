"""The dashboard's HTTP API on the demo site, as its page reads it: the
desk's session cookie, and figures of the user's scope with the record
rules applied (the rep their own leads, deals and tasks, the manager
everyone's), against the demo's monthly targets."""
import urllib.error
import urllib.request
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from .test_inbox_api import InboxClient
from .test_my_day_api import new_lead, rpc_datetime


@pytest.fixture(scope='module')
def rep(crm_site):
    return InboxClient(crm_site, 'rep', page='dashboard')


@pytest.fixture(scope='module')
def boss(crm_site):
    "The demo's manager on the dashboard's API."
    return InboxClient(crm_site, 'manager', page='dashboard')


def figures(client):
    status, answer = client.get('figures')
    assert status == 200, answer
    return answer


def tile(data, key):
    found, = [t for t in data['tiles'] if t['key'] == key]
    return found


def funnel(data):
    return {stage['id']: stage['count'] for stage in data['charts']['funnel']}


def test_page_and_api_refuse_a_request_without_session(crm_site):
    base = f'{crm_site.url}/{crm_site.database}/crm/dashboard'
    for path, expected in [('', b'Sign in first'),
            ('/api/figures', b'login_required')]:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(base + path, timeout=30)
        with error.value:
            assert error.value.code == 401
            assert expected in error.value.read()


def this_month_start():
    "The start of this Indian month, naive UTC."
    zone = ZoneInfo('Asia/Kolkata')
    first = dt.datetime.now(zone).replace(day=1, hour=0, minute=0,
        second=0, microsecond=0)
    return first.astimezone(dt.timezone.utc).replace(tzinfo=None)


def expected_funnel(manager, owner=None):
    """Per stage, the open deals in it, or those that entered a won or
    lost stage this month."""
    mine = [('owner', '=', owner)] if owner else []
    this_month = [('stage_entered_at', '>=', rpc_datetime(
                this_month_start()))]
    return {stage['id']: manager.model('crm.deal', 'search_count',
            [('stage', '=', stage['id'])] + mine
            + (this_month if stage['kind'] != 'open' else []))
        for stage in manager.search_read('crm.stage', [], ['kind'])}


def test_rep_sees_their_own_deals_and_the_manager_everyones(
        manager, rep, boss):
    mine, everyone = figures(rep), figures(boss)
    assert (mine['scope'], everyone['scope']) == ('mine', 'all')
    # The funnel counts what each may read: the rep's own deals only.
    assert funnel(mine) == expected_funnel(manager, rep.user_id)
    assert funnel(everyone) == expected_funnel(manager)
    assert sum(funnel(mine).values()) < sum(funnel(everyone).values())
    assert Decimal(tile(mine, 'pipeline')['value']) < Decimal(
        tile(everyone, 'pipeline')['value'])
    # Every amount in Indian grouping.
    assert tile(everyone, 'pipeline')['text'].startswith('₹')


def target_of(manager, field, value):
    "The demo's target of this month for a user or team."
    month = dt.datetime.now(ZoneInfo('Asia/Kolkata')).date().replace(day=1)
    target, = manager.search_read('crm.sales.target', [
            (field, '=', value),
            ('month', '=', {'__class__': 'date', 'year': month.year,
                    'month': month.month, 'day': 1})], ['amount'])
    return Decimal(str(target['amount']['decimal'])
        if isinstance(target['amount'], dict) else str(target['amount']))


def test_won_this_month_is_set_against_the_demo_targets(manager, rep, boss):
    mine, everyone = figures(rep), figures(boss)
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    assert (mine['target']['kind'], Decimal(mine['target']['amount'])) == (
        'rep', target_of(manager, 'user', rep.user_id))
    team_target = target_of(manager, 'team', team)
    assert (everyone['target']['kind'],
        Decimal(everyone['target']['amount'])) == ('team', team_target)
    won = Decimal(everyone['target']['won'])
    assert everyone['target']['percent'] == round(100 * won / team_target)
    # The demo won deals over the fiscal year.
    by_month = everyone['charts']['won_by_month']
    assert len(by_month) == 12 and by_month[0]['label'] == 'Apr'
    assert sum(Decimal(m['value']) for m in by_month) >= won
    assert sum(m['count'] for m in by_month) > 0


def test_new_hot_lead_counts_for_its_owner_and_the_manager_only(
        crm_site, manager, rep, boss):
    rep2_client = InboxClient(crm_site, 'rep2', page='dashboard')
    keys = ['new_leads', 'hot_waiting']

    def counts():
        return [[tile(figures(client), key)['value'] for key in keys]
            for client in [rep, rep2_client, boss]]
    before = counts()
    new_lead(manager, rep.user_id, name="Dashboard Lead", hot_on=crm_site)
    after = counts()
    assert after == [[n + 1 for n in before[0]], before[1],
        [n + 1 for n in before[2]]]


def test_field_agent_sees_their_counts_without_money_or_sources(crm_site):
    agent = figures(InboxClient(crm_site, 'agent', page='dashboard'))
    assert (agent['scope'], agent['show_money'], agent['target']) == (
        'mine', False, None)
    assert agent['charts']['sources'] is None
    assert agent['charts']['won_by_month'] is None
    pipeline = tile(agent, 'pipeline')
    assert pipeline['label'] == "Open deals"
    assert not any('₹' in (t['text'] + (t['detail'] or ''))
        for t in agent['tiles'])
