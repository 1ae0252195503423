"""The team inbox: what its page (static/inbox/) reads and does, as JSON.
routes.py checks the session, the CSRF token and the limits, then calls
crm.inbox in a transaction of the signed-in user.

Who may see what is the record rules' business: conversations are searched
with access checked, so a rep finds only those of leads they may read, and
answering needs the right to write the lead. The work itself (a message,
a note) is then done as the system, as Tryton's buttons do."""
import datetime as dt
import json
import re

from trytond.i18n import gettext
from trytond.model import Model
from trytond.pool import Pool
from trytond.transaction import Transaction, check_access, without_check_access

from .conversation import CALL_OUTCOMES, LoggedCall
from .exceptions import InboxRefusal
from .message import utcnow

PAGE_SIZE = 50
THREAD_SIZE = 50
MAX_BUTTONS, MAX_BUTTON_TITLE = 3, 20
MAX_TEXT = 4096  # WhatsApp's limit for a text body
MENTION = re.compile(r'@"([^"]{1,80})"|@([\w.\-]{2,80})')
# The tabs of the inbox; "mine" and "team" depend on the user
# (_filter_domain).
FILTERS = {
    'open': [('state', '=', 'open')],
    'waiting': [('state', '=', 'open'), ('waiting', '=', True)],
    'unassigned': [('state', '=', 'open'), ('lead.owner', '=', None)],
    'opted_out': [('lead.consents', 'where', [
                ('state', '=', 'opted_out')])],
    'snoozed': [('state', '=', 'snoozed')],
    'done': [('state', '=', 'done')],
    'all': [],
    }
# What a thread item shows of a message (Inbox.items_json).
ITEM_FIELDS = ['channel', 'kind', 'direction', 'at', 'subject', 'body',
    'attachment', 'status', 'error_code', 'error_message', 'buttons',
    'template_name', 'template_language', 'call_outcome', 'call_duration',
    'mentions', 'media_state', 'media_error', 'media_mime_type',
    'media_filename', 'author.rec_name', 'reply_to.summary', 'media.name',
    'media.data']
# Counted for the tabs, at most this many ("99+").
COUNTED = ['waiting', 'mine', 'unassigned', 'team', 'opted_out']
COUNT_LIMIT = 100


def iso(value):
    return value.isoformat(timespec='seconds') + 'Z' if value else None


def parse_iso(value):
    "A time the page sent (ISO 8601, UTC or with an offset), naive UTC."
    try:
        at = dt.datetime.fromisoformat(str(value).replace('Z', '+00:00'))
    except ValueError:
        raise InboxRefusal('bad_time',
            gettext('kraya_crm.msg_inbox_bad_time', value=value))
    if at.tzinfo:
        at = at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return at


def user_json(user):
    return {'id': user.id, 'name': user.rec_name} if user else None


def desk_url(record):
    return f'/#{Transaction().database.name}/model/{record.__name__}/' \
        f'{record.id}'


