"""The My day page's HTTP API on a real site, as its page uses it: the
desk's session cookie, the page's CSRF token, and record rules (the field
agent sees and finishes only their own tasks and leads). A one-tap outcome
logs the call, the lead's first response, and finishes the task."""
import datetime as dt
import secrets
import urllib.error
import urllib.request
from zoneinfo import ZoneInfo

import pytest

from .test_inbox_api import InboxClient


def rpc_datetime(value):
    return {'__class__': 'datetime', 'year': value.year,
        'month': value.month, 'day': value.day, 'hour': value.hour,
        'minute': value.minute, 'second': value.second, 'microsecond': 0}


def utc_in(hours):
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) \
        + dt.timedelta(hours=hours)


def later_today():
    """Up to 3 hours from now and still today in India (the demo's
    timezone): My day's tasks are those due by tonight."""
    zone = ZoneInfo('Asia/Kolkata')
    now = dt.datetime.now(zone)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1),
        dt.time(0), tzinfo=zone)
    due = now + min(dt.timedelta(hours=3), (midnight - now) / 2)
    return due.astimezone(dt.timezone.utc).replace(tzinfo=None,
        microsecond=0)


def new_number():
    return '+9197' + ''.join(secrets.choice('0123456789') for _ in range(8))


def new_lead(manager, owner, name="Kiran Joshi", hot_on=None):
    """A lead of `owner` (a user id) nobody has answered yet: its id,
    number. hot_on: the site whose database makes it hot (as scoring rules
    would, past them: the rules are not what is tested here)."""
    number = new_number()
    lead_id, = manager.model('crm.lead', 'create', [{'name': name,
                'phone': number, 'owner': owner}])
    if hot_on:
        hot_on.sql("UPDATE crm_lead SET score = 91, band = 'hot' "
            "WHERE id = %s", (lead_id,))
    return lead_id, number


def new_task(manager, owner, lead_id, hours, kind='call',
        name="Call about the visit"):
    task_id, = manager.model('crm.task', 'create', [{'name': name,
                'kind': kind, 'lead': lead_id, 'owner': owner,
                'due': rpc_datetime(utc_in(hours))}])
    return task_id


@pytest.fixture(scope='module')
def agent(crm_site):
    return InboxClient(crm_site, 'agent', page='my-day')


@pytest.fixture(scope='module')
def rep(crm_site):
    return InboxClient(crm_site, 'rep', page='my-day')


@pytest.fixture(scope='module')
def agents_day(crm_site, manager, agent, rep):
    """An overdue task and a hot lead of the agent's, the same of the
    rep's: {name: id}."""
    lead, number = new_lead(manager, agent.user_id, name="Agent's lead")
    hot, hot_number = new_lead(manager, agent.user_id,
        name="Agent's hot lead", hot_on=crm_site)
    rep_lead, _ = new_lead(manager, rep.user_id, name="Rep's lead")
    rep_hot, _ = new_lead(manager, rep.user_id,
        name="Rep's hot lead", hot_on=crm_site)
    return {
        'lead': lead, 'number': number, 'hot': hot, 'hot_number': hot_number,
        'rep_lead': rep_lead, 'rep_hot': rep_hot,
        'overdue': new_task(manager, agent.user_id, lead, -2),
        'tomorrow': new_task(manager, agent.user_id, lead, 48),
        'rep_task': new_task(manager, rep.user_id, rep_lead, -2),
        }


def day(client):
    status, answer = client.get('day')
    assert status == 200, answer
    return answer


def test_page_and_api_refuse_without_a_session(crm_site, agent):
    status, page, _ = agent.request('GET', '', raw=True, cookie=False)
    assert status == 401 and b'Sign in' in page
    status, answer = agent.get('day', cookie=False)
    assert (status, answer['error']) == (401, 'login_required')


