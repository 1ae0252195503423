"""The pipeline board's HTTP API on a real site, as its page uses it: the
desk's session cookie, the page's CSRF token, and record rules on every
card and every total. A move goes through crm.deal.write as the user: it
writes the stage history, a lost stage asks for its reason, and a refusal
changes nothing and says why."""
import datetime as dt
import secrets
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest

from .test_inbox_api import InboxClient

DEAL_FIELDS = ['title', 'stage', 'value', 'owner', 'expected_close',
    'lost_reason', 'board_position']


def rpc_date(value):
    return {'__class__': 'date', 'year': value.year, 'month': value.month,
        'day': value.day}


def rpc_decimal(value):
    return {'__class__': 'Decimal', 'decimal': str(value)}


def as_decimal(value):
    "A Decimal as JSON-RPC answers it."
    if isinstance(value, dict):
        return Decimal(value['decimal'])
    return Decimal(str(value))


@pytest.fixture(scope='module')
def board_manager(crm_site):
    return InboxClient(crm_site, 'manager', page='board')


@pytest.fixture(scope='module')
def board_rep(crm_site):
    return InboxClient(crm_site, 'rep', page='board')


@pytest.fixture(scope='module')
def board_rep2(crm_site):
    return InboxClient(crm_site, 'rep2', page='board')


@pytest.fixture(scope='module')
def stages(manager):
    "{name: (id, kind, probability)} of the demo's stages."
    return {s['name']: (s['id'], s['kind'], s['probability'])
        for s in manager.search_read('crm.stage', [],
            ['name', 'kind', 'probability'], order=[('sequence', 'ASC')])}


@pytest.fixture(scope='module')
def team(manager):
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    return team


@pytest.fixture
def token():
    return secrets.token_hex(4)


def new_deal(manager, title, owner, stage, team, value=500000,
        expected_close=None):
    deal, = manager.model('crm.deal', 'create', [{'title': title,
                'owner': owner, 'team': team, 'stage': stage,
                'value': rpc_decimal(value),
                'expected_close': rpc_date(expected_close)
                if expected_close else None}])
    return deal


def read_deal(manager, deal):
    record, = manager.model('crm.deal', 'read', [deal], DEAL_FIELDS)
    return record


def history_of(manager, deal):
    return manager.search_read('crm.deal.stage_history',
        [('deal', '=', deal)], ['from_stage', 'to_stage', 'changed_by'],
        order=[('id', 'ASC')])


def board(client, **params):
    status, answer = client.get(f'board?{urllib.parse.urlencode(params)}')
    assert status == 200, answer
    return answer


def column(answer, column_id):
    found, = [c for c in answer['columns'] if c['id'] == str(column_id)]
    return found


def card_of(answer, deal):
    found = [card for c in answer['columns'] for card in c['cards']
        if card['id'] == deal]
    return found[0] if found else None


def move(client, deal, stage, **values):
    return client.post(f'deals/{deal}/move', {'stage': stage, **values})


# --- The page and who may use it ---

def test_page_and_api_refuse_without_a_session(board_manager):
    status, page, _ = board_manager.request('GET', '', raw=True,
        cookie=False)
    assert status == 401 and b'Sign in' in page
    status, answer = board_manager.get('board', cookie=False)
    assert (status, answer['error']) == (401, 'login_required')
    status, answer = board_manager.post('deals/1/move', {'stage': 1},
        cookie=False)
    assert (status, answer['error']) == (401, 'login_required')


def test_page_loads_sortable_from_our_vendor_folder_under_a_strict_csp(
        crm_site, board_manager):
    status, page, headers = board_manager.request('GET', '', raw=True)
    assert status == 200
    assert b'/crm/static/vendor/sortable.min.js' in page
    assert b'board/board.js' in page
    assert "script-src 'self'" in headers['Content-Security-Policy']
    assert headers['Cache-Control'] == 'no-store'
    with urllib.request.urlopen(f'{crm_site.url}/{crm_site.database}'
            '/crm/static/vendor/sortable.min.js', timeout=30) as response:
        assert b'Sortable' in response.read()[:2000]
        assert response.headers['Content-Type'] == 'text/javascript'


