"""The desk (sao) in a real browser: the demo Sales Rep logs in, opens
CRM > Leads, creates a lead, saves it and finds it back in the list; at
desktop size and at phone size (where sao shows lists as stacked cards).

The browser walk runs once per viewport (the module-scoped `desk_walk`
fixture) and the tests below each judge one thing about it:

- test_rep_creates_lead_in_desk_and_finds_it_in_list: every UI step worked;
- test_desk_lead_has_e164_phone_and_rep_as_owner: what the desk saved, as
  the server has it (over JSON-RPC);
- test_desk_raises_no_javascript_errors: sao threw no uncaught exception;
- test_new_lead_form_opens_with_cursor_in_contact_name: where the rep
  starts typing;
- test_switch_from_saved_lead_back_to_list_is_prompt: how long the toolbar
  ignored Switch on the way back to the list.

Screenshots of each step go to tests/screenshots/desk-<viewport>-<step>.png.
"""
import random
import secrets
import time
from dataclasses import dataclass, field

import phonenumbers
import pytest

from .conftest import ask_for_password, back_to_desk

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect
PlaywrightError = playwright_sync.Error
PlaywrightTimeout = playwright_sync.TimeoutError

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync']
VIEWPORTS = {
    '1280x800': {'width': 1280, 'height': 800},
    '390x844': {'width': 390, 'height': 844},
    }
# Long enough for sao's first load, short enough to fail before pytest
# users give up.
TIMEOUT_MS = 20_000
# How long the cards (list-form) may keep the toolbar busy after a Switch.
SWITCH_BACK_S = 120
# Past this, users notice the toolbar ignoring them.
SLOW_S = 3
# Scroll every box that holds the element (sao's tab, the form...).
SCROLL_TO_TOP = '''element => {
    for (let node = element; node; node = node.parentElement) {
        node.scrollTop = 0;
    }
}'''
SCROLL_TO_END = '''element => {
    for (let node = element; node; node = node.parentElement) {
        node.scrollTop = node.scrollHeight;
    }
}'''


def random_indian_mobile():
    "10 digits starting with 9 that phonenumbers takes for a valid IN mobile."
    while True:
        digits = '9' + ''.join(random.choices('0123456789', k=9))
        if phonenumbers.is_valid_number(phonenumbers.parse(digits, 'IN')):
            return digits


@dataclass
class DeskWalk:
    "What the browser did at one viewport, for the tests to judge."
    viewport: str
    name: str
    typed_phone: str
    e164_phone: str
    step: str = ''
    failure: str = ''
    saved: bool = False
    # How long the cards (list-form) kept Switch from getting back from the
    # saved lead to the list (0: straight to it); None until it got there.
    back_to_list_s: float | None = None
    # None until the new lead form has had the cursor put in it.
    first_focus: str | None = None
    js_errors: list = field(default_factory=list)
    screenshots: list = field(default_factory=list)


class StepFailed(Exception):
    pass


@pytest.fixture(scope='module', params=list(VIEWPORTS))
def desk_walk(request, crm_site, chromium_browser, screenshots):
    """Walk through the desk at one viewport. A failed step is recorded,
    not raised, so each test below reports its own reason."""
    viewport = request.param
    digits = random_indian_mobile()
    walk = DeskWalk(viewport=viewport,
        name=f'Browser Test Lead {viewport} {secrets.token_hex(3)}',
        typed_phone=f'{digits[:5]} {digits[5:]}',
        e164_phone=f'+91{digits}')
    context = chromium_browser.new_context(viewport=VIEWPORTS[viewport])
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    page.on('pageerror', lambda error: walk.js_errors.append(
            f'{error.name}: {error.message} (while trying to {walk.step})'))
    try:
        run_desk_walk(page, crm_site, walk, screenshots)
    except StepFailed:
        pass
    finally:
        context.close()
    return walk


