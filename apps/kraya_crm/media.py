"""Files on WhatsApp: what may be sent (Meta's types and sizes, checked
before a message is queued, so a salesperson hears at once why a file will
not go), the upload of ours before the send, and the download of those a
lead sends us.

A lead's file reaches us as a media id that expires, so the worker fetches
it right after the webhook is written: the id's url, then the bytes, kept
as an attachment of the lead. A failed fetch is shown on the message and
tried again with a growing wait (a queued task, and the cron for what a
dead worker left), a bounded number of times within a week."""
import datetime as dt
import logging
import mimetypes

from sql import Null

from trytond.i18n import gettext
from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .exceptions import MediaError
from .http import setting
from .message import utcnow

logger = logging.getLogger(__name__)
QUEUE_NAME = 'crm_media'
KB, MB = 1024, 1024 * 1024
# Meta's supported media (Cloud API reference, "Supported media types"):
# kind -> ({MIME type: what a salesperson calls it}, largest bytes).
LIMITS = {
    'image': ({'image/jpeg': 'JPEG', 'image/png': 'PNG'}, 5 * MB),
    'document': ({
            'application/pdf': 'PDF',
            'application/msword': 'Word',
            'application/vnd.openxmlformats-officedocument'
            '.wordprocessingml.document': 'Word',
            'application/vnd.ms-excel': 'Excel',
            'application/vnd.openxmlformats-officedocument'
            '.spreadsheetml.sheet': 'Excel',
            'application/vnd.ms-powerpoint': 'PowerPoint',
            'application/vnd.openxmlformats-officedocument'
            '.presentationml.presentation': 'PowerPoint',
            'text/plain': 'text',
            }, 100 * MB),
    'audio': ({'audio/aac': 'AAC', 'audio/amr': 'AMR', 'audio/mpeg': 'MP3',
            'audio/mp4': 'MP4 audio', 'audio/ogg': 'OGG Opus'}, 16 * MB),
    'video': ({'video/mp4': 'MP4', 'video/3gpp': '3GPP'}, 16 * MB),
    }
# Stickers only come in: WebP, 100 KB still or 500 KB animated.
STICKER_LIMIT = 500 * KB
KIND_NAMES = {'image': "images", 'document': "documents", 'audio': "audio",
    'video': "videos"}
# A name for a file that came without one.
EXTENSIONS = {'image/jpeg': 'jpg', 'image/png': 'png', 'image/webp': 'webp',
    'application/pdf': 'pdf', 'audio/ogg': 'ogg', 'audio/mpeg': 'mp3',
    'audio/aac': 'aac', 'audio/amr': 'amr', 'audio/mp4': 'm4a',
    'video/mp4': 'mp4', 'video/3gpp': '3gp', 'text/plain': 'txt'}
MEDIA_STATES = [
    (None, ""),
    ('pending', "Downloading"),
    ('fetched', "Downloaded"),
    ('failed', "Download failed"),
    ]
# Meta keeps a lead's media for about a week; later tries are pointless.
FETCH_FOR = dt.timedelta(days=7)


def base_type(mime_type):
    "image/jpeg of 'image/jpeg; charset=...', lower-cased."
    return (mime_type or '').split(';')[0].strip().lower()


def kind_of(mime_type):
    "The kind WhatsApp sends a MIME type as, or None."
    mime_type = base_type(mime_type)
    for kind, (types, _) in LIMITS.items():
        if mime_type in types:
            return kind
    return None


def readable_size(size):
    if size >= MB:
        return f"{round(size / MB)} MB"
    return f"{max(1, round(size / KB))} KB"


def check_upload(filename, mime_type, size):
    """The kind ('image', 'document', 'audio', 'video') WhatsApp sends the
    file as; MediaError naming the limit when it takes no such file."""
    mime_type = base_type(mime_type) or base_type(
        mimetypes.guess_type(filename or '')[0])
    kind = kind_of(mime_type)
    if kind is None:
        accepted = '; '.join(
            f"{k}: {', '.join(dict.fromkeys(types.values()))}"
            for k, (types, _) in LIMITS.items())
        raise MediaError(gettext('kraya_crm.msg_media_type_refused',
                filename=filename, accepted=accepted))
    limit = LIMITS[kind][1]
    if size > limit:
        raise MediaError(gettext('kraya_crm.msg_media_too_big',
                filename=filename, size=readable_size(size),
                kind=KIND_NAMES[kind], limit=readable_size(limit)))
    return kind


def file_name(kind, wamid, mime_type, filename=None):
    "The lead's file name, or <kind>-<wamid>.<ext>."
    if filename:
        return filename
    extension = EXTENSIONS.get(base_type(mime_type)) or (
        mimetypes.guess_extension(base_type(mime_type)) or '.bin'
        ).lstrip('.')
    return f'{kind}-{wamid}.{extension}'