class Inbox(Model):
    "What the team inbox page reads and does."
    __name__ = 'crm.inbox'
    __string__ = "Inbox"

    # --- Reading ---

    @classmethod
    def conversations(cls, filter_='open', query=None, offset=0,
            limit=PAGE_SIZE):
        "A page of the conversations the user may see, newest inbound first."
        Conversation = Pool().get('crm.conversation')
        domain = cls._filter_domain(filter_) + cls._search_domain(query)
        with check_access():
            found = Conversation.search(domain, offset=offset,
                limit=min(limit, 200))
        return {
            'conversations': cls.conversations_json(found),
            'counts': cls.counts(),
            'cursor': iso(utcnow()),
            }

    @classmethod
    def counts(cls):
        Conversation = Pool().get('crm.conversation')
        with check_access():
            return {name: Conversation.search_count(
                    cls._filter_domain(name), limit=COUNT_LIMIT)
                for name in COUNTED}

    @classmethod
    def _filter_domain(cls, name):
        User = Pool().get('res.user')
        if name == 'team':
            return [('state', '=', 'open'),
                ('lead.team', 'in', list(User.get_crm_teams()))]
        if name == 'mine':
            return [('state', '=', 'open'),
                ('lead.owner', '=', Transaction().user)]
        if name not in FILTERS:
            raise InboxRefusal('bad_filter',
                gettext('kraya_crm.msg_inbox_bad_filter', filter=name))
        return list(FILTERS[name])

    @classmethod
    def _search_domain(cls, query):
        query = (query or '').strip()
        if not query:
            return []
        # The lead's search: name, company, email, and a phone number
        # however it is typed (normalised to E.164).
        return [('lead.rec_name', 'ilike', f'%{query}%')]

    @classmethod
    def conversation(cls, conversation_id, mode='read'):
        """The conversation if the user may see it (mode 'read') or answer
        it ('write': the right to write its lead); else not found."""
        pool = Pool()
        Conversation = pool.get('crm.conversation')
        Lead = pool.get('crm.lead')
        ModelAccess = pool.get('ir.model.access')
        Rule = pool.get('ir.rule')
        with check_access():
            found = Conversation.search([('id', '=', conversation_id)])
            if found and mode == 'write':
                lead = found[0].lead
                if not ModelAccess.check('crm.lead', 'write',
                        raise_exception=False) or not Lead.search([
                            ('id', '=', lead.id),
                            Rule.domain_get('crm.lead', mode='write'),
                            ]):
                    raise InboxRefusal('not_allowed',
                        gettext('kraya_crm.msg_inbox_not_allowed'))
        if not found:
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_inbox_not_found'))
        return found[0]

    @classmethod
    def conversations_json(cls, conversations):
        now = utcnow()
        return [cls._conversation_json(c, now) for c in conversations]

    @classmethod
    def _conversation_json(cls, conversation, now):
        lead = conversation.lead
        deal = lead.open_deal
        closes_at = conversation.window_closes_at
        last = conversation.last_message
        return {
            'id': conversation.id,
            'lead': {
                'id': lead.id, 'name': lead.name,
                'company_name': lead.company_name,
                'phone': lead.phone, 'whatsapp': lead.whatsapp_number,
                'email': lead.email, 'city': lead.city,
                'desk_url': desk_url(lead),
                },
            'deal': {
                'id': deal.id, 'title': deal.title,
                'stage': deal.stage.rec_name, 'desk_url': desk_url(deal),
                } if deal else None,
            'owner': user_json(lead.owner),
            'team': {'id': lead.team.id, 'name': lead.team.rec_name}
            if lead.team else None,
            'band': lead.band,
            'state': conversation.state,
            'snoozed_until': iso(conversation.snoozed_until),
            'unread': conversation.unread or 0,
            'waiting': bool(conversation.waiting),
            'last_message': {
                'at': iso(last.at), 'direction': last.direction,
                'channel': last.channel, 'summary': last.summary,
                } if last else None,
            'last_inbound_at': iso(conversation.last_inbound_at),
            'window': {
                'open': bool(closes_at),
                'closes_at': iso(closes_at),
                'seconds_left': int((closes_at - now).total_seconds())
                if closes_at else 0,
                },
            'opted_out': sorted(c.channel for c in lead.consents
                if c.state == 'opted_out'),
            'not_on_whatsapp': bool(lead.not_on_whatsapp),
            }

    @classmethod
    def thread(cls, conversation, before=None, limit=THREAD_SIZE):
        """The thread's items, oldest first: the messages (before the item
        `before`, for older pages) and the stage changes of the lead's deals
        in the same span."""
        pool = Pool()
        Message = pool.get('crm.message')
        History = pool.get('crm.deal.stage_history')
        lead = conversation.lead
        domain = [('lead', '=', lead.id)]
        end = None
        if before:
            older = Message(cls._message_id(before))
            if older.lead != lead:
                raise InboxRefusal('not_found',
                    gettext('kraya_crm.msg_inbox_not_found'))
            end = older.at
            domain.append(['OR', ('at', '<', older.at), [
                        ('at', '=', older.at), ('id', '<', older.id)]])
        limit = min(limit, 500)
        messages = Message.search(domain,
            order=[('at', 'DESC'), ('id', 'DESC')], limit=limit + 1)
        has_more = len(messages) > limit
        messages = messages[:limit]
        history_domain = [('deal.lead', '=', lead.id)]
        if has_more:
            history_domain.append(('changed_at', '>=', messages[-1].at))
        if end:
            history_domain.append(('changed_at', '<', end))
        changes = History.search(history_domain) if lead.deals else []
        items = cls.items_json(messages)
        items += [cls._stage_json(h) for h in changes]
        items.sort(key=lambda i: (i['at'], i['id']))
        return {
            'conversation': cls._conversation_json(conversation, utcnow()),
            'items': items,
            'has_more': has_more,
            }

    @staticmethod
    def _message_id(item_id):
        if not re.fullmatch(r'm\d{1,18}', str(item_id or '')):
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_inbox_not_found'))
        return int(item_id[1:])

    @classmethod
    def item_json(cls, message):
        return cls.items_json([message])[0]

    @classmethod
    def items_json(cls, messages):
        """The thread items of messages, read in one go: a thread of 500
        is read as rows, not walked record by record."""
        pool = Pool()
        Message = pool.get('crm.message')
        User = pool.get('res.user')
        # The size of the files, not their bytes.
        with Transaction().set_context({'ir.attachment.data': 'size'}):
            rows = Message.read([m.id for m in messages], ITEM_FIELDS)
        mentioned = {u.id: user_json(u) for u in User.browse(
                {i for row in rows for i in row['mentions']})}
        database = Transaction().database.name
        return [cls._item_json(row, mentioned, database) for row in rows]

    @staticmethod
    def _item_json(row, mentioned, database):
        channel = row['channel']
        kind = {'note': 'note', 'call': 'call', 'event': (
                    'assignment' if row['kind'] == 'assignment'
                    else 'event')}.get(channel, 'message')
        media = row['media.']
        attachment = None
        if media or row['media_state'] or row['attachment']:
            attachment = {
                'name': media['name'] if media else (
                    row['media_filename'] or row['attachment']),
                'mime_type': row['media_mime_type'],
                'size': media['data'] if media else None,
                'url': (f'/{database}/crm/inbox/api/media/{row["id"]}')
                if media else None,
                'state': row['media_state'] or ('fetched' if media else None),
                'error': row['media_error'],
                }
        author, reply_to = row['author.'], row['reply_to.']
        duration = row['call_duration']
        return {
            'id': f'm{row["id"]}',
            'type': kind,
            'direction': row['direction'],
            'channel': channel,
            'kind': row['kind'],
            'author': {'id': author['id'], 'name': author['rec_name']}
            if author else None,
            'automated': row['direction'] == 'outbound' and not author,
            'at': iso(row['at']),
            'subject': row['subject'],
            'body': row['body'],
            'attachment': attachment,
            'status': row['status'],
            'error_code': row['error_code'],
            'error_message': row['error_message'],
            'reply_to': {
                'id': f'm{reply_to["id"]}', 'summary': reply_to['summary'],
                } if reply_to else None,
            'buttons': json.loads(row['buttons']) if row['buttons'] else None,
            'template': {
                'name': row['template_name'],
                'language': row['template_language'],
                } if row['template_name'] else None,
            'call': {
                'outcome': row['call_outcome'],
                'outcome_label': dict(CALL_OUTCOMES).get(row['call_outcome']),
                'duration_seconds': int(duration.total_seconds())
                if duration is not None else None,
                } if channel == 'call' else None,
            'mentions': [mentioned[i] for i in row['mentions']],
            'text': row['body'] if kind in {'assignment', 'event'} else None,
            }

    @classmethod
    def _stage_json(cls, change):
        text = ' → '.join(filter(None, [
                    change.from_stage.rec_name if change.from_stage else None,
                    change.to_stage.rec_name]))
        return {
            'id': f's{change.id}', 'type': 'stage', 'direction': 'internal',
            'channel': 'event', 'kind': 'stage',
            'author': user_json(change.changed_by), 'automated': False,
            'at': iso(change.changed_at), 'text': text, 'body': text,
            'subject': None, 'attachment': None, 'status': 'logged',
            'error_code': None, 'error_message': None, 'reply_to': None,
            'buttons': None, 'template': None, 'call': None,
            'mentions': [],
            }

    @classmethod
    def changed_since(cls, cursor, limit=PAGE_SIZE):
        """The conversations the user may see that changed after the cursor
        (an ISO time), and the cursor to ask with next."""
        Conversation = Pool().get('crm.conversation')
        since = parse_iso(cursor)
        with check_access():
            changed = Conversation.search([('changed_at', '>', since)],
                order=[('changed_at', 'ASC'), ('id', 'ASC')], limit=limit)
        if not changed:
            return cursor, []
        # Exact to the microsecond: the next poll starts after the last one.
        return (changed[-1].changed_at.isoformat() + 'Z',
            cls.conversations_json(changed))

    @classmethod
    def teammates(cls):
        "Who may be assigned a conversation or @mentioned: the CRM's users."
        User = Pool().get('res.user')
        with without_check_access():
            users = User.search([
                    ('groups.name', 'in', cls._crm_group_names()),
                    ('id', '!=', 0),
                    ], order=[('name', 'ASC')])
        return [{'id': u.id, 'name': u.rec_name, 'login': u.login}
            for u in users]

    @classmethod
    def _crm_group_names(cls):
        ModelData = Pool().get('ir.model.data')
        Group = Pool().get('res.group')
        return [Group(ModelData.get_id('kraya_crm', xml_id)).name
            for xml_id in ['group_crm_manager', 'group_crm_rep',
                'group_crm_field_agent']]

    @classmethod
    def mentions(cls, limit=PAGE_SIZE):
        "The notes that mention the user, newest first."
        Message = Pool().get('crm.message')
        with check_access():
            notes = Message.search([
                    ('channel', '=', 'note'),
                    ('mentions', '=', Transaction().user),
                    ], order=[('at', 'DESC'), ('id', 'DESC')], limit=limit)
        Conversation = Pool().get('crm.conversation')
        conversations = Conversation.of_leads([n.lead for n in notes])
        return [dict(item, conversation=conversations[n.lead.id].id)
            for n, item in zip(notes, cls.items_json(notes))]

    @classmethod
    def templates(cls, conversation):
        "The approved WhatsApp templates, their parameters filled for the lead."
        Template = Pool().get('crm.whatsapp.template')
        lead = conversation.lead
        return [{
                'id': t.id, 'name': t.name, 'language': t.language,
                'category': t.category, 'status': t.status,
                'body': t.body, 'header': t.header_format,
                'parameters': t.parameter_count,
                'prefill': t.prefill(lead),
                } for t in Template.approved()]

    # --- Doing ---

    @classmethod
    def read_conversation(cls, conversation):
        Conversation = Pool().get('crm.conversation')
        with without_check_access():
            Conversation.mark_read([conversation])
        return cls._conversation_json(conversation, utcnow())

    @classmethod
    def send(cls, conversation, values, upload=None):
        """Answer the lead on WhatsApp or by email; the outbox sends it.
        upload: (filename, mime type, bytes) of an image or a document."""
        pool = Pool()
        Message = pool.get('crm.message')
        lead = conversation.lead
        channel = values.get('channel') or 'whatsapp'
        if channel == 'whatsapp':
            message = cls._whatsapp_message(conversation, values, upload)
        elif channel == 'email':
            message = cls._email_message(conversation, values)
        else:
            raise InboxRefusal('bad_channel',
                gettext('kraya_crm.msg_inbox_bad_channel', channel=channel))
        message.lead = lead
        message.deal = lead.open_deal
        message.direction = 'outbound'
        message.status = 'queued'
        message.author = Transaction().user
        if values.get('reply_to'):
            replied = Message(cls._message_id(values['reply_to']))
            if replied.lead != lead:
                raise InboxRefusal('not_found',
                    gettext('kraya_crm.msg_inbox_not_found'))
            message.reply_to = replied
        with without_check_access():
            message.save()
            Message.wake_outbox()
        return cls.item_json(message)

    @staticmethod
    def _text(values, required=True):
        text = (values.get('text') or '').strip()
        if required and not text:
            raise InboxRefusal('empty',
                gettext('kraya_crm.msg_inbox_empty'))
        if len(text) > MAX_TEXT:
            raise InboxRefusal('too_long',
                gettext('kraya_crm.msg_inbox_too_long', limit=MAX_TEXT))
        return text

    @classmethod
    def _whatsapp_message(cls, conversation, values, upload):
        pool = Pool()
        Message = pool.get('crm.message')
        lead = conversation.lead
        if not lead.whatsapp_number:
            raise InboxRefusal('no_number',
                gettext('kraya_crm.msg_inbox_no_number'))
        if lead.not_on_whatsapp:
            raise InboxRefusal('not_on_whatsapp',
                gettext('kraya_crm.msg_not_on_whatsapp'))
        if not lead.may_contact('whatsapp'):
            raise InboxRefusal('opted_out',
                gettext('kraya_crm.msg_inbox_opted_out', channel="WhatsApp"))
        message = Message(channel='whatsapp', address=lead.whatsapp_number)
        if values.get('template'):
            return cls._template_message(message, lead, values['template'])
        if not conversation.window_closes_at:
            raise InboxRefusal('window_closed',
                gettext('kraya_crm.msg_inbox_window_closed'))
        if upload:
            return cls._media_message(message, lead, values, upload)
        message.body = cls._text(values)
        buttons = values.get('buttons') or []
        if buttons:
            message.kind = 'buttons'
            message.buttons = json.dumps(cls._checked_buttons(buttons))
        else:
            message.kind = 'text'
        return message

    @staticmethod
    def _checked_buttons(buttons):
        titles = [str(b).strip() for b in buttons]
        if (len(titles) > MAX_BUTTONS or not all(titles)
                or len(set(titles)) != len(titles)
                or any(len(t) > MAX_BUTTON_TITLE for t in titles)):
            raise InboxRefusal('bad_buttons',
                gettext('kraya_crm.msg_inbox_bad_buttons',
                    count=MAX_BUTTONS, length=MAX_BUTTON_TITLE))
        return titles

    @classmethod
    def _template_message(cls, message, lead, chosen):
        Template = Pool().get('crm.whatsapp.template')
        try:
            template, = [t for t in Template.approved()
                if t.id == int(chosen.get('id'))]
        except (TypeError, ValueError):
            raise InboxRefusal('bad_template',
                gettext('kraya_crm.msg_inbox_bad_template'))
        parameters = [str(p).strip() for p in chosen.get('parameters') or []]
        if len(parameters) != (template.parameter_count or 0) \
                or not all(parameters):
            raise InboxRefusal('bad_parameters',
                gettext('kraya_crm.msg_inbox_template_parameters',
                    template=template.name,
                    count=template.parameter_count or 0))
        message.kind = 'template'
        message.template = template
        message.template_name = template.name
        message.template_language = template.language
        message.template_parameters = json.dumps(parameters)
        message.body = template.preview(parameters)
        return message

    @classmethod
    def _media_message(cls, message, lead, values, upload):
        pool = Pool()
        Attachment = pool.get('ir.attachment')
        from .media import check_upload
        filename, mime_type, data = upload
        message.kind = check_upload(filename, mime_type, len(data))
        with without_check_access():
            attachment = Attachment(resource=lead, name=filename,
                type='data', data=data)
            attachment.save()
        message.media = attachment
        message.body = cls._text({'text': values.get('caption')
                or values.get('text')}, required=False) or None
        message.attachment = f'{message.kind}: {mime_type} {filename}'
        return message

    @classmethod
    def _email_message(cls, conversation, values):
        Message = Pool().get('crm.message')
        lead = conversation.lead
        if not lead.email:
            raise InboxRefusal('no_email',
                gettext('kraya_crm.msg_inbox_no_email'))
        if not lead.may_contact('email'):
            raise InboxRefusal('opted_out',
                gettext('kraya_crm.msg_inbox_opted_out', channel="email"))
        last = Message.search([
                ('lead', '=', lead.id), ('channel', '=', 'email'),
                ('direction', '=', 'inbound'),
                ], order=[('at', 'DESC'), ('id', 'DESC')], limit=1)
        subject = (values.get('subject') or '').strip()
        if not subject:
            previous = last[0].subject if last else None
            subject = (previous if previous and previous.lower().startswith(
                    're:') else f"Re: {previous}" if previous
                else gettext('kraya_crm.msg_inbox_email_subject'))
        message = Message(channel='email', address=lead.email, kind='email',
            subject=subject[:200], body=cls._text(values))
        if last and not values.get('reply_to'):
            # The same thread in the lead's mail app.
            message.reply_to = last[0]
        return message

    @classmethod
    def add_note(cls, conversation, text):
        """An internal note, never sent; @login or @"Full Name" mentions
        notify those teammates in the desk."""
        pool = Pool()
        Message = pool.get('crm.message')
        Notification = pool.get('res.notification')
        User = pool.get('res.user')
        text = cls._text({'text': text})
        mentioned = cls._mentioned(text)
        author = User(Transaction().user)
        note = Message(lead=conversation.lead, direction='internal',
            channel='note', kind='note', status='logged', body=text,
            author=author, mentions=mentioned)
        with without_check_access():
            note.save()
            Notification.save([Notification(user=user,
                        label=gettext('kraya_crm.msg_inbox_mentioned',
                            author=author.rec_name,
                            lead=conversation.lead.rec_name),
                        description=text[:200],
                        icon='tryton-notification', model='crm.lead',
                        records=json.dumps([conversation.lead.id]))
                    for user in mentioned if user != author])
        return cls.item_json(note)

    @classmethod
    def _mentioned(cls, text):
        User = Pool().get('res.user')
        names = {(quoted or bare).strip().lower()
            for quoted, bare in MENTION.findall(text)}
        if not names:
            return []
        known = {u['id']: u for u in cls.teammates()}
        return User.browse([i for i, u in known.items()
                if u['login'].lower() in names or u['name'].lower() in names])

    @classmethod
    def log_call(cls, conversation, values):
        "A call made or taken: it counts as an answer to the lead."
        Message = Pool().get('crm.message')
        outcome = values.get('outcome')
        if outcome not in dict(CALL_OUTCOMES):
            raise InboxRefusal('bad_outcome',
                gettext('kraya_crm.msg_inbox_bad_call_outcome'))
        try:
            seconds = int(values.get('duration_seconds') or 0)
        except (TypeError, ValueError):
            seconds = -1
        if not 0 <= seconds <= 24 * 3600:
            raise InboxRefusal('bad_duration',
                gettext('kraya_crm.msg_inbox_bad_call_duration'))
        call, = Message.log_calls([LoggedCall(conversation.lead, outcome,
                    dt.timedelta(seconds=seconds),
                    cls._text(values, required=False))])
        return cls.item_json(call)

    @classmethod
    def assign(cls, conversation, user_id):
        "Give the conversation (its lead and open deal) to a teammate."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        if user_id is not None and user_id not in {
                u['id'] for u in cls.teammates()}:
            raise InboxRefusal('bad_user',
                gettext('kraya_crm.msg_inbox_bad_user'))
        lead = conversation.lead
        with without_check_access():
            Lead.write([lead], {'owner': user_id})
            deal = lead.open_deal
            if deal:
                Deal.write([deal], {'owner': user_id})
        return cls._conversation_json(conversation, utcnow())

    @classmethod
    def set_state(cls, conversation, action, until=None):
        Conversation = Pool().get('crm.conversation')
        with without_check_access():
            if action == 'done':
                Conversation.mark_done([conversation])
            elif action == 'reopen':
                Conversation.reopen([conversation])
            else:
                until = parse_iso(until) if until else None
                if not until or until <= utcnow():
                    raise InboxRefusal('bad_time',
                        gettext('kraya_crm.msg_inbox_snooze_future'))
                Conversation.snooze([conversation], until)
        return cls._conversation_json(
            Conversation(conversation.id), utcnow())

    @classmethod
    def media(cls, message_id):
        """(filename, data) of a message's file, when the user may see the
        message's conversation."""
        pool = Pool()
        Conversation = pool.get('crm.conversation')
        Message = pool.get('crm.message')
        found = Message.search([('id', '=', message_id)])
        media = found and getattr(found[0], 'media', None)
        if media:
            with check_access():
                media = media if Conversation.search([
                        ('lead', '=', found[0].lead.id)]) else None
        if not media:
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_inbox_not_found'))
        return media.name, media.data
