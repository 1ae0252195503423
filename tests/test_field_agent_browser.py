"""The field agent's day on a phone (390x844), in the desk as the demo's
Field Agent: the CRM menu holds only what they use, My Leads, My Deals and
My Tasks open as cards whose next step, tap-to-call and WhatsApp links come
first, and every screen of the menu opens without sideways scrolling or a
script error. Screenshots: tests/screenshots/field-agent-<screen>.png."""
import re
import secrets

import pytest

from .conftest import desk_login
from .test_board_api import new_deal
from .test_desk_browser import TIMEOUT_MS
from .test_my_day_api import new_lead, new_task

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect

PHONE = {'width': 390, 'height': 844}
AGENT_MENU = ['Dashboard', 'Pipeline Board', 'My Day', 'Inbox', 'My Leads',
    'My Deals', 'My Tasks', 'My Mentions']
# The CRM's own pages open in a tab of their own, at /<db>/crm/<page>:
# (its address, what shows once it has loaded).
PAGES = {
    'Dashboard': ('dashboard', '#dashboard[aria-busy="false"]'),
    'Pipeline Board': ('board', '#board[aria-busy="false"]'),
    'My Day': ('my-day', '#day[aria-busy="false"]'),
    'Inbox': ('inbox', '#live[data-status="live"]'),
    }


@pytest.fixture(scope='module')
def agents_work(crm_site, manager):
    "A lead of the agent's with a site visit planned, and its open deal."
    agent_id, = manager.search('res.user', [('login', '=', 'agent')])
    token = secrets.token_hex(3)
    lead_name = f"Savita Kulkarni {token}"
    lead_id, number = new_lead(manager, agent_id, name=lead_name)
    visit = f"Show the Baner flat {token}"
    new_task(manager, agent_id, lead_id, 3, kind='site_visit', name=visit)
    stage, = manager.search('crm.stage', [('kind', '=', 'open')],
        order=[('sequence', 'ASC')], limit=1)
    team, = manager.search('crm.team', [('name', '=', "Mumbai Sales")])
    deal_title = f"Baner 2 BHK {token}"
    deal_id = new_deal(manager, deal_title, agent_id, stage, team)
    manager.model('crm.deal', 'write', [deal_id], {'lead': lead_id})
    manager.model('crm.task', 'create', [{'name': visit, 'kind': 'site_visit',
                'deal': deal_id, 'owner': agent_id}])
    return {'lead': lead_name, 'deal': deal_title, 'visit': visit,
        'number': number}


@pytest.fixture
def phone(chromium_browser, crm_site):
    "The agent signed in to the desk on a phone; the page, its errors."
    context = chromium_browser.new_context(viewport=PHONE, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(str(error)))
    desk_login(page, crm_site, 'agent')
    try:
        yield page, errors
    finally:
        context.close()


def crm_menu(page):
    "The CRM menu unfolded (behind the ☰ on a phone): its entries' names."
    menu = page.locator('#menu')
    if not menu.is_visible():
        page.locator('a.navbar-brand[data-toggle="menu"]').click()
    crm = menu.locator('.column-char', has_text='CRM').first
    if not menu.get_by_text('My Day', exact=True).is_visible():
        crm.click()
    expect(menu.get_by_text('My Day', exact=True)).to_be_visible()
    return menu


def fits_the_phone(page):
    return page.evaluate(
        'document.documentElement.scrollWidth') <= PHONE['width']


def test_field_agents_menu_holds_only_what_they_use(phone, screenshots):
    page, errors = phone
    menu = crm_menu(page)
    names = [n.strip() for n in menu.locator(
            '.column-char').all_inner_texts()]
    # CRM's entries, then Tryton's own menus to look a customer or a
    # product up while visiting.
    assert names == ['CRM', *AGENT_MENU, 'Parties', 'Products']
    page.screenshot(path=screenshots / 'field-agent-menu.png')
    assert errors == []


def card_of(page, field_name, value):
    """The card of the open list whose field shows value, once loaded
    (sao sets inputs' values as properties, out of CSS's reach)."""
    page.wait_for_function('''([field, value]) => {
        for (const card of document.querySelectorAll(
                '#tabs .tab-pane.active .list-form-item')) {
            const input = card.querySelector(`input[name="${field}"]`);
            if (input && input.value === value) {
                card.setAttribute('data-card', value);
                return true;
            }
        }
        return false;
    }''', arg=[field_name, value])
    return page.locator(f'.list-form-item[data-card="{value}"]')


@pytest.mark.parametrize('entry, field_name, title, step', [
        ('My Leads', 'name', 'lead', 'Site Visit: {visit}, '),
        ('My Deals', 'title', 'deal', 'Site Visit: {visit}'),
        ('My Tasks', 'name', 'visit', None),
        ])
def test_cards_put_the_next_step_call_and_whatsapp_first(phone, crm_site,
        agents_work, screenshots, entry, field_name, title, step):
    page, errors = phone
    menu = crm_menu(page)
    menu.get_by_text(entry, exact=True).click()
    card = card_of(page, field_name, agents_work[title])
    card.scroll_into_view_if_needed()
    expect(card).to_be_visible()
    if step:
        # The soonest open task: the lead's visit in 3 hours, then the
        # deal's own, which has no time yet.
        expect(card.locator('input[name="next_step"]')).to_have_value(
            re.compile('^' + re.escape(step.format(**agents_work))))
    number = agents_work['number']
    call = card.locator('.input-group', has=page.locator(
            'input[name="call"]')).locator('a.btn')
    whatsapp = card.locator('.input-group', has=page.locator(
            'input[name="whatsapp_chat"]')).locator('a.btn')
    expect(call).to_have_attribute('href', f'tel:{number}')
    expect(whatsapp).to_have_attribute('href', f'https://wa.me/{number[1:]}')
    # The links come right after the name and the next step.
    top = card.bounding_box()['y']
    assert call.bounding_box()['y'] - top < 150
    # A field agent sees no money.
    assert not card.locator('input[name="value_text"]').count()
    assert fits_the_phone(page)
    slug = entry.lower().replace(' ', '-')
    card.screenshot(path=screenshots / f'field-agent-{slug}-card.png')
    page.screenshot(path=screenshots / f'field-agent-{slug}.png')
    assert errors == []


@pytest.mark.parametrize('entry', list(PAGES))
def test_every_page_of_the_menu_fits_the_phone(phone, crm_site,
        screenshots, entry):
    page, errors = phone
    menu = crm_menu(page)
    with page.context.expect_page() as opened:
        menu.get_by_text(entry, exact=True).click()
    crm_page = opened.value
    crm_page.on('pageerror', lambda error: errors.append(str(error)))
    address, loaded = PAGES[entry]
    crm_page.wait_for_load_state()
    assert crm_page.url == (
        f'{crm_site.url}/{crm_site.database}/crm/{address}')
    expect(crm_page.locator(loaded)).to_be_attached()
    expect(crm_page.get_by_text('Vikram Patil').first).to_be_attached()
    assert fits_the_phone(crm_page)
    crm_page.screenshot(path=screenshots / f'field-agent-{address}.png')
    assert errors == []


def test_my_mentions_opens_as_a_list(phone, screenshots):
    page, errors = phone
    menu = crm_menu(page)
    menu.get_by_text('My Mentions', exact=True).click()
    tab = page.locator('#tabs .tab-pane.active')
    expect(tab.locator('.content-box')).to_be_visible()
    assert fits_the_phone(page)
    page.screenshot(path=screenshots / 'field-agent-my-mentions.png')
    assert errors == []
