"""A person's rights (DPDP Act) over JSON-RPC on the demo site, as the desk
calls them: only the manager exports and erases, and an erased person who
writes again on WhatsApp does not become a lead."""
import base64
import io
import json
import zipfile

import pytest

from .rpc import RpcError
from .test_whatsapp_webhook import (  # noqa: F401 (fixtures)
    lead_of, new_wa_id, settle, webhook)
from .whatsapp_payloads import inbound

WIZARD = 'wizard.crm.lead.privacy_export'


def lead_context(session, lead_id):
    return dict(session.context, active_model='crm.lead', active_id=lead_id,
        active_ids=[lead_id])


def export(session, lead_id):
    "The ZIP the Export Personal Data wizard gives the session."
    context = lead_context(session, lead_id)
    wizard, _, _ = session.call(f'{WIZARD}.create', context)
    try:
        defaults = session.call(f'{WIZARD}.execute', wizard, {}, 'start',
            context)['view']['defaults']
    finally:
        session.call(f'{WIZARD}.delete', wizard, context)
    # JSON-RPC carries bytes as {"__class__": "bytes", "base64": ...}.
    return zipfile.ZipFile(io.BytesIO(
            base64.b64decode(defaults['file']['base64'])))


def refused(call):
    with pytest.raises(RpcError) as error:
        call()
    assert 'not allowed' in error.value.message, error.value
    return True


def read_lead(manager, lead_id):
    lead, = manager.model('crm.lead', 'read', [lead_id],
        ['name', 'phone', 'email', 'active', 'erased_at'])
    return lead


def test_rep_may_neither_export_nor_erase_their_own_lead(crm_site, manager):
    rep = crm_site.login('rep')
    lead_id, = rep.model('crm.lead', 'create', [{'name': "Kavita Rao",
                'phone': '+919700000101', 'email': 'kavita@example.in'}])
    assert refused(lambda: export(rep, lead_id))
    assert refused(lambda: rep.model(
            'crm.lead', 'erase_personal_data', [lead_id]))
    assert read_lead(manager, lead_id)['phone'] == '+919700000101'
    assert manager.search('crm.privacy.log', [('lead', '=', lead_id)]) == []


def test_manager_exports_then_erases_and_both_are_logged(crm_site, manager):
    lead_id, = manager.model('crm.lead', 'create', [{'name': "Sunil Mehta",
                'phone': '+919700000102', 'email': 'sunil@example.in'}])
    archive = export(manager, lead_id)
    data = json.loads(archive.read('personal-data.json'))
    assert (data['lead'][0]['name'], data['lead'][0]['phone']) == (
        "Sunil Mehta", '+919700000102')
    assert 'lead.csv' in archive.namelist()

    manager.model('crm.lead', 'erase_personal_data', [lead_id])
    lead = read_lead(manager, lead_id)
    assert (lead['phone'], lead['email'], lead['active']) == (
        None, None, False)
    assert lead['name'] == f"Erased person #{lead_id}"
    assert lead['erased_at']
    logs = manager.search_read('crm.privacy.log', [('lead', '=', lead_id)],
        ['action', 'done_by'], order=[('id', 'ASC')])
    assert [(l['action'], l['done_by']) for l in logs] == [
        ('export', manager.user_id), ('erasure', manager.user_id)]
    # The log is the system's: not even the manager rewrites it.
    assert refused(lambda: manager.model('crm.privacy.log', 'write',
            [logs[0]['id']], {'detail': "nothing"}))


def test_erased_person_writing_on_whatsapp_again_makes_no_lead(
        webhook, manager, settle):  # noqa: F811
    wa_id = new_wa_id()
    assert webhook.post(inbound(wa_id, name="Deepa Nair"))[0] == 200
    settle()
    lead, = lead_of(manager, wa_id)
    manager.model('crm.lead', 'erase_personal_data', [lead['id']])
    # The erased lead's own messages: the site's worker sends other
    # leads' follow-ups meanwhile, so the site's count may move.
    messages = manager.search('crm.message', [('lead', '=', lead['id'])])

    assert webhook.post(inbound(wa_id, name="Deepa Nair"))[0] == 200
    settle()
    assert lead_of(manager, wa_id) == []
    # Neither an active lead nor an archived one.
    assert manager.call('model.crm.lead.search',
        [('whatsapp', '=', '+' + wa_id)], 0, None, None,
        dict(manager.context, active_test=False)) == []
    new = set(manager.search('crm.message', [('lead', '=', lead['id'])])
        ) - set(messages)
    assert not new, manager.model('crm.message', 'read', list(new),
        ['direction', 'channel', 'kind', 'status', 'create_date',
            'enrollment', 'error_message'])
    # A number never erased still makes its lead, on the same webhook.
    other = new_wa_id()
    assert webhook.post(inbound(other, name="Someone Else"))[0] == 200
    settle()
    assert len(lead_of(manager, other)) == 1