def run_desk_walk(page, crm_site, walk, screenshots):
    "Log in as rep, open CRM > Leads, create a lead, find it in the list."

    def shot(name):
        path = screenshots / f'desk-{walk.viewport}-{name}.png'
        page.screenshot(path=str(path))
        walk.screenshots.append(path.name)

    def step(description):
        walk.step = description
        return _Step(walk, shot)

    with step('open the desk and get the login dialog'):
        page.goto(f'{crm_site.url}/')
        # The database chosen, the login typed and taken (conftest.py).
        password = ask_for_password(page, crm_site.database, 'rep')
        # The screenshot once the password's dialog has slid in.
        page.wait_for_function("() => !document.getAnimations().some("
            "a => a instanceof CSSTransition)")
        shot('login')

    with step('log in as rep/rep'):
        password.fill('rep')
        password.press('Enter')
        back_to_desk(page, crm_site, 'rep')
        menu = page.locator('#menu')
        crm = menu.locator('.column-char', has_text='CRM')
        expect(crm, 'after login the menu should show CRM').to_be_visible()

    with step('open CRM > Leads from the menu'):
        crm.click()
        leads = menu.get_by_text('Leads', exact=True)
        expect(leads, 'CRM should unfold to a Leads entry').to_be_visible()
        shot('menu')
        leads.click()
        tab = page.locator('#tabs .tab-pane.active')
        expect(tab.locator('.title').first,
            'a Leads tab should open').to_contain_text('Leads')
        rows = tab.locator('.content-box table.tree tbody > tr')
        expect(rows.first, 'the Leads list should show lead rows'
            ).to_be_visible()
        shot('leads-list')

    with step('create a lead in the form'):
        tab.locator('button#new_').click()
        form = tab.locator('.content-box > .form')
        name = form.locator('input[name="name"]')
        expect(name, 'New should open the lead form').to_be_visible()
        # The form shows before the new record has its defaults; when they
        # arrive sao redraws the fields, wiping text typed but not yet
        # committed (a field commits when it is left).
        expect(form.locator('select[name="status"] option:checked'),
            'the new lead should get its default status, New'
            ).to_have_text('New')
        # Then sao puts the cursor in the form (and scrolls to it).
        focused = form.locator(':focus')
        expect(focused, 'sao should put the cursor in the new lead form'
            ).to_have_count(1)
        walk.first_focus = focused.evaluate(
            'e => e.name || e.closest(".form-item")?.previousElementSibling'
            '?.innerText || e.type').rstrip(':')
        shot('lead-form-new')  # as sao opens it, before anything is typed
        name.fill(walk.name)
        phone = form.locator('input[name="phone"]')
        phone.fill(walk.typed_phone)
        phone.press('Tab')
        # on_change_phone rewrites the number as soon as the field is left.
        expect(phone, 'the form should normalise the phone to E.164'
            ).to_have_value(walk.e164_phone)
        # The form scrolls inside the tab (at 390 wide it is one long
        # column, under a sticky toolbar): show its top, then its end.
        form.evaluate(SCROLL_TO_TOP)
        shot('lead-form')
        form.evaluate(SCROLL_TO_END)
        shot('lead-form-end')
        form.evaluate(SCROLL_TO_TOP)

    with step('save the lead'):
        tab.locator('button#save').click()
        info = tab.locator('.infobar .alert')
        expect(info.filter(has_text='Record saved.'),
            'saving should say "Record saved."').to_be_visible()
        walk.saved = True
        shot('lead-saved')

    with step('go back to the list and find the lead there'):
        # sao's "Record saved." toast stays until closed, and its box
        # (margin included) lies over the middle of the toolbar at desktop
        # size, taking the clicks meant for Switch: close it as a user must.
        info.get_by_role('button', name='Close').click()
        expect(info, 'the "Record saved." message should close'
            ).to_have_count(0)
        # Switch steps through the action's views in order. Leads has list,
        # form and list-form (cards), so from the form Switch shows the
        # cards, and sao ignores toolbar clicks until it has drawn every
        # card: keep pressing Switch, as a user would, until the list.
        tree = tab.locator('.content-box table.tree')
        list_form = tab.locator('.content-box .list-form')
        switch = tab.locator('button#switch_')
        switch.click()
        expect(form, 'Switch should leave the form').to_be_hidden()
        expect(tree.or_(list_form), 'Switch should show the leads'
            ).to_be_visible()
        walk.back_to_list_s = 0
        if list_form.is_visible():
            shot('lead-list-form')
            started = time.monotonic()
            while not tree.is_visible():
                if time.monotonic() - started > SWITCH_BACK_S:
                    raise AssertionError(
                        'after saving, Switch showed the lead cards '
                        '(list-form) and pressing Switch there did not '
                        f'come back to the list within {SWITCH_BACK_S}s')
                switch.click()
                try:
                    tree.wait_for(state='visible', timeout=5_000)
                except PlaywrightTimeout:
                    pass
            walk.back_to_list_s = round(time.monotonic() - started, 1)
        # Reload from the server: the row must come from a real search.
        tab.locator('button#reload').click()
        row = rows.filter(has_text=walk.name)
        expect(row, f'the list should have one row for {walk.name!r}'
            ).to_have_count(1)
        # The reload redraws the rows: expect() finds the row again, where
        # an action on the one found before the redraw would fail.
        expect(row, 'the new lead should be visible in the list'
            ).to_be_visible()
        expect(row, 'its row should show the E.164 phone'
            ).to_contain_text(walk.e164_phone)
        shot('leads-list-with-lead')
    walk.step = ''