def test_changes_from_another_site_or_without_the_token_are_refused(
        manager, board_manager, stages, team, token):
    deal = new_deal(manager, f'CSRF {token}', board_manager.user_id,
        stages['New'][0], team)
    contacted = stages['Contacted'][0]
    for headers, csrf in [({}, False),
            ({'X-CSRF-Token': 'f' * 64}, True),
            ({'Origin': 'https://evil.example'}, True),
            ({'Sec-Fetch-Site': 'cross-site'}, True)]:
        status, answer = board_manager.post(f'deals/{deal}/move',
            {'stage': contacted}, headers=headers, csrf=csrf)
        assert (status, answer['error']) == (403, 'cross_site'), headers
    assert read_deal(manager, deal)['stage'] == stages['New'][0]


# --- Columns and totals ---

def test_manager_columns_are_the_stages_with_totals_of_the_whole_column(
        crm_site, board_manager, stages):
    answer = board(board_manager)
    assert [c['name'] for c in answer['columns']] == list(stages)
    rows = crm_site.sql('SELECT stage, COUNT(*), SUM(value) FROM crm_deal '
        'GROUP BY stage')
    database = {str(stage): (count, Decimal(str(total)).quantize(Decimal(1)))
        for stage, count, total in rows}
    for name, (stage, _, probability) in stages.items():
        shown = column(answer, stage)
        count, total = database.get(str(stage), (0, Decimal(0)))
        assert (shown['count'], Decimal(shown['total'])) == (count, total)
        assert Decimal(shown['weighted']) == (
            total * probability / 100).quantize(Decimal(1))
        assert len(shown['cards']) == min(count, 20)
        assert shown['more'] == (count > 20)
    won = column(answer, stages['Won'][0])
    # Indian grouping: ₹14,70,00,000.
    assert won['total_text'].startswith('₹')
    assert won['total_text'] == '₹' + indian(Decimal(won['total']))
    assert answer['can_move'] and answer['show_money']


def indian(amount):
    digits = str(int(amount))
    head, tail = digits[:-3], digits[-3:]
    groups = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    return ','.join(([head] if head else []) + groups + [tail])


def test_rep_sees_only_their_cards_and_their_totals(
        crm_site, board_rep, stages, team):
    rep = board_rep.session
    answer = board(board_rep)
    for name, (stage, _, _) in stages.items():
        shown = column(answer, stage)
        # The desk's own search, as the rep, under the same rules.
        deals = rep.search_read('crm.deal', [('stage', '=', stage)],
            ['owner', 'team', 'value'])
        assert shown['count'] == len(deals), name
        assert Decimal(shown['total']) == sum(
            (as_decimal(d['value']) for d in deals), Decimal(0))
        for card in shown['cards']:
            assert card['owner'] in (None, {'id': rep.user_id,
                    'name': "Rahul Verma"}), card
    # Fewer than the whole pipeline, which others' deals make up.
    everyone = crm_site.sql('SELECT COUNT(*) FROM crm_deal')[0][0]
    assert 0 < sum(c['count'] for c in answer['columns']) < everyone


def test_field_agent_sees_counts_but_no_money(crm_site):
    agent = InboxClient(crm_site, 'agent', page='board')
    answer = board(agent)
    assert answer['show_money'] is False
    for shown in answer['columns']:
        assert shown['total'] is None and shown['weighted'] is None
        for card in shown['cards']:
            assert card['value'] is None
            assert card['owner']['id'] == agent.user_id
    status, refused = agent.get('board?value_min=1000')
    assert (status, refused['error']) == (403, 'not_allowed')


def test_a_column_pages_in_the_rest_of_its_cards(board_manager, stages):
    won = stages['Won'][0]
    first = column(board(board_manager), won)
    assert first['more']
    status, page = board_manager.get(f'columns/{won}/cards?offset=20')
    assert status == 200, page
    ids = [c['id'] for c in first['cards']]
    more = [c['id'] for c in page['cards']]
    assert len(more) == 20 and not set(ids) & set(more)


def test_card_shows_owner_band_next_task_days_in_stage_and_badges(
        manager, board_manager, stages, team, token):
    rep_id, = manager.search('res.user', [('login', '=', 'rep')])
    last_week = dt.date.today() - dt.timedelta(days=7)
    deal = new_deal(manager, f'Card {token}', rep_id,
        stages['Qualified'][0], team, value=14500000,
        expected_close=last_week)
    due = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) \
        - dt.timedelta(hours=3)
    manager.model('crm.task', 'create', [{'name': f'Site visit {token}',
                'kind': 'site_visit', 'deal': deal, 'owner': rep_id,
                'due': {'__class__': 'datetime', 'year': due.year,
                    'month': due.month, 'day': due.day, 'hour': due.hour,
                    'minute': due.minute, 'second': 0, 'microsecond': 0}}])
    card = card_of(board(board_manager, q=token), deal)
    assert card['title'] == f'Card {token}'
    assert card['value_text'] == '₹1,45,00,000'
    assert card['owner'] == {'id': rep_id, 'name': "Rahul Verma"}
    assert card['days_in_stage'] == 0
    assert card['next_task']['name'] == f'Site visit {token}'
    assert card['next_task']['overdue'] is True
    assert card['badges'] == [{'kind': 'close_passed',
            'text': "Close date passed", 'tone': 'bad'}]
    assert card['desk_url'].endswith(f'/model/crm.deal/{deal}')


