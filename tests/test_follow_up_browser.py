"""Follow-up sequences in the desk, in a real browser at desktop and phone
size: the demo manager opens CRM › Configuration › Follow-up Sequences,
reads a sequence's figures and its steps, and the Follow-ups list.
Screenshots go to tests/screenshots/follow-up-<viewport>-<step>.png."""
import re

import pytest

from .conftest import desk_login
from .test_desk_browser import TIMEOUT_MS, VIEWPORTS

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect


@pytest.fixture(params=list(VIEWPORTS))
def manager_page(request, chromium_browser, crm_site):
    "The desk, logged in as the demo manager, at one viewport."
    context = chromium_browser.new_context(
        viewport=VIEWPORTS[request.param])
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(error.message))
    desk_login(page, crm_site, 'manager')
    page.viewport_name = request.param
    page.js_errors = errors
    yield page
    context.close()


def shot(page, screenshots, name):
    page.screenshot(path=str(
            screenshots / f'follow-up-{page.viewport_name}-{name}.png'))


def open_model(page, crm_site, model):
    "Open a model's list as a bookmark or a link from the menu does."
    page.goto(f'{crm_site.url}/#{crm_site.database}/model/{model}')
    tab = page.locator('#tabs .tab-pane.active')
    rows = tab.locator('.content-box table.tree tbody > tr, '
        '.content-box .list-form > .list-group-item')
    return tab, rows


def test_manager_reads_sequence_figures_and_steps(
        manager_page, crm_site, screenshots):
    page = manager_page
    tab, rows = open_model(page, crm_site, 'crm.sequence')
    welcome = rows.filter(has_text="New enquiry welcome")
    expect(welcome, "the demo's welcome sequence should be listed"
        ).to_have_count(1)
    shot(page, screenshots, 'sequences')
    # Open it as a user does: a double click on the row, or on the card.
    welcome.first.dblclick()
    form = tab.locator('.content-box .form')
    expect(form.locator('input[name="name"]').first,
        "the sequence form should open").to_have_value("New enquiry welcome")
    steps = form.locator('table.tree tbody > tr, .list-form .list-group-item')
    for name in ["Welcome", "Brochure", "Call"]:
        expect(steps.filter(has_text=name),
            f"the steps should list {name!r}").to_have_count(1)
    shot(page, screenshots, 'sequence-steps')
    form.locator('.nav-tabs a', has_text='Figures').click()
    expect(form.get_by_text('Reply Rate %', exact=False).first
        ).to_be_visible()
    shot(page, screenshots, 'sequence-figures')
    assert page.js_errors == []


def test_manager_sees_running_follow_ups(manager_page, crm_site, screenshots):
    page = manager_page
    tab, rows = open_model(page, crm_site, 'crm.enrollment')
    # Newest first: the demo's, or those other tests enrolled since.
    expect(rows.first, "the enrolled leads should be listed").to_be_visible()
    expect(rows.first, "each shows its sequence's state"
        ).to_contain_text(re.compile("Active|Paused|Completed|Stopped"))
    if page.viewport_name == '1280x800':
        for column in ["Lead", "Sequence", "State", "Next Step"]:
            expect(tab.locator('.content-box table.tree thead th',
                    has_text=column).first).to_be_visible()
    shot(page, screenshots, 'enrollments')
    assert page.js_errors == []
