"""A manager downloads a report and the leads as Excel workbooks from the
desk's Print menu, at desktop and phone size (screenshots
tests/screenshots/spreadsheet-*.png)."""
import io

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from .conftest import SCREENSHOTS, desk_login
from .test_webhooks_browser import VIEWPORTS, open_menu


def download_from_print_menu(page, tab):
    """The rows of the workbook the Print menu's Spreadsheet (Excel) gives
    for every row of the list (Print needs a selection)."""
    rows = tab.locator('.content-box table.tree tbody > tr')
    for row in range(rows.count()):
        rows.nth(row).locator('input[type="checkbox"]').first.check()
    print_button = tab.locator('button#print')
    if print_button.is_visible():
        print_button.click()
    else:
        # On a phone the toolbar's menus are under the tab's title.
        tab.locator('nav.toolbar a.navbar-brand.dropdown-toggle').click()
        page.screenshot(path=str(SCREENSHOTS / 'spreadsheet-phone-menu.png'))
        tab.get_by_role('menuitem', name='Print').click()
    item = page.get_by_role('menuitem', name='Spreadsheet (Excel)')
    with page.expect_download() as info:
        item.click()
    download = info.value
    assert download.suggested_filename.endswith('.xlsx')
    with open(download.path(), 'rb') as file:
        sheet = load_workbook(io.BytesIO(file.read())).active
    return [[c.value for c in row] for row in sheet.iter_rows()]


@pytest.mark.parametrize('viewport', VIEWPORTS)
def test_manager_downloads_a_report_as_excel(
        crm_site, manager, chromium_browser, screenshots, viewport):
    width, height = VIEWPORTS[viewport]
    context = chromium_browser.new_context(accept_downloads=True,
        viewport={'width': width, 'height': height})
    context.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda error: errors.append(error.message))
    try:
        desk_login(page, crm_site, 'manager')
        open_menu(page, 'CRM', 'Reports', 'Lead Sources')
        tab = page.locator('#tabs .tab-pane.active')
        rows = tab.locator('.content-box table.tree tbody > tr')
        expect(rows.first).to_be_visible()
        shown = rows.count()
        header, *body = download_from_print_menu(page, tab)
        page.screenshot(
            path=str(screenshots / f'spreadsheet-{viewport}-report.png'))
        assert "Leads" in header
        assert len(body) == shown
        leads = [r[header.index("Leads")] for r in body]
        assert all(isinstance(n, int) for n in leads) and sum(leads) > 0
    except Exception:
        page.screenshot(
            path=str(screenshots / f'spreadsheet-{viewport}-failed.png'))
        raise
    finally:
        context.close()
    assert errors == []
