"""The dashboard home in a real browser at desk size (1280x800) and phone
size (390x844), as the demo's rep and manager: they sign in to the desk
and land on it, it shows the server's numbers for their scope, its charts
are drawn, nothing is wider than the screen (one column on the phone),
a number opens the desk list behind it, and the Desk link leads back to
the desk, which then stays. Screenshots go to
tests/screenshots/dashboard-<role>-<viewport>.png."""
import pytest

from .conftest import ask_for_password
from .test_desk_browser import TIMEOUT_MS, VIEWPORTS

playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect

SCOPES = {'rep': 'your numbers', 'manager': "everyone's numbers"}


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request):
    return request.param


def sign_in(page, crm_site, login):
    page.goto(f'{crm_site.url}/')
    password = ask_for_password(page, crm_site.database, login)
    password.fill(login)
    password.press('Enter')


@pytest.mark.parametrize('login', sorted(SCOPES))
def test_user_lands_on_their_dashboard_after_login(crm_site, manager,
        chromium_browser, screenshots, viewport, login):
    context = chromium_browser.new_context(viewport=VIEWPORTS[viewport],
        has_touch=viewport == '390x844')
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(str(error)))
    try:
        sign_in(page, crm_site, login)
        page.wait_for_url(f'**/{crm_site.database}/crm/dashboard')
        expect(page.locator('#dashboard')).to_have_attribute(
            'aria-busy', 'false')
        expect(page.locator('#summary')).to_contain_text(SCOPES[login])

        # The page shows the server's numbers, read with the same session.
        answer = page.request.get(f'{crm_site.url}/{crm_site.database}'
            '/crm/dashboard/api/figures').json()
        tiles = page.locator('#tiles .tile')
        expect(tiles).to_have_count(len(answer['tiles']))
        for figure in answer['tiles']:
            shown = page.locator(f'#tiles .tile[data-key="{figure["key"]}"]')
            expect(shown.locator('.tile-value')).to_have_text(figure['text'])
        target = page.locator('#target-figures')
        expect(target).to_contain_text(answer['target']['won_text'])
        expect(target).to_contain_text(answer['target']['amount_text'])
        expect(target).to_contain_text(f"{answer['target']['percent']}%")

        # Charts: a bar per stage in the funnel, the sources and the
        # fiscal year's months.
        stages = answer['charts']['funnel']
        expect(page.locator('#chart-funnel svg .bar-row')).to_have_count(
            len(stages))
        expect(page.locator('#chart-funnel svg')).to_contain_text(
            stages[0]['label'])
        expect(page.locator('#chart-sources svg .bar-row')).to_have_count(
            len(answer['charts']['sources']))
        expect(page.locator('#chart-won svg')).to_contain_text('Apr')

        width = VIEWPORTS[viewport]['width']
        assert page.evaluate(
            'document.documentElement.scrollWidth') <= width
        for chart in page.locator('.chart svg').all():
            box = chart.bounding_box()
            assert box['x'] >= 0 and box['x'] + box['width'] <= width
        lefts = {round(t.bounding_box()['x']) for t in tiles.all()}
        if viewport == '390x844':
            # One column on the phone.
            assert len(lefts) == 1
        else:
            assert len(lefts) == 4
        page.screenshot(path=screenshots / f'dashboard-{login}-{viewport}.png',
            full_page=True)

        # A number opens the desk's list behind it, in the desk.
        page.locator('#tiles .tile[data-key="tasks_overdue"]').click()
        expect(page.locator('#tabs .tab-pane.active .title').first
            ).to_contain_text('Overdue tasks')
        if viewport == '1280x800':
            page.screenshot(
                path=screenshots / f'dashboard-{login}-desk-list.png')
        page.goto(f'{crm_site.url}/{crm_site.database}/crm/dashboard')
        expect(page.locator('#dashboard')).to_have_attribute(
            'aria-busy', 'false')
        # Its Desk link leads to the desk, which stays: the landing is
        # once per browser tab.
        page.locator('#desk-link').click()
        expect(page.locator('#menu .column-char', has_text='CRM')
            ).to_be_visible()
        page.wait_for_timeout(1000)
        assert '/crm/dashboard' not in page.url
        assert errors == []
    finally:
        context.close()