# --- Moving ---

def test_move_writes_the_stage_and_its_history(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Move {token}', board_rep.user_id,
        stages['New'][0], team)
    status, answer = move(board_rep, deal, stages['Contacted'][0])
    assert status == 200, answer
    assert answer['card']['column'] == str(stages['Contacted'][0])
    assert read_deal(manager, deal)['stage'] == stages['Contacted'][0]
    *_, last = history_of(manager, deal)
    assert (last['from_stage'], last['to_stage'], last['changed_by']) == (
        stages['New'][0], stages['Contacted'][0], board_rep.user_id)
    # The answer's totals are the rep's board's.
    contacted = column(board(board_rep), stages['Contacted'][0])
    assert column(answer, stages['Contacted'][0])['count'] \
        == contacted['count']
    assert column(answer, stages['Contacted'][0])['total'] \
        == contacted['total']


def test_move_enrols_the_deal_in_the_stages_follow_up_sequence(
        manager, board_rep, stages, token):
    "As a desk save does: Proposal Sent has the demo's proposal follow-up."
    lead, = manager.model('crm.lead', 'create', [{'name': f'Enrol {token}',
                'phone': '+9198' + str(secrets.randbelow(10 ** 8)).zfill(8),
                'owner': board_rep.user_id}])
    manager.model('crm.lead', 'convert', [lead])
    deal, = manager.search('crm.deal', [('lead', '=', lead)])
    sequence, = manager.model('crm.stage', 'read',
        [stages['Proposal Sent'][0]], ['follow_up_sequence'])
    assert sequence['follow_up_sequence']
    status, answer = move(board_rep, deal, stages['Proposal Sent'][0])
    assert status == 200, answer
    enrolled = manager.search_read('crm.enrollment', [('deal', '=', deal)],
        ['sequence'])
    assert [e['sequence'] for e in enrolled] == [
        sequence['follow_up_sequence']]


def test_move_to_lost_without_a_reason_is_refused_and_changes_nothing(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Lost {token}', board_rep.user_id,
        stages['Negotiation'][0], team)
    before = history_of(manager, deal)
    status, answer = move(board_rep, deal, stages['Lost'][0])
    assert status == 422
    assert answer['error'] == 'fields_required'
    assert answer['message'] == "Lost needs: Lost Reason."
    assert [(f['name'], f['type']) for f in answer['fields']] == [
        ('lost_reason', 'text')]
    # A blank reason is no reason.
    status, answer = move(board_rep, deal, stages['Lost'][0],
        fields={'lost_reason': '   '})
    assert (status, answer['error']) == (422, 'fields_required')
    assert read_deal(manager, deal)['stage'] == stages['Negotiation'][0]
    assert history_of(manager, deal) == before


def test_move_to_lost_with_the_reason_keeps_it(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Lost reason {token}', board_rep.user_id,
        stages['Negotiation'][0], team)
    status, answer = move(board_rep, deal, stages['Lost'][0],
        fields={'lost_reason': 'Bought a flat in Thane instead'})
    assert status == 200, answer
    record = read_deal(manager, deal)
    assert record['stage'] == stages['Lost'][0]
    assert record['lost_reason'] == 'Bought a flat in Thane instead'
    # Only what the stage asks for is taken with a move.
    status, answer = move(board_rep, deal, stages['New'][0],
        fields={'value': '1'})
    assert (status, answer['error']) == (400, 'bad_fields')


def test_move_of_a_card_changed_since_it_was_read_is_refused(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Stale {token}', board_rep.user_id,
        stages['New'][0], team)
    card = card_of(board(board_rep, q=token), deal)
    manager.model('crm.deal', 'write', [deal], {'title': f'Stale {token}!'})
    status, answer = move(board_rep, deal, stages['Qualified'][0],
        timestamp=card['timestamp'])
    assert (status, answer['error']) == (409, 'changed')
    assert 'changed this card' in answer['message']
    assert read_deal(manager, deal)['stage'] == stages['New'][0]