def retry_wait(attempts):
    "How long a failed fetch waits: doubling from media_retry_seconds."
    first = setting('media_retry_seconds', 30)
    return dt.timedelta(seconds=min(6 * 3600, first * 2 ** max(
                attempts - 1, 0)))


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'
    media = fields.Many2One('ir.attachment', "File", ondelete='SET NULL',
        readonly=True,
        help="The file sent (its message is the caption), or the one the "
        "lead sent, once downloaded.")
    media_id = fields.Char("Media ID", readonly=True,
        help="WhatsApp's id of the file.")
    media_mime_type = fields.Char("File Type", readonly=True)
    media_filename = fields.Char("File Name", readonly=True)
    media_state = fields.Selection(MEDIA_STATES, "Download", readonly=True)
    media_error = fields.Char("Download Error", readonly=True)
    media_attempts = fields.Integer("Download Attempts", readonly=True)
    media_retry_at = fields.Timestamp("Download Again At", readonly=True,
        help="Empty once there is nothing more to try.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.media_retry_at, Index.Range()),
                where=t.media_retry_at != Null))

    @classmethod
    def default_media_attempts(cls):
        return 0

    @classmethod
    def queue_media_fetch(cls, messages, after=None):
        "Have the worker download the files of these inbound messages."
        if not messages:
            return
        context = {'queue_name': QUEUE_NAME}
        if after:
            context['queue_scheduled_at'] = after
        with Transaction().set_context(**context):
            # A task a file: each downloads, writes and commits on its
            # own, and one that fails keeps the others.
            for message in messages:
                cls.__queue__.fetch_media([message])

    @classmethod
    def fetch_media(cls, messages):
        "Download the pending files of these messages (the worker's task)."
        # A retry's task and the sweep's never fetch one file twice.
        cls.lock(messages)
        for message in cls.browse([m.id for m in messages]):
            if message.media_state not in {'pending', 'failed'} \
                    or not message.media_id:
                continue
            values, retry_in = message._fetched_media()
            cls.write([message], values)
            if retry_in:
                cls.queue_media_fetch([message], after=retry_in)

    def _fetched_media(self):
        """Download the file: (values to write, wait before trying again or
        None)."""
        from .outbox import whatsapp_client
        from .whatsapp_client import GraphError
        Attachment = Pool().get('ir.attachment')
        attempts = (self.media_attempts or 0) + 1
        try:
            downloaded = whatsapp_client().download_media(self.media_id)
        except GraphError as error:
            logger.info("media %s of message %s: %s", self.media_id,
                self.id, error)
            now = utcnow()
            retry = error.retry and attempts < setting(
                'media_max_attempts', 6) and now - self.at < FETCH_FOR
            wait = retry_wait(attempts) if retry else None
            return {'media_state': 'failed', 'media_attempts': attempts,
                'media_error': gettext('kraya_crm.msg_media_fetch_failed',
                    error=error.message, code=error.code),
                'media_retry_at': now + wait if wait else None}, wait
        mime_type = self.media_mime_type or downloaded.mime_type
        attachment, = Attachment.create([{
                    'name': file_name(self.kind, self.provider_id, mime_type,
                        self.media_filename),
                    'resource': str(self.lead),
                    'type': 'data',
                    'data': downloaded.data,
                    'description': self.body,
                    }])
        return {'media': attachment.id, 'media_state': 'fetched',
            'media_attempts': attempts, 'media_error': None,
            'media_mime_type': mime_type, 'media_retry_at': None}, None

    @classmethod
    def fetch_due_media(cls):
        """The cron's sweep: queue the fetches whose retry time has come,
        those a worker that died left behind included."""
        now = utcnow()
        messages = cls.search([
                ('media_retry_at', '<=', now),
                ('media_state', 'in', ['pending', 'failed']),
                ('at', '>', now - FETCH_FOR),
                ])
        if messages:
            # Pushed on, so that the next sweep does not queue them again.
            cls.write(messages, {
                    'media_retry_at': now + retry_wait(1)})
            cls.queue_media_fetch(messages)
        return len(messages)

    def upload_media(self, client):
        """Upload our file for a send: its media id, kept on the message
        (an id lasts 30 days, a retried send needs no new upload)."""
        if self.media_id:
            return self.media_id
        attachment = self.media
        media_id = client.upload_media(attachment.data,
            self.media_mime_type or base_type(
                mimetypes.guess_type(attachment.name)[0])
            or 'application/octet-stream', attachment.name)
        self.media_id = media_id
        return media_id


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.message|fetch_due_media', "Download WhatsApp media"))
