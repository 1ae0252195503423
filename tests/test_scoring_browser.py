"""The lead's "Why this score" tab and the predictive model in the desk, as
the manager sees them on the demo site (screenshots in tests/screenshots/
scoring-*.png)."""
import re

import pytest

from .conftest import desk_login

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect
TIMEOUT_MS = 20_000


@pytest.fixture(scope='module')
def desk(crm_site, chromium_browser):
    "A desk page signed in as the manager."
    context = chromium_browser.new_context(
        viewport={'width': 1366, 'height': 900})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    desk_login(page, crm_site, 'manager')
    yield page
    context.close()


def open_record(page, crm_site, model, record_id):
    page.goto(f'{crm_site.url}/#{crm_site.database}/model/{model}/'
        f'{record_id}')
    # sao reads the address when it loads, not when only its hash changes.
    page.reload()
    form = page.locator('#tabs .tab-pane.active .content-box > .form')
    expect(form).to_be_visible()
    return form


def test_hot_lead_says_why_it_is_hot(desk, crm_site, manager, screenshots):
    # A demo lead made hot by its rules (other tests make leads hot by
    # hand, without a breakdown).
    lead, = manager.search_read('crm.lead', [('band', '=', 'hot'),
            ('score_lines.reason', 'ilike', 'Came by referral%'),
            ('score_lines.reason', 'ilike', 'Booked a visit%')],
        ['score'], order=[('score', 'DESC')], limit=1)
    form = open_record(desk, crm_site, 'crm.lead', lead['id'])
    form.get_by_text('Why this score', exact=True).click()
    page = form.locator('.tab-pane.active')
    expect(page.get_by_text("Came by referral")).to_be_visible()
    expect(page.get_by_text("Booked a visit", exact=False).first
        ).to_be_visible()
    expect(page.locator('textarea[name="win_reasons"]')).to_have_value(
        re.compile(r'^\+ Source: Referral', re.M))
    desk.screenshot(path=str(screenshots / 'scoring-why-this-score.png'))


def test_predictive_model_shows_its_accuracy(desk, crm_site, manager,
        screenshots):
    model, = manager.search_read('crm.scoring.model', [], ['id'], limit=1)
    form = open_record(desk, crm_site, 'crm.scoring.model', model['id'])
    expect(form.get_by_text("AUC", exact=False).first).to_be_visible()
    expect(form.locator('textarea[name="calibration_text"]')).to_have_value(
        re.compile(r'^1: predicted \d+%, won \d+% of \d+', re.M))
    expect(form.locator('button', has_text='Retrain')).to_have_count(1)
    desk.screenshot(path=str(screenshots / 'scoring-predictive-model.png'))