def test_page_carries_csrf_token_and_strict_headers(agent):
    status, page, headers = agent.request('GET', '', raw=True)
    assert status == 200
    assert b'my_day/my_day.js' in page
    assert "script-src 'self'" in headers['Content-Security-Policy']
    assert headers['Cache-Control'] == 'no-store'
    assert len(agent.csrf) == 64


def test_agent_sees_own_overdue_task_and_hot_lead_only(agents_day, agent):
    answer = day(agent)
    tasks = {t['id']: t for t in answer['tasks']}
    assert agents_day['overdue'] in tasks
    assert agents_day['tomorrow'] not in tasks
    assert agents_day['rep_task'] not in tasks
    task = tasks[agents_day['overdue']]
    assert task['overdue'] and task['kind'] == 'call'
    hot = {l['id'] for l in answer['hot_leads']}
    assert agents_day['hot'] in hot
    assert agents_day['rep_hot'] not in hot
    assert agents_day['lead'] not in hot


def test_task_carries_call_whatsapp_inbox_and_desk_links(
        crm_site, agents_day, agent):
    task, = [t for t in day(agent)['tasks']
        if t['id'] == agents_day['overdue']]
    lead = task['lead']
    number = agents_day['number']
    assert lead['tel_url'] == f'tel:{number}'
    assert lead['wa_url'] == f'https://wa.me/{number[1:]}'
    assert lead['desk_url'] == \
        f"/#{crm_site.database}/model/crm.lead/{agents_day['lead']}"
    # Nobody wrote to the lead yet: the link makes its conversation.
    assert lead['inbox_url'] == \
        f"/{crm_site.database}/crm/my-day/inbox/{agents_day['lead']}"
    assert {o['value'] for o in task['outcomes']} >= {
        'connected', 'no_answer', 'busy'}


@pytest.mark.parametrize('headers', [
        {'X-CSRF-Token': ''},
        {'X-CSRF-Token': '0' * 64},
        {'Sec-Fetch-Site': 'cross-site'},
        {'Origin': 'https://evil.example'},
        ], ids=['no-token', 'wrong-token', 'cross-site', 'foreign-origin'])
def test_changes_from_another_site_are_refused(
        agents_day, agent, manager, headers):
    status, answer = agent.post(f"tasks/{agents_day['tomorrow']}/outcome",
        {'outcome': 'busy'}, headers=headers)
    assert (status, answer['error']) == (403, 'cross_site')
    task, = manager.model('crm.task', 'read', [agents_day['tomorrow']],
        ['state'])
    assert task['state'] == 'open'


def test_agent_cannot_finish_a_reps_task_or_call_a_reps_lead(
        agents_day, agent, manager):
    status, answer = agent.post(f"tasks/{agents_day['rep_task']}/outcome",
        {'outcome': 'no_answer'})
    assert (status, answer['error']) == (404, 'not_found')
    status, answer = agent.post(f"leads/{agents_day['rep_hot']}/calls",
        {'outcome': 'no_answer'})
    assert (status, answer['error']) == (404, 'not_found')
    lead, = manager.model('crm.lead', 'read', [agents_day['rep_hot']],
        ['first_response_at'])
    assert lead['first_response_at'] is None


def test_outcome_not_of_the_tasks_kind_is_refused(agents_day, agent):
    status, answer = agent.post(f"tasks/{agents_day['tomorrow']}/outcome",
        {'outcome': 'visit_done'})
    assert (status, answer['error']) == (400, 'bad_outcome')


def test_one_tap_no_answer_finishes_task_and_is_first_response(
        agents_day, agent, manager):
    status, answer = agent.post(f"tasks/{agents_day['overdue']}/outcome",
        {'outcome': 'no_answer'})
    assert status == 200, answer
    assert answer['task']['state'] == 'done'
    assert answer['next_task'] is None
    task, = manager.model('crm.task', 'read', [agents_day['overdue']],
        ['state', 'outcome'])
    assert (task['state'], task['outcome']) == ('done', 'no_answer')
    lead, = manager.model('crm.lead', 'read', [agents_day['lead']],
        ['first_response_at', 'first_response_by'])
    assert lead['first_response_at'] and \
        lead['first_response_by'] == agent.user_id
    call, = manager.search_read('crm.message', [
            ('lead', '=', agents_day['lead']), ('channel', '=', 'call')],
        ['direction', 'call_outcome', 'author'])
    assert (call['direction'], call['call_outcome'], call['author']) == (
        'outbound', 'no_answer', agent.user_id)
    assert agents_day['overdue'] not in {t['id'] for t in day(agent)['tasks']}


