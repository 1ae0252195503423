"""Automation rules on the running demo site: a manager writes a rule, a
rep's save fires it, the worker acts after the commit; an action that
fails on one record is rolled back and logged while the others go
through and the rep's save stands; a Python action is the
administrator's alone."""
import pytest

from .conftest import eventually
from .rpc import RpcError


@pytest.fixture
def make_rule(manager):
    """make_rule(session, values): a rule made over RPC, deleted after
    the test so that the other tests' leads fire nothing."""
    made = []

    def make_rule(session, values):
        rule, = session.model('crm.automation.rule', 'create', [values])
        made.append(rule)
        return rule
    yield make_rule
    manager.model('crm.automation.rule', 'delete', made)


def runs(session, lead):
    return session.search_read('crm.automation.run',
        [('lead', '=', lead)], ['state', 'actions', 'error'])


def test_a_reps_new_lead_gets_the_rules_task_from_the_worker(
        crm_site, manager, make_rule):
    make_rule(manager, {
            'name': "Automation City: call at once",
            'applies_to': 'crm.lead', 'trigger': 'created',
            'condition': '[["city", "=", "Automation City"]]',
            'actions': [('create', [{'kind': 'create_task',
                            'task_kind': 'call',
                            'task_name': "Call the new Automation City lead"}])],
            })
    rep = crm_site.login('rep')
    lead, other = rep.model('crm.lead', 'create', [
            {'name': "Rule Asha", 'city': "Automation City"},
            {'name': "Rule Ravi", 'city': "Elsewhere"}])
    assert eventually(lambda: runs(manager, lead))
    (run,) = runs(manager, lead)
    assert run['state'] == 'done', run
    tasks = rep.search_read('crm.task', [('lead', '=', lead)], ['name'])
    assert [t['name'] for t in tasks] == ["Call the new Automation City lead"]
    assert runs(manager, other) == []
    assert rep.search('crm.task', [('lead', '=', other)]) == []


def test_a_failing_action_is_logged_and_the_others_go_through(
        crm_site, admin, manager, make_rule):
    make_rule(admin, {
            'name': "Snippet City check",
            'applies_to': 'crm.lead', 'trigger': 'created',
            'condition': '[["city", "=", "Snippet City"]]',
            'actions': [('create', [{'kind': 'python', 'code':
                            "if record['name'] == 'Snippet Bad':\n"
                            "    set('id', 1)\n"
                            "else:\n"
                            "    set('campaign', 'Checked')\n"}])],
            })
    rep = crm_site.login('rep')
    good, bad = rep.model('crm.lead', 'create', [
            {'name': "Snippet Good", 'city': "Snippet City"},
            {'name': "Snippet Bad", 'city': "Snippet City"}])
    assert eventually(lambda: runs(manager, good) and runs(manager, bad))
    (good_run,), (bad_run,) = runs(manager, good), runs(manager, bad)
    assert good_run['state'] == 'done'
    assert bad_run['state'] == 'failed'
    assert "not a field it may set" in bad_run['error']
    good_lead, bad_lead = sorted(rep.model('crm.lead', 'read', [good, bad],
            ['name', 'campaign']), key=lambda row: row['id'] != good)
    # The rep's save stands; only the rule's change to the bad one is gone.
    assert (good_lead['campaign'], bad_lead['campaign']) == ("Checked", None)
    assert bad_lead['name'] == "Snippet Bad"


def test_only_an_administrator_writes_python(manager, make_rule):
    with pytest.raises(RpcError) as refused:
        make_rule(manager, {
                'name': "Manager's snippet",
                'applies_to': 'crm.lead', 'trigger': 'created',
                'actions': [('create', [{'kind': 'python',
                                'code': "log('hello')"}])],
                })
    assert "Only an administrator" in refused.value.message
    rule = make_rule(manager, {
            'name': "Manager's plain rule",
            'applies_to': 'crm.lead', 'trigger': 'created',
            'actions': [('create', [{'kind': 'create_task',
                            'task_kind': 'call', 'task_name': "Call"}])],
            })
    (action,) = manager.search('crm.automation.action',
        [('rule', '=', rule)])
    with pytest.raises(RpcError):
        manager.model('crm.automation.action', 'write', [action],
            {'kind': 'python', 'code': "log('hello')"})


def test_the_demos_big_indiamart_enquiry_goes_hot_to_rahul(crm_site, manager):
    rep2 = crm_site.login('rep2')
    indiamart, = manager.search('crm.source', [('code', '=', 'indiamart')])
    big, small = rep2.model('crm.lead', 'create', [
            {'name': "IndiaMART Big", 'source': indiamart,
                'budget': {'__class__': 'Decimal', 'decimal': '2500000'}},
            {'name': "IndiaMART Small", 'source': indiamart,
                'budget': {'__class__': 'Decimal', 'decimal': '400000'}}])
    assert eventually(lambda: runs(manager, big))
    rahul, = manager.search('res.user', [('login', '=', 'rep')])
    # read() answers in no set order (PostgreSQL).
    lead, other = sorted(manager.model('crm.lead', 'read', [big, small],
            ['owner', 'tags.name', 'tasks.name']),
        key=lambda row: [big, small].index(row['id']))
    assert lead['owner'] == rahul
    assert [t['name'] for t in lead['tags.']] == ["Hot"]
    assert [t['name'] for t in lead['tasks.']] == [
        "Call the big IndiaMART enquiry"]
    assert other['tags.'] == [] and runs(manager, small) == []


def test_the_demos_won_deal_thanks_the_customer(crm_site, manager):
    rep = crm_site.login('rep')
    lead, = rep.model('crm.lead', 'create', [{'name': "Won Customer"}])
    deal, = rep.model('crm.deal', 'create', [{'title': "Won 2 BHK",
                'lead': lead}])
    won, = manager.search('crm.stage', [('kind', '=', 'won')])
    manager.model('crm.deal', 'write', [deal], {'stage': won})
    enrolled = lambda: manager.search_read('crm.enrollment',
        [('lead', '=', lead)], ['sequence.name', 'deal'])
    assert eventually(enrolled)
    (enrollment,) = enrolled()
    assert enrollment['sequence.']['name'] == "Thank you and referral"
    assert enrollment['deal'] is None
