"""The record rules, proved over the real JSON-RPC as each demo role.

Demo team "Mumbai Sales": rep, rep2 and agent; leads owned by each, and
unassigned ones in the team."""
import contextlib

import pytest

from .rpc import RpcError

LEAD_FIELDS = ['name', 'owner', 'team']


@pytest.fixture(scope='module')
def rep(crm_site):
    return crm_site.login('rep')


@pytest.fixture(scope='module')
def agent(crm_site):
    return crm_site.login('agent')


@pytest.fixture(scope='module')
def accountant(crm_site):
    return crm_site.login('accountant')


@contextlib.contextmanager
def refused():
    "The server must refuse the call for lack of rights, not fail otherwise."
    with pytest.raises(RpcError) as error:
        yield
    assert 'not allowed' in error.value.message, error.value


def user_id(session, login):
    user, = session.search('res.user', [('login', '=', login)])
    return user


def active_leads_in_database(crm_site):
    "{id: owner} of the site's active leads, read past Tryton and its rules."
    return dict(crm_site.sql('SELECT id, owner FROM crm_lead WHERE active'))


@pytest.fixture(scope='module')
def rep2_lead(manager):
    "A lead owned by rep2, seen through the manager."
    rep2 = user_id(manager, 'rep2')
    return manager.search('crm.lead', [('owner', '=', rep2)], limit=1)[0]


@pytest.fixture(scope='module')
def unassigned_lead(manager, rep):
    "An unassigned lead of the rep's team."
    return manager.search('crm.lead', [('owner', '=', None),
            ('team.members', '=', rep.user_id)], limit=1)[0]


def test_manager_sees_every_lead_of_the_site(manager, crm_site):
    in_database = active_leads_in_database(crm_site)
    # Seeing them all proves something only if others own some: the demo
    # gives rep, rep2 and agent leads, and leaves some unassigned.
    others = {user_id(manager, login) for login in ['rep', 'rep2', 'agent']}
    assert others | {None} <= set(in_database.values())
    assert sorted(manager.search('crm.lead', [])) == sorted(in_database)


def test_rep_sees_only_own_and_unassigned_team_leads(rep, manager):
    me = rep.user_id
    leads = rep.search_read('crm.lead', [], LEAD_FIELDS)
    assert leads
    assert {l['owner'] for l in leads} <= {me, None}
    # Leads nobody works yet and of no team (a WhatsApp message from a
    # new number) are the managers' to hand out.
    expected = manager.search_count('crm.lead',
        ['OR', ('owner', '=', me), [('owner', '=', None),
                ('team.members', '=', me)]])
    assert len(leads) == expected


def test_rep_cannot_read_another_reps_lead(rep, rep2_lead):
    with refused():
        rep.model('crm.lead', 'read', [rep2_lead], ['name'])


def test_rep_cannot_write_another_reps_lead(rep, manager, rep2_lead):
    with refused():
        rep.model('crm.lead', 'write', [rep2_lead], {'notes': 'taken over'})
    lead, = manager.model('crm.lead', 'read', [rep2_lead], ['notes'])
    assert lead['notes'] != 'taken over'


def test_rep_can_work_an_unassigned_team_lead(rep, unassigned_lead):
    rep.model('crm.lead', 'write', [unassigned_lead],
        {'notes': 'Called, interested in 2 BHK'})
    lead, = rep.model('crm.lead', 'read', [unassigned_lead], ['notes'])
    assert lead['notes'] == 'Called, interested in 2 BHK'


def test_rep_cannot_read_another_reps_deal(rep, manager):
    rep2 = user_id(manager, 'rep2')
    deals = manager.search('crm.deal', [('owner', '=', rep2)])
    assert deals
    with refused():
        rep.model('crm.deal', 'read', deals[:1], ['title'])


def test_field_agent_sees_only_own_leads(agent):
    leads = agent.search_read('crm.lead', [], LEAD_FIELDS)
    assert leads
    assert {l['owner'] for l in leads} == {agent.user_id}


def test_field_agent_cannot_see_unassigned_leads(agent, unassigned_lead):
    assert agent.search('crm.lead', [('owner', '=', None)]) == []
    with refused():
        agent.model('crm.lead', 'read', [unassigned_lead], ['name'])


def test_field_agent_sees_only_own_tasks(agent):
    tasks = agent.search_read('crm.task', [], ['owner'])
    assert {t['owner'] for t in tasks} <= {agent.user_id}


def test_field_agent_cannot_read_deal_value_or_lead_score(agent):
    deal = agent.search('crm.deal', [], limit=1)
    lead = agent.search('crm.lead', [], limit=1)
    with refused():
        agent.model('crm.deal', 'read', deal, ['value'])
    with refused():
        agent.model('crm.lead', 'read', lead, ['score'])


def test_field_agent_forms_leave_out_money_and_marketing(agent):
    deal_form = agent.model('crm.deal', 'fields_view_get', None, 'form')
    lead_form = agent.model('crm.lead', 'fields_view_get', None, 'form')
    assert 'value' not in deal_form['fields']
    assert 'lines' not in deal_form['fields']
    assert not {'score', 'campaign', 'source'} & set(lead_form['fields'])
    assert 'phone' in lead_form['fields']


def test_accountant_reads_every_deal_and_lead(accountant, manager):
    for model in ['crm.deal', 'crm.lead']:
        assert accountant.search_count(model, []) \
            == manager.search_count(model, []) > 0


def test_accountant_cannot_edit_a_lead(accountant, unassigned_lead, manager):
    with refused():
        accountant.model('crm.lead', 'write', [unassigned_lead],
            {'name': 'Changed by accounts'})
    lead, = manager.model('crm.lead', 'read', [unassigned_lead], ['name'])
    assert lead['name'] != 'Changed by accounts'


def test_accountant_cannot_create_a_lead(accountant):
    with refused():
        accountant.model('crm.lead', 'create', [{'name': 'Nope'}])


def test_rep_converts_own_lead_into_own_deal(rep):
    lead, = rep.model('crm.lead', 'create', [{
                'name': "Rupal Mehta", 'phone': '9123456780'}])
    rep.model('crm.lead', 'convert', [lead])
    converted, = rep.model('crm.lead', 'read', [lead],
        ['status', 'party', 'deals'])
    assert converted['status'] == 'converted'
    assert converted['party']
    deal, = rep.model('crm.deal', 'read', converted['deals'],
        ['owner', 'lead', 'party'])
    assert (deal['owner'], deal['lead'], deal['party']) == (
        rep.user_id, lead, converted['party'])


def test_rep_moving_a_deal_records_the_stage_change(rep):
    deal = rep.search('crm.deal', [('owner', '=', rep.user_id),
            ('stage.kind', '=', 'open')], limit=1)
    proposal, = rep.search('crm.stage', [('name', '=', "Proposal Sent")])
    rep.model('crm.deal', 'write', deal, {'stage': proposal})
    history = rep.search_read('crm.deal.stage_history',
        [('deal', '=', deal[0])], ['to_stage', 'changed_by'],
        order=[('id', 'DESC')], limit=1)
    assert history[0]['to_stage'] == proposal
    assert history[0]['changed_by'] == rep.user_id
