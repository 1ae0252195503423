"""The pipeline board (/<db>/crm/board) in a real browser, as the demo
Sales Rep logged in through the desk: one page at 1280x800, where cards
are dragged (between stages, onto Lost, onto another forecast month), and
one at 390x844, where one stage shows at a time and a card moves through
its menu. What the page shows is checked against the database.
Screenshots go to tests/screenshots/board-<viewport>-<step>.png."""
import datetime as dt
import secrets

import pytest

from .conftest import desk_login, eventually
from .test_board_api import history_of, new_deal, read_deal, rpc_date
from .test_desk_browser import TIMEOUT_MS, VIEWPORTS

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect

DESK, PHONE = '1280x800', '390x844'


class BoardPage:
    "A browser page of the board, logged in as the rep, and its errors."

    def __init__(self, page, crm_site, viewport, screenshots):
        self.page = page
        self.crm_site = crm_site
        self.viewport = viewport
        self.screenshots = screenshots
        self.errors = []
        page.on('pageerror', lambda error: self.errors.append(str(error)))

    def open(self, **params):
        query = '&'.join(f'{k}={v}' for k, v in params.items())
        self.page.goto(f'{self.crm_site.url}/{self.crm_site.database}'
            f'/crm/board?{query}')
        expect(self.page.locator('#board')).to_have_attribute(
            'aria-busy', 'false')

    def column(self, column_id):
        return self.page.locator(f'.column[data-column="{column_id}"]')

    def card(self, title):
        return self.page.locator('.card', has_text=title)

    def shot(self, step):
        self.page.screenshot(
            path=self.screenshots / f'board-{self.viewport}-{step}.png')

    def drag(self, title, column_id, below=None):
        """Drag the card by the mouse into the column (above the card
        titled `below`, else at the end of its list)."""
        page = self.page
        source = self.card(title).locator('.card-meta')
        target = (self.card(below) if below
            else self.column(column_id).locator('.cards'))
        # The card's column first on screen: the columns right of it too.
        source.evaluate("card => card.closest('.column').scrollIntoView("
            "{inline: 'start', block: 'nearest'})")
        start = source.bounding_box()
        page.mouse.move(start['x'] + 20, start['y'] + 5)
        page.mouse.down()
        page.mouse.move(start['x'] + 30, start['y'] + 15, steps=4)
        box = target.bounding_box()
        end_y = box['y'] + (8 if below else box['height'] - 12)
        page.mouse.move(box['x'] + box['width'] / 2, end_y, steps=12)
        page.mouse.move(box['x'] + box['width'] / 2 + 2, end_y + 2,
            steps=2)
        page.mouse.up()


