"""The desk's reports on the running demo site, as each role calls them: a
rep's reports hold only the records their rules let them read, and the
Funnel and the Forecast open in the desk (screenshots
tests/screenshots/reports-*.png)."""
import datetime as dt

import pytest

from .conftest import desk_login
from .test_webhooks_browser import VIEWPORTS, open_menu

REP_FIELDS = ['user', 'leads', 'median_first_response', 'within_sla',
    'tasks_done', 'won_deals', 'won_value']


def fiscal_year_start():
    today = dt.date.today()
    return dt.date(today.year if today.month >= 4 else today.year - 1, 4, 1)


def test_rep_report_holds_only_the_reps_own_row_as_the_manager_sees_it(
        crm_site, manager):
    rep = crm_site.login('rep')
    everyone = {row['user']: row for row in manager.search_read(
            'crm.reporting.rep', [], REP_FIELDS)}
    # The demo's leads are spread over several owners.
    assert len(everyone) > 1 and rep.user_id in everyone
    mine = rep.search_read('crm.reporting.rep', [], REP_FIELDS)
    assert [row['user'] for row in mine] == [rep.user_id]
    assert mine[0] == everyone[rep.user_id]
    assert mine[0]['leads'] > 0


def test_rep_sources_count_only_the_leads_the_rep_may_read(
        crm_site, manager):
    rep = crm_site.login('rep')
    # 1 April, 00:00 in Mumbai, in UTC as the server keeps it.
    start = dt.datetime.combine(fiscal_year_start(), dt.time()
        ) - dt.timedelta(hours=5, minutes=30)
    period = [('source', '!=', None), ('create_date', '>=', {
                '__class__': 'datetime', 'year': start.year,
                'month': start.month, 'day': start.day, 'hour': start.hour,
                'minute': start.minute, 'second': 0, 'microsecond': 0})]

    def leads_in_report(session):
        return sum(row['leads'] for row in session.search_read(
                'crm.reporting.source', [], ['leads']))
    # The rep's list of leads passes through the same rules: the report
    # counts exactly the leads they see there (own and the team's
    # unassigned), fewer than the manager's.
    assert leads_in_report(rep) == len(rep.search('crm.lead', period))
    assert leads_in_report(rep) < leads_in_report(manager) == len(
        manager.search('crm.lead', period))


def test_rep_funnel_and_lost_reasons_count_fewer_deals_than_the_managers(
        crm_site, manager):
    rep = crm_site.login('rep')
    agent = crm_site.login('agent')

    def total(session, model, field):
        return sum(row[field] for row in session.search_read(model, [],
                [field]))
    for model, field in [('crm.reporting.funnel', 'reached'),
            ('crm.reporting.lost_reason', 'deals')]:
        assert 0 < total(rep, model, field) < total(manager, model, field), \
            model
    # A field agent has no reports (a user of no sales team neither).
    with pytest.raises(Exception, match='not allowed to access'):
        agent.search_read('crm.reporting.funnel', [], ['reached'])


playwright_sync = pytest.importorskip('playwright.sync_api')
expect = playwright_sync.expect


def test_funnel_opens_from_the_menu_with_a_row_per_stage(
        crm_site, manager, chromium_browser, screenshots):
    stages = manager.search_read('crm.stage', [], ['name'],
        order=[('sequence', 'ASC'), ('id', 'ASC')])
    context = chromium_browser.new_context(
        viewport={'width': 1280, 'height': 800})
    context.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(error.message))
    try:
        desk_login(page, crm_site, 'manager')
        menu = page.locator('#menu')
        menu.locator('.column-char', has_text='CRM').click()
        menu.get_by_text('Reports', exact=True).click()
        menu.get_by_text('Funnel', exact=True).click()
        tab = page.locator('#tabs .tab-pane.active')
        expect(tab.locator('.title').first).to_contain_text('Funnel')
        # The filters above the list, this fiscal year by default.
        start = fiscal_year_start()
        expect(tab.locator('input[name="from_date"]').first).to_have_value(
            start.strftime('%d/%m/%Y'))
        rows = tab.locator('.content-box table.tree tbody > tr')
        expect(rows).to_have_count(len(stages))
        expect(rows.first).to_contain_text(stages[0]['name'])
        expect(rows.last).to_contain_text(stages[-1]['name'])
        page.screenshot(path=str(screenshots / 'reports-funnel.png'))
        # Switch: the graph of the deals reaching each stage.
        tab.locator('button#switch_').click()
        # A bar per stage that some deal reached, drawn (billboard.js grows them).
        bars = tab.locator('.graph path.bb-bar')
        expect(bars).to_have_count(len(stages))
        page.wait_for_timeout(1000)
        # Painted, not only laid out (a bar with no colour is invisible).
        assert 'none' not in bars.evaluate_all(
            'bars => bars.map(bar => getComputedStyle(bar).fill)')
        page.screenshot(path=str(screenshots / 'reports-funnel-graph.png'))
    finally:
        context.close()
    assert errors == []


@pytest.mark.parametrize('viewport', VIEWPORTS)
def test_forecast_opens_by_month_with_its_graph(
        crm_site, chromium_browser, screenshots, viewport):
    "The manager's forecast at desktop and phone size, list then graph."
    width, height = VIEWPORTS[viewport]
    context = chromium_browser.new_context(
        viewport={'width': width, 'height': height})
    context.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(error.message))
    try:
        desk_login(page, crm_site, 'manager')
        open_menu(page, 'CRM', 'Reports', 'Forecast')
        tab = page.locator('#tabs .tab-pane.active')
        # The fiscal year by default: April to March.
        rows = tab.locator('.content-box table.tree tbody > tr')
        expect(rows).to_have_count(12)
        expect(rows.first).to_contain_text(
            fiscal_year_start().strftime('%b %Y'))
        page.screenshot(
            path=str(screenshots / f'reports-forecast-{viewport}.png'))
        tab.locator('button#switch_').click()
        # A bar per month and figure (an empty month's are flat).
        expect(tab.locator('.graph path.bb-bar')).to_have_count(12 * 4)
        page.wait_for_timeout(1000)
        page.screenshot(
            path=str(screenshots / f'reports-forecast-{viewport}-graph.png'))
    finally:
        context.close()
    assert errors == []
