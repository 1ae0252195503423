"""My day (/<db>/crm/my-day) in a real browser at phone size (390x844)
and at desktop size, as the demo Field Agent: logged in through the desk,
then on the page. It lists an overdue task and a hot lead, its call and
WhatsApp links are right, and tapping "No answer" logs the call (the
lead's first response) and finishes the task. Screenshots go to
tests/screenshots/my-day-<viewport>-<step>.png."""
import secrets

import pytest

from .conftest import desk_login, eventually
from .test_desk_browser import TIMEOUT_MS, VIEWPORTS
from .test_my_day_api import new_lead, new_task

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request):
    return request.param


def test_field_agent_logs_no_answer_from_my_day(crm_site, manager,
        chromium_browser, screenshots, viewport):
    agent_id, = manager.search('res.user', [('login', '=', 'agent')])
    token = secrets.token_hex(3)
    # A lead's name is theirs to choose: it must show as text.
    lead_name = f'Asha <img src=x id=injected-{token}> {token}'
    lead_id, number = new_lead(manager, agent_id, name=lead_name)
    task_name = f'Call back about the 2 BHK {token}'
    task_id = new_task(manager, agent_id, lead_id, -3, name=task_name)
    hot_name = f'Hot Lead {token}'
    hot_id, hot_number = new_lead(manager, agent_id, name=hot_name,
        hot_on=crm_site)

    context = chromium_browser.new_context(viewport=VIEWPORTS[viewport],
        has_touch=viewport == '390x844')
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(str(error)))
    try:
        desk_login(page, crm_site, 'agent')
        page.goto(f'{crm_site.url}/{crm_site.database}/crm/my-day')
        task = page.locator('#tasks .card', has_text=task_name)
        expect(task).to_be_visible()
        expect(task).to_have_class('card task overdue')
        expect(task.locator('.late')).to_have_text('Overdue')
        hot = page.locator('#hot-leads .card', has_text=hot_name)
        expect(hot).to_be_visible()
        expect(task.locator('.card-lead strong')).to_have_text(lead_name)
        assert page.locator(f'#injected-{token}').count() == 0

        assert task.locator('a.call').get_attribute('href') == \
            f'tel:{number}'
        assert task.locator('a.whatsapp').get_attribute('href') == \
            f'https://wa.me/{number[1:]}'
        assert hot.locator('a.call').get_attribute('href') == \
            f'tel:{hot_number}'
        assert hot.locator('a.whatsapp').get_attribute('href') == \
            f'https://wa.me/{hot_number[1:]}'
        inbox = task.get_by_role('link', name='Inbox').get_attribute('href')
        # The lead has no conversation yet: the link makes it.
        assert inbox == f'/{crm_site.database}/crm/my-day/inbox/{lead_id}'
        # Nothing wider than the phone: no sideways scrolling.
        assert page.evaluate(
            'document.documentElement.scrollWidth') <= VIEWPORTS[
                viewport]['width']
        page.screenshot(path=screenshots / f'my-day-{viewport}-list.png')
        task.scroll_into_view_if_needed()
        task.screenshot(path=screenshots / f'my-day-{viewport}-task.png')

        task.get_by_role('button', name='No answer').click()
        dialog = page.locator('#next-dialog')
        expect(dialog).to_be_visible()
        expect(task.locator('.card-done')).to_have_text('Done: No answer')
        page.screenshot(path=screenshots / f'my-day-{viewport}-next.png')
        dialog.get_by_role('button', name='No next task').click()
        expect(dialog).to_be_hidden()

        record, = manager.model('crm.task', 'read', [task_id],
            ['state', 'outcome'])
        assert (record['state'], record['outcome']) == ('done', 'no_answer')
        lead, = manager.model('crm.lead', 'read', [lead_id],
            ['first_response_at', 'first_response_by'])
        assert lead['first_response_at']
        assert lead['first_response_by'] == agent_id

        hot.get_by_role('button', name='Connected').click()
        expect(hot.locator('.card-done')).to_have_text(
            'Call logged: Connected')
        assert eventually(lambda: manager.model('crm.lead', 'read',
                [hot_id], ['first_response_at'])[0]['first_response_at'])
        hot.screenshot(path=screenshots / f'my-day-{viewport}-logged.png')
        assert errors == []
    finally:
        context.close()