def test_accountant_is_refused_a_move_with_the_servers_reason(
        crm_site, manager, stages, team, token):
    accountant = InboxClient(crm_site, 'accountant', page='board')
    deal = new_deal(manager, f'Accounts {token}', None, stages['New'][0],
        team)
    assert board(accountant)['can_move'] is False
    status, answer = move(accountant, deal, stages['Contacted'][0])
    assert (status, answer['error']) == (403, 'not_allowed')
    assert 'not allowed' in answer['message'].lower()
    assert read_deal(manager, deal)['stage'] == stages['New'][0]


def test_rep_cannot_move_another_reps_deal(
        manager, board_rep, board_rep2, stages, team, token):
    deal = new_deal(manager, f'Not yours {token}', board_rep2.user_id,
        stages['New'][0], team)
    status, answer = move(board_rep, deal, stages['Contacted'][0])
    assert (status, answer['error']) == (404, 'not_found')
    status, answer = board_rep.post(f'deals/{deal}/reschedule',
        {'month': '2030-01'})
    assert (status, answer['error']) == (404, 'not_found')
    record = read_deal(manager, deal)
    assert (record['stage'], record['expected_close']) == (
        stages['New'][0], None)
    assert card_of(board(board_rep, q=token), deal) is None


def test_cards_are_reordered_within_a_column(
        manager, board_rep, stages, team, token):
    new = stages['New'][0]
    first, second, third = [new_deal(manager, f'Order {token} {n}',
            board_rep.user_id, new, team) for n in (1, 2, 3)]

    def order():
        cards = column(board(board_rep, q=f'Order {token}'), new)['cards']
        return [c['id'] for c in cards]
    # Newest on top.
    assert order() == [third, second, first]
    status, answer = move(board_rep, first, new, after=third, before=second)
    assert status == 200, answer
    assert order() == [third, first, second]
    status, _ = move(board_rep, second, new, after=None, before=third)
    assert status == 200
    assert order() == [second, third, first]
    # A reorder is no stage change.
    assert len(history_of(manager, first)) == 1


# --- The forecast ---

def test_forecast_columns_are_months_of_open_deals(board_manager, manager):
    answer = board(board_manager, mode='forecast', start='2030-01')
    ids = [c['id'] for c in answer['columns']]
    assert ids == ['earlier', '2030-01', '2030-02', '2030-03', '2030-04',
        '2030-05', '2030-06', 'later', 'none']
    assert answer['start'] == '2030-01'
    open_deals = manager.search_count('crm.deal',
        [('stage.kind', '=', 'open')])
    assert sum(c['count'] for c in answer['columns']) == open_deals


def test_forecast_move_changes_the_expected_close(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Forecast {token}', board_rep.user_id,
        stages['Proposal Sent'][0], team, value=6500000,
        expected_close=dt.date(2030, 1, 31))
    answer = board(board_rep, mode='forecast', start='2030-01', q=token)
    card = card_of(answer, deal)
    assert card['column'] == '2030-01'
    assert Decimal(column(answer, '2030-01')['weighted']) == Decimal(3900000)
    status, answer = board_rep.post(f'deals/{deal}/reschedule',
        {'month': '2030-02', 'start': '2030-01', 'filters': {'q': token},
            'timestamp': card['timestamp']})
    assert status == 200, answer
    # The day stays where the month has it: 31 January, 28 February.
    assert read_deal(manager, deal)['expected_close'] == rpc_date(
        dt.date(2030, 2, 28))
    assert answer['card']['column'] == '2030-02'
    assert column({'columns': answer['columns']}, '2030-02')['count'] == 1
    status, _ = board_rep.post(f'deals/{deal}/reschedule', {'month': None})
    assert status == 200
    assert read_deal(manager, deal)['expected_close'] is None
    status, _ = board_rep.post(f'deals/{deal}/reschedule',
        {'month': '2030-04'})
    assert read_deal(manager, deal)['expected_close'] == rpc_date(
        dt.date(2030, 4, 30))
    status, answer = board_rep.post(f'deals/{deal}/reschedule',
        {'month': 'April'})
    assert (status, answer['error']) == (400, 'bad_month')


# --- Filters, search, leads ---

