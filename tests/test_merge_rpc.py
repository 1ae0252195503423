"A rep merges two of their leads through the wizard, over JSON-RPC as the desk does."


def test_rep_merges_duplicates_through_the_wizard(crm_site):
    rep = crm_site.login('rep')
    keep, other = rep.model('crm.lead', 'create', [
            {'name': "Farhan Khan", 'phone': '+919700000001'},
            {'name': "Farhan", 'whatsapp': '+919700000001',
                'email': 'farhan@example.in'}])
    duplicates = rep.search('crm.lead',
        [('similar_leads', '!=', None), ('id', 'in', [keep, other])])
    assert set(duplicates) == {keep, other}

    context = dict(rep.context, active_model='crm.lead', active_id=keep,
        active_ids=[keep])
    session, _, _ = rep.call('wizard.crm.lead.merge.create', context)
    start = rep.call('wizard.crm.lead.merge.execute', session, {}, 'start',
        context)['view']['defaults']
    # The desk sends back values, not the names it displays ('survivor.').
    start = {k: v for k, v in start.items() if '.' not in k}
    assert start['survivor'] == keep
    start['keep_email'] = 'farhan@example.in'
    rep.call('wizard.crm.lead.merge.execute', session,
        {'start': start}, 'merge', context)
    rep.call('wizard.crm.lead.merge.delete', session, context)

    lead, = rep.model('crm.lead', 'read', [keep], ['email', 'similar_leads'])
    assert lead['email'] == 'farhan@example.in'
    assert lead['similar_leads'] == []
    assert rep.search('crm.lead', [('id', '=', other)]) == []