def test_next_task_is_planned_chained_to_the_finished_one(
        agents_day, agent, manager):
    lead, _ = new_lead(manager, agent.user_id)
    task_id = new_task(manager, agent.user_id, lead, -1, kind='whatsapp')
    # Planned for later today, so that it is on today's list (at 22:00 in
    # India, 3 hours on is tomorrow's).
    due = later_today()
    status, answer = agent.post(f'tasks/{task_id}/outcome', {
            'outcome': 'interested', 'note': "Sunday suits them",
            'next': {'kind': 'site_visit', 'due': due.isoformat() + 'Z',
                'name': "Show the flat"}})
    assert status == 200, answer
    planned = answer['next_task']
    assert (planned['kind'], planned['name'], planned['previous']['id']) == (
        'site_visit', "Show the flat", task_id)
    assert planned['id'] in {t['id'] for t in day(agent)['tasks']}
    # Asked after the tap: the next one of a task already done.
    status, answer = agent.post(f"tasks/{planned['id']}/next",
        {'kind': 'call', 'due': due.isoformat() + 'Z'})
    assert status == 201, answer
    assert answer['next_task']['previous']['id'] == planned['id']
    status, answer = agent.post(f"tasks/{planned['id']}/next", {'kind': 'x'})
    assert (status, answer['error']) == (400, 'bad_next')


def test_call_to_a_hot_lead_is_its_first_response(agents_day, agent,
        manager):
    status, answer = agent.post(f"leads/{agents_day['hot']}/calls",
        {'outcome': 'busy', 'note': "Will try at 6"})
    assert status == 201, answer
    assert answer['lead']['first_response_at']
    assert agents_day['hot'] not in {
        l['id'] for l in day(agent)['hot_leads']}
    status, answer = agent.post(f"leads/{agents_day['hot']}/calls",
        {'outcome': 'maybe'})
    assert (status, answer['error']) == (400, 'bad_outcome')


def test_rep_sees_own_task_not_the_agents(agents_day, rep):
    ids = {t['id'] for t in day(rep)['tasks']}
    assert agents_day['rep_task'] in ids
    assert agents_day['tomorrow'] not in ids


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def open_inbox_link(crm_site, client, lead_id):
    "GET a lead's inbox link of My day: (status, Location)."
    request = urllib.request.Request(
        f'{crm_site.url}/{crm_site.database}/crm/my-day/inbox/{lead_id}',
        headers={'Cookie': client.session.cookie})
    try:
        with urllib.request.build_opener(NoRedirect).open(
                request, timeout=30) as response:
            return response.status, response.headers.get('Location')
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get('Location')


def test_inbox_link_makes_the_conversation_of_own_leads_only(
        crm_site, agents_day, agent, manager):
    status, location = open_inbox_link(crm_site, agent, agents_day['hot'])
    assert status == 303
    conversation, = manager.search('crm.conversation',
        [('lead', '=', agents_day['hot'])])
    assert location.endswith(
        f'/{crm_site.database}/crm/inbox?c={conversation}')
    # Made once: the second tap goes to the same one.
    assert open_inbox_link(crm_site, agent, agents_day['hot']) == (
        303, location)
    status, _ = open_inbox_link(crm_site, agent, agents_day['rep_hot'])
    assert status == 404
    assert manager.search('crm.conversation',
        [('lead', '=', agents_day['rep_hot'])]) == []