class _Step:
    "Turn a failure inside a step into a readable one-line reason."

    def __init__(self, walk, shot):
        self.walk = walk
        self.shot = shot

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None:
            return False
        if not isinstance(error, (AssertionError, PlaywrightError)):
            return False
        lines = str(error).strip().splitlines()
        # Playwright appends a call log and an aria snapshot of the page:
        # the first lines say what was awaited and what was found.
        reason = ' '.join(line.strip() for line in lines[:8])
        if self.walk.js_errors:
            reason += ' | sao raised: ' + '; '.join(self.walk.js_errors)
        self.walk.failure = f'could not {self.walk.step}: {reason}'
        try:
            self.shot('failure')
        except PlaywrightError:
            pass
        raise StepFailed(self.walk.failure) from error


def test_rep_creates_lead_in_desk_and_finds_it_in_list(desk_walk):
    if desk_walk.failure:
        pytest.fail(f'[{desk_walk.viewport}] {desk_walk.failure} '
            f'(screenshots: {", ".join(desk_walk.screenshots)})',
            pytrace=False)


def test_desk_lead_has_e164_phone_and_rep_as_owner(desk_walk, crm_site):
    if not desk_walk.saved:
        pytest.skip(f'[{desk_walk.viewport}] the desk did not save the lead '
            f'({desk_walk.failure})')
    rep = crm_site.login('rep')
    leads = rep.search_read('crm.lead', [('name', '=', desk_walk.name)],
        ['phone', 'owner'])
    assert len(leads) == 1, (
        f'expected one lead named {desk_walk.name!r}, found {leads}')
    lead, = leads
    assert lead['phone'] == desk_walk.e164_phone, (
        f'phone typed as {desk_walk.typed_phone!r} was stored as '
        f'{lead["phone"]!r}, not {desk_walk.e164_phone!r}')
    assert lead['owner'] == rep.user_id, (
        f'the lead is owned by user {lead["owner"]}, not by rep '
        f'(user {rep.user_id})')


def test_desk_raises_no_javascript_errors(desk_walk):
    assert not desk_walk.js_errors, (
        f'[{desk_walk.viewport}] sao raised uncaught JavaScript errors: '
        + '; '.join(desk_walk.js_errors))


def walked_past(desk_walk, value, what):
    "Skip, with the failure, when the walk broke before it got to what."
    if value is None:
        pytest.skip(f'[{desk_walk.viewport}] the walk never got to {what} '
            f'({desk_walk.failure})')


def test_new_lead_form_opens_with_cursor_in_contact_name(desk_walk):
    walked_past(desk_walk, desk_walk.first_focus, 'the new lead form')
    # At phone size the form opens scrolled down to the focused field.
    assert desk_walk.first_focus == 'name', (
        f'[{desk_walk.viewport}] a new lead opens with the cursor in '
        f'{desk_walk.first_focus!r}, not in Contact Name')


def test_switch_from_saved_lead_back_to_list_is_prompt(desk_walk):
    walked_past(desk_walk, desk_walk.back_to_list_s, 'the list again')
    assert desk_walk.back_to_list_s <= SLOW_S, (
        f'[{desk_walk.viewport}] after saving a lead, Switch went to the '
        f'lead cards (list-form) and the toolbar ignored clicks for '
        f'{desk_walk.back_to_list_s}s before Switch got back to the list')