def test_filters_narrow_cards_and_totals(
        manager, board_manager, stages, team, token):
    rep_id, = manager.search('res.user', [('login', '=', 'rep')])
    qualified = stages['Qualified'][0]
    small = new_deal(manager, f'Filter {token} small', rep_id, qualified,
        team, value=100000, expected_close=dt.date(2031, 5, 10))
    big = new_deal(manager, f'Filter {token} big', None, qualified, team,
        value=9000000, expected_close=dt.date(2031, 6, 10))

    def shown(**filters):
        answer = board(board_manager, q=f'Filter {token}', **filters)
        shown = column(answer, qualified)
        return {c['id'] for c in shown['cards']}, Decimal(shown['total'])
    assert shown() == ({small, big}, Decimal(9100000))
    assert shown(owner=rep_id) == ({small}, Decimal(100000))
    assert shown(owner='none') == ({big}, Decimal(9000000))
    assert shown(value_min=1000000) == ({big}, Decimal(9000000))
    assert shown(value_max=1000000) == ({small}, Decimal(100000))
    assert shown(close_from='2031-06-01') == ({big}, Decimal(9000000))
    assert shown(close_to='2031-05-31') == ({small}, Decimal(100000))
    assert shown(team=team) == ({small, big}, Decimal(9100000))
    assert shown(band='hot') == (set(), Decimal(0))
    status, answer = board_manager.get('board?close_from=yesterday')
    assert (status, answer['error']) == (400, 'bad_filter')
    status, answer = board_manager.get('board?mode=kanban')
    assert (status, answer['error']) == (400, 'bad_mode')


def test_source_and_band_filters_follow_the_deals_lead(
        manager, board_manager):
    source, = manager.search('crm.source', [('code', '=', 'referral')])
    answer = board(board_manager, source=source)
    deals = manager.search_read('crm.deal', [('lead.source', '=', source)],
        ['stage'])
    assert sum(c['count'] for c in answer['columns']) == len(deals) > 0
    answer = board(board_manager, band='cold')
    assert all(card['band'] == 'cold' for c in answer['columns']
        for card in c['cards'])


def test_leads_board_moves_a_lead_by_status_and_keeps_converted_apart(
        manager, board_rep, token):
    lead, = manager.model('crm.lead', 'create', [{'name': f'Lead {token}',
                'phone': '+9199' + str(secrets.randbelow(10 ** 8)).zfill(8),
                'owner': board_rep.user_id}])
    answer = board(board_rep, mode='leads', q=token)
    assert [c['id'] for c in answer['columns']] == ['new', 'contacted',
        'qualified', 'unqualified', 'converted']
    assert [c['id'] for c in column(answer, 'new')['cards']] == [lead]
    assert column(answer, 'converted')['droppable'] is False
    status, answer = board_rep.post(f'leads/{lead}/move',
        {'status': 'contacted'})
    assert status == 200, answer
    assert manager.model('crm.lead', 'read', [lead],
        ['status'])[0]['status'] == 'contacted'
    status, answer = board_rep.post(f'leads/{lead}/move',
        {'status': 'converted'})
    assert (status, answer['error']) == (400, 'use_convert')


# --- Live updates ---

def test_another_users_move_comes_to_the_board_as_it_happens(
        manager, board_rep, stages, team, token):
    deal = new_deal(manager, f'Live {token}', board_rep.user_id,
        stages['New'][0], team)
    cursor = board(board_rep)['cursor']
    manager.model('crm.deal', 'write', [deal],
        {'stage': stages['Negotiation'][0]})
    status, answer = board_rep.get(f'events?cursor={cursor}', timeout=40)
    assert status == 200, answer
    cards = {c['id']: c for c in answer['changes']['cards']}
    assert cards[deal]['column'] == str(stages['Negotiation'][0])
    negotiation = column({'columns': answer['changes']['columns']},
        stages['Negotiation'][0])
    assert negotiation['count'] == column(board(board_rep),
        stages['Negotiation'][0])['count']
    # A deal given to someone else leaves the rep's board, which learns
    # only that the card it showed is gone.
    rep2_id, = manager.search('res.user', [('login', '=', 'rep2')])
    cursor = answer['cursor']
    manager.model('crm.deal', 'write', [deal], {'owner': rep2_id})
    status, answer = board_rep.get(
        f'events?cursor={cursor}&shown={deal}', timeout=40)
    assert status == 200, answer
    assert answer['changes']['gone'] == [deal]
    assert answer['changes']['cards'] == []
