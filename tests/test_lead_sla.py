"""Working every lead, end to end on the running site: a lead that comes
in while the office is closed is given to a rep by territory in the
queue, its first-response clock waits for the next opening, the breach is
escalated to the owner and then to the team manager, and the rep's logged
call stops the clock."""
import datetime as dt
import json
import secrets
import urllib.request

import pytest

from kraya_crm.business_hours import WorkingClock

from .conftest import eventually
from .test_inbox_api import InboxClient

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def timestamp(value):
    "A datetime of JSON-RPC (a dict with __class__ datetime) as naive UTC."
    if isinstance(value, dict):
        return dt.datetime(value['year'], value['month'], value['day'],
            value['hour'], value['minute'], value['second'],
            value.get('microsecond', 0))
    return value


def time_of(value):
    return dt.time(value['hour'], value['minute'], value['second'])


@pytest.fixture(scope='module')
def office_closed_today(crm_site, manager):
    """Today (India) a holiday on the site's calendar, so that whatever the
    hour the office is closed; the calendar's clock, for the expectations."""
    calendar_id, = manager.search('crm.business_calendar', [], limit=1)
    today = dt.datetime.now(IST).date()
    holiday, = manager.model('crm.business_calendar.holiday', 'create', [{
                'calendar': calendar_id, 'name': "Test closure",
                'date': {'__class__': 'date', 'year': today.year,
                    'month': today.month, 'day': today.day}}])
    calendar, = manager.model('crm.business_calendar', 'read',
        [calendar_id], ['weekdays', 'opens_at', 'closes_at', 'holidays'])
    dates = manager.model('crm.business_calendar.holiday', 'read',
        calendar['holidays'], ['date'])
    clock = WorkingClock(
        weekdays=frozenset(int(d) for d in calendar['weekdays']),
        opens=time_of(calendar['opens_at']),
        closes=time_of(calendar['closes_at']),
        holidays=frozenset(dt.date(d['date']['year'], d['date']['month'],
                d['date']['day']) for d in dates))
    yield clock
    manager.model('crm.business_calendar.holiday', 'delete', [holiday])


@pytest.fixture(scope='module')
def karnataka_to_rep2(crm_site, manager):
    "A territory rule before the demo's: Karnataka's leads go to Anita."
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    state, = manager.search('country.subdivision', [('code', '=', 'IN-KA')])
    rep2, = manager.search('res.user', [('login', '=', 'rep2')])
    rule, = manager.model('crm.assignment.rule', 'create', [{
                'name': "Karnataka to Anita", 'sequence': 1, 'team': team,
                'method': 'fixed', 'user': rep2,
                'subdivisions': [('add', [state])]}])
    yield rep2
    manager.model('crm.assignment.rule', 'delete', [rule])


@pytest.fixture(scope='module')
def web_form(manager):
    "A web form of the team's (its own source): its capture key."
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    source, = manager.model('crm.source', 'create', [{
                'name': "SLA test form", 'team': team, 'web_form': True,
                'code': f'sla-test-{secrets.token_hex(3)}'}])
    key, = manager.model('crm.source', 'read', [source], ['capture_key'])
    return key['capture_key']


def submit_web_form(crm_site, key, values):
    request = urllib.request.Request(
        f"{crm_site.url}/{crm_site.database}/crm/capture/{key}",
        data=json.dumps(values).encode(),
        headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


LEAD_FIELDS = ['owner', 'assignment_rule', 'sla_due_at', 'sla_started_at',
    'sla_stage', 'sla_state', 'first_response_at', 'first_response_seconds',
    'create_date']


def lead_state(manager, lead_id):
    lead, = manager.model('crm.lead', 'read', [lead_id], LEAD_FIELDS)
    return lead


def notifications_of(crm_site, login, lead_id):
    "The desk notifications of a user about the lead (read past the rules)."
    return crm_site.sql("SELECT n.label FROM res_notification AS n "
        "JOIN res_user AS u ON u.id = n.\"user\" "
        "WHERE u.login = %s AND n.records = %s",
        (login, json.dumps([lead_id])))


def test_lead_out_of_hours_is_assigned_chased_and_stopped_by_a_call(
        crm_site, manager, admin, run_crons, office_closed_today,
        karnataka_to_rep2, web_form):
    number = '98' + ''.join(secrets.choice('0123456789') for _ in range(8))
    submit_web_form(crm_site, web_form, {'name': "Deepa Rao",
            'mobile': number, 'state': "Karnataka",
            'message': "Looking for a villa in Whitefield"})
    lead_id, = eventually(lambda: manager.search('crm.lead',
            [('phone', '=', '+91' + number)]))

    # Given by territory, in the worker, within seconds.
    lead = eventually(lambda: (lambda l: l if l['owner'] else None)(
            lead_state(manager, lead_id)), timeout=20)
    assert lead, "the queue never assigned the lead"
    assert lead['owner'] == karnataka_to_rep2
    rule, = manager.model('crm.lead', 'read', [lead_id],
        ['assignment_rule.name'])
    assert rule['assignment_rule.']['name'] == "Karnataka to Anita"

    # Closed today: the clock counts from the next opening, in working time.
    config, = manager.model('crm.configuration', 'read', [1],
        ['sla_other_target', 'sla_hot_target'])
    due = timestamp(lead['sla_due_at'])
    created = timestamp(lead['create_date'])
    opening = next(office_closed_today.windows(created))[0]
    assert due > opening.astimezone(dt.timezone.utc).replace(tzinfo=None)
    target = dt.timedelta(seconds=config['sla_other_target']['seconds']) \
        if isinstance(config['sla_other_target'], dict) \
        else config['sla_other_target']
    assert office_closed_today.working_between(created, due) == target

    # The target passes: the owner is told, then the team's manager.
    crm_site.sql("UPDATE crm_lead SET sla_due_at = %s, sla_next_at = %s "
        "WHERE id = %s", (utcnow() - dt.timedelta(minutes=5),
            utcnow() - dt.timedelta(minutes=1), lead_id))
    run_crons('crm.lead|chase_first_responses')
    assert lead_state(manager, lead_id)['sla_stage'] == 'owner'
    assert notifications_of(crm_site, 'rep2', lead_id)
    crm_site.sql("UPDATE crm_lead SET sla_next_at = %s WHERE id = %s",
        (utcnow() - dt.timedelta(minutes=1), lead_id))
    run_crons('crm.lead|chase_first_responses')
    assert lead_state(manager, lead_id)['sla_stage'] == 'manager'
    assert notifications_of(crm_site, 'manager', lead_id)

    # Anita calls from the inbox: the first response, and the chase stops.
    rep2 = InboxClient(crm_site, 'rep2')
    conversation_id, = manager.search('crm.conversation',
        [('lead', '=', lead_id)])
    status, answer = rep2.post(f'conversations/{conversation_id}/calls',
        {'outcome': 'connected', 'duration_seconds': 240,
            'note': "Site visit on Saturday"})
    assert status == 201, answer
    lead = lead_state(manager, lead_id)
    # Answered, late: the breach stays on record, the chase ends.
    assert lead['first_response_at'] and lead['sla_state'] == 'breached'
    assert lead['first_response_seconds'] is not None
    (next_chase,), = crm_site.sql(
        "SELECT sla_next_at FROM crm_lead WHERE id = %s", (lead_id,))
    assert next_chase is None
    before = len(notifications_of(crm_site, 'manager', lead_id))
    run_crons('crm.lead|chase_first_responses')
    assert len(notifications_of(crm_site, 'manager', lead_id)) == before