def board_page(chromium_browser, crm_site, viewport, screenshots):
    context = chromium_browser.new_context(viewport=VIEWPORTS[viewport],
        has_touch=viewport == PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    desk_login(page, crm_site, 'rep')
    return context, BoardPage(page, crm_site, viewport, screenshots)


@pytest.fixture(scope='module')
def desk(chromium_browser, crm_site, screenshots):
    context, board = board_page(chromium_browser, crm_site, DESK,
        screenshots)
    yield board
    context.close()


@pytest.fixture(scope='module')
def phone(chromium_browser, crm_site, screenshots):
    context, board = board_page(chromium_browser, crm_site, PHONE,
        screenshots)
    yield board
    context.close()


@pytest.fixture(scope='module')
def pipeline(manager):
    "The stage ids by name, the rep's id and the team's."
    stages = {s['name']: s['id'] for s in manager.search_read('crm.stage',
            [], ['name'])}
    rep, = manager.search('res.user', [('login', '=', 'rep')])
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    return stages, rep, team


@pytest.fixture
def token():
    return secrets.token_hex(3)


def test_rep_sees_only_their_cards_and_totals(desk, crm_site):
    desk.open()
    rep = crm_site.login('rep')
    columns = desk.page.locator('.column')
    expect(columns.first).to_be_visible()
    desk.shot('board')
    for index in range(columns.count()):
        column = columns.nth(index)
        stage = int(column.get_attribute('data-column'))
        deals = rep.search_read('crm.deal', [('stage', '=', stage)],
            ['value'])
        assert column.locator('.column-count').inner_text() \
            == str(len(deals))
        total = sum(int(float(d['value']['decimal'] if isinstance(
                        d['value'], dict) else d['value'])) for d in deals)
        assert column.locator('.column-total').inner_text().replace(
            ',', '').replace('₹', '') == str(total)
        owners = set(column.locator('.card .owner').all_inner_texts())
        assert owners <= {"Rahul Verma", "Unassigned"}, owners


def test_dragging_a_card_changes_its_stage_and_writes_history(
        desk, manager, pipeline, token):
    stages, rep, team = pipeline
    title = f'Drag {token}'
    deal = new_deal(manager, title, rep, stages['New'], team)
    desk.open(q=token)
    expect(desk.column(stages['New']).locator('.card')).to_have_count(1)
    desk.drag(title, stages['Contacted'])
    moved = desk.column(stages['Contacted']).locator('.card',
        has_text=title)
    expect(moved).to_be_visible()
    expect(moved).not_to_have_class('card saving')
    assert eventually(lambda: read_deal(manager, deal)['stage']
        == stages['Contacted'])
    *_, last = history_of(manager, deal)
    assert (last['from_stage'], last['to_stage'], last['changed_by']) == (
        stages['New'], stages['Contacted'], rep)
    expect(desk.column(stages['Contacted']).locator('.column-count')
        ).to_have_text('1')
    expect(desk.column(stages['New']).locator('.column-count')
        ).to_have_text('0')
    desk.shot('dragged')
    # A click opens the deal in the desk.
    assert moved.locator('.card-title').get_attribute('href').endswith(
        f'/model/crm.deal/{deal}')


def test_dropping_on_lost_asks_for_the_reason(desk, manager, pipeline,
        token):
    stages, rep, team = pipeline
    title = f'Lose {token}'
    deal = new_deal(manager, title, rep, stages['Negotiation'], team)
    desk.open(q=token)
    desk.drag(title, stages['Lost'])
    dialog = desk.page.locator('#fields-dialog')
    expect(dialog).to_be_visible()
    expect(dialog.locator('h2')).to_have_text('Why was it lost?')
    desk.shot('lost-prompt')
    dialog.locator('textarea[name="lost_reason"]').fill(
        'Loan not sanctioned')
    dialog.get_by_role('button', name='Move').click()
    expect(dialog).to_be_hidden()
    expect(desk.column(stages['Lost']).locator('.card', has_text=title)
        ).to_be_visible()
    record = eventually(lambda: (lambda r: r if r['stage'] == stages['Lost']
            else None)(read_deal(manager, deal)))
    assert record['lost_reason'] == 'Loan not sanctioned'


def test_cancelling_the_lost_prompt_puts_the_card_back(desk, manager,
        pipeline, token):
    stages, rep, team = pipeline
    title = f'Keep {token}'
    deal = new_deal(manager, title, rep, stages['Negotiation'], team)
    desk.open(q=token)
    desk.drag(title, stages['Lost'])
    dialog = desk.page.locator('#fields-dialog')
    expect(dialog).to_be_visible()
    dialog.get_by_role('button', name='Cancel').click()
    expect(desk.column(stages['Negotiation']).locator('.card',
            has_text=title)).to_be_visible()
    assert read_deal(manager, deal)['stage'] == stages['Negotiation']


def test_refused_move_snaps_back_with_the_servers_reason(
        desk, manager, pipeline, token):
    stages, rep, team = pipeline
    title = f'Stale {token}'
    deal = new_deal(manager, title, rep, stages['New'], team)
    # The manager's change reaches the board only after the rep's drop
    # (live updates held back, as on a slow connection).
    events = '**/crm/board/api/events*'
    desk.page.route(events, lambda route: route.abort())
    try:
        desk.open(q=token)
        manager.model('crm.deal', 'write', [deal],
            {'value': {'__class__': 'Decimal', 'decimal': '750000'}})
        desk.drag(title, stages['Qualified'])
        toast = desk.page.locator('#toast')
        expect(toast).to_be_visible()
        expect(toast).to_contain_text('Someone changed this card')
        expect(toast).to_have_attribute('data-tone', 'error')
        desk.shot('refused')
        # Back where it was, and then as the manager left it.
        expect(desk.column(stages['New']).locator('.card', has_text=title)
            ).to_contain_text('₹7,50,000')
        expect(desk.column(stages['Qualified']).locator('.card')
            ).to_have_count(0)
    finally:
        desk.page.unroute(events)
    assert read_deal(manager, deal)['stage'] == stages['New']
    assert len(history_of(manager, deal)) == 1


def test_another_users_move_shows_without_a_reload(desk, manager, pipeline,
        token):
    stages, rep, team = pipeline
    title = f'Live {token}'
    deal = new_deal(manager, title, rep, stages['Qualified'], team)
    desk.open(q=token)
    expect(desk.column(stages['Qualified']).locator('.card')
        ).to_have_count(1)
    manager.model('crm.deal', 'write', [deal],
        {'stage': stages['Proposal Sent']})
    expect(desk.column(stages['Proposal Sent']).locator('.card',
            has_text=title)).to_be_visible()
    expect(desk.column(stages['Qualified']).locator('.card')
        ).to_have_count(0)
    expect(desk.column(stages['Proposal Sent']).locator('.column-count')
        ).to_have_text('1')


def test_forecast_drag_moves_the_expected_close(desk, manager, pipeline,
        token):
    stages, rep, team = pipeline
    title = f'Forecast {token}'
    deal = new_deal(manager, title, rep, stages['Proposal Sent'], team,
        value=14500000, expected_close=dt.date(2030, 1, 31))
    desk.open(mode='forecast', start='2030-01', q=token)
    expect(desk.page.locator('.mode[data-mode="forecast"]')
        ).to_have_attribute('aria-selected', 'true')
    january = desk.column('2030-01')
    expect(january.locator('.card', has_text=title)).to_be_visible()
    expect(january.locator('.column-weighted')).to_have_text(
        'weighted ₹87,00,000')
    desk.shot('forecast')
    desk.drag(title, '2030-02')
    expect(desk.column('2030-02').locator('.card', has_text=title)
        ).to_contain_text('Closes 28 Feb 2030')
    assert eventually(lambda: read_deal(manager, deal)['expected_close']
        == rpc_date(dt.date(2030, 2, 28)))
    expect(january.locator('.column-count')).to_have_text('0')
    desk.shot('forecast-moved')


def test_desk_page_raised_no_javascript_error(desk):
    assert desk.errors == []


def test_phone_shows_one_stage_at_a_time(phone, pipeline):
    stages, _, _ = pipeline
    phone.open()
    page = phone.page
    first = page.locator('.column').first
    expect(first).to_be_visible()
    width = VIEWPORTS[PHONE]['width']
    box = first.bounding_box()
    assert box['width'] > width * 0.9
    assert page.locator('.column').nth(1).bounding_box()['x'] >= width
    # The page itself does not scroll sideways: the board does.
    assert page.evaluate('document.documentElement.scrollWidth') <= width
    # No drag on a phone: the cards move through their menu.
    assert page.evaluate("window.Sortable.get(document.querySelector('.cards'))"
        ".option('disabled')") is True
    phone.shot('board')
    page.locator('.column-tab', has_text='Contacted').click()
    contacted = phone.column(stages['Contacted'])
    expect(page.locator('.column-tab.current')).to_contain_text('Contacted')
    # The tab scrolls smoothly: the column comes to the left edge.
    page.wait_for_function("id => Math.abs(document.querySelector("
        "`.column[data-column='${id}']`).getBoundingClientRect().x - 10) < 30",
        arg=stages['Contacted'], timeout=5000)
    assert contacted.is_visible()
    phone.shot('swiped')


def test_phone_moves_a_card_through_its_menu(phone, manager, pipeline,
        token):
    stages, rep, team = pipeline
    title = f'Phone {token}'
    deal = new_deal(manager, title, rep, stages['New'], team)
    phone.open(q=token)
    page = phone.page
    phone.card(title).get_by_role('button', name=f'Move {title}').click()
    menu = page.locator('#move-dialog')
    expect(menu).to_be_visible()
    phone.shot('move-menu')
    menu.get_by_role('button', name='Qualified').click()
    expect(phone.column(stages['Qualified']).locator('.card',
            has_text=title)).to_be_attached()
    assert eventually(lambda: read_deal(manager, deal)['stage']
        == stages['Qualified'])
    *_, last = history_of(manager, deal)
    assert (last['to_stage'], last['changed_by']) == (
        stages['Qualified'], rep)
    # Lost asks its reason on a phone too.
    phone.card(title).get_by_role('button', name=f'Move {title}').click()
    menu.get_by_role('button', name='Lost').click()
    dialog = page.locator('#fields-dialog')
    expect(dialog).to_be_visible()
    dialog.locator('textarea[name="lost_reason"]').fill('Budget too low')
    phone.shot('lost-prompt')
    dialog.get_by_role('button', name='Move').click()
    assert eventually(lambda: read_deal(manager, deal)['lost_reason']
        == 'Budget too low')


def test_phone_page_raised_no_javascript_error(phone):
    assert phone.errors == []
