// Kraya CRM team inbox: the conversation list, the thread as a chat and
// the composer, over the JSON API of docs/inbox-api.md.
//
// Whatever a lead or a teammate wrote is put in the page as text (the h()
// helper below makes text nodes of strings); nothing from the API ever goes
// through innerHTML.
'use strict';

(() => {
const body = document.body;
const DATABASE = body.dataset.database;
const ME = {id: Number(body.dataset.userId), name: body.dataset.userName,
    login: body.dataset.userLogin};
const DESK_URL = body.dataset.deskUrl;
const API = `/${encodeURIComponent(DATABASE)}/crm/inbox/api/`;
const TIME_ZONE = 'Asia/Kolkata';
const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 300;
const MAX_BUTTONS = 3;
const BUTTON_CHARS = 20;

const FILTERS = [
    {key: 'waiting', label: 'Waiting for us'},
    {key: 'mine', label: 'Mine'},
    {key: 'unassigned', label: 'Unassigned'},
    {key: 'team', label: 'Team'},
    {key: 'opted_out', label: 'Opted out'},
    {key: 'done', label: 'Done', more: true},
    {key: 'snoozed', label: 'Snoozed', more: true},
    {key: 'all', label: 'All', more: true},
];
const CALL_OUTCOMES = {connected: 'Connected', no_answer: 'No answer',
    busy: 'Busy', wrong_number: 'Wrong number', callback: 'Call back later'};
const STATUS_LABELS = {queued: 'Queued', sending: 'Sending', sent: 'Sent',
    delivered: 'Delivered', read: 'Read', failed: 'Failed',
    skipped: 'Not sent', cancelled: 'Cancelled', received: ''};

// --- DOM helpers -------------------------------------------------------

const {h, append, replace} = window.KrayaPages;

const SVG_NS = 'http://www.w3.org/2000/svg';
// Fixed icon paths (ours, not data), 16x16 viewBox.
const ICONS = {
    tick: 'M2.5 8.5l3 3 7-7',
    ticks: 'M1 8.5l3 3 7-7 M6.5 11.5l.5.5 7-7',
    clock: 'M8 1.8a6.2 6.2 0 1 0 0 12.4A6.2 6.2 0 0 0 8 1.8z M8 4.5V8l2.5 1.6',
    alert: 'M8 1.8a6.2 6.2 0 1 0 0 12.4A6.2 6.2 0 0 0 8 1.8z M8 4.6v4.2 M8 11v.4',
    back: 'M10 3L5 8l5 5',
    reply: 'M6 4L2 8l4 4 M2 8h8a4 4 0 0 1 4 4v1',
    attach: 'M10.5 4.5l-5 5a1.6 1.6 0 0 0 2.3 2.3l5.4-5.4a3 3 0 0 0-4.3-4.3L3.5 7.5a4.3 4.3 0 0 0 6.1 6.1l4-4',
    send: 'M2 8l12-5.5L10 14l-2-5z M8 9l6-6.5',
    file: 'M4 1.5h5l3.5 3.5v9.5h-8.5z M9 1.5V5h3.5',
    close: 'M4 4l8 8 M12 4l-8 8',
    phone: 'M4 1.8l2.2 2.8-1.3 1.6a8 8 0 0 0 4.9 4.9l1.6-1.3 2.8 2.2-1.2 1.9C8 14 2 8 2.1 3z',
};

function icon(name, label) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 16 16');
    svg.setAttribute('class', `icon icon-${name}`);
    if (label) {
        svg.setAttribute('role', 'img');
        svg.setAttribute('aria-label', label);
    } else {
        svg.setAttribute('aria-hidden', 'true');
    }
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', ICONS[name]);
    svg.append(path);
    return svg;
}

const $ = (selector, root = document) => root.querySelector(selector);

// Only our own kinds of links get into an href: a path on this site or
// http(s); a "javascript:" URL from the data would run on click.
function safeUrl(url) {
    if (typeof url !== 'string') {
        return null;
    }
    if (url.startsWith('/') && !url.startsWith('//')) {
        return url;
    }
    return /^https?:\/\//i.test(url) ? url : null;
}

function initials(name) {
    const words = String(name || '?').replace(/[^\p{L}\p{N} ]/gu, ' ')
        .trim().split(/\s+/).filter(Boolean);
    if (!words.length) {
        return '#';
    }
    return (words[0][0] + (words.length > 1 ? words.at(-1)[0] : ''))
        .toUpperCase();
}

// --- Times, in Asia/Kolkata ---------------------------------------------

const dayFormat = new Intl.DateTimeFormat('en-CA', {timeZone: TIME_ZONE,
    year: 'numeric', month: '2-digit', day: '2-digit'});
const clockFormat = new Intl.DateTimeFormat('en-GB', {timeZone: TIME_ZONE,
    hour: '2-digit', minute: '2-digit', hour12: false});
const shortDateFormat = new Intl.DateTimeFormat('en-GB', {
    timeZone: TIME_ZONE, day: 'numeric', month: 'short'});
const longDateFormat = new Intl.DateTimeFormat('en-GB', {
    timeZone: TIME_ZONE, day: 'numeric', month: 'short', year: 'numeric'});
const fullFormat = new Intl.DateTimeFormat('en-GB', {timeZone: TIME_ZONE,
    weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    hour: '2-digit', minute: '2-digit', hour12: false});

function dayKey(date) {
    return dayFormat.format(date);  // 2024-11-28, in India
}

function daysAgo(date) {
    const [y1, m1, d1] = dayKey(new Date()).split('-').map(Number);
    const [y2, m2, d2] = dayKey(date).split('-').map(Number);
    return Math.round((Date.UTC(y1, m1 - 1, d1) - Date.UTC(y2, m2 - 1, d2))
        / 86400000);
}

function sameYear(date) {
    return dayKey(date).slice(0, 4) === dayKey(new Date()).slice(0, 4);
}

// "10:42", "Yesterday", "28 Nov" (list rows).
function listTime(iso) {
    if (!iso) {
        return '';
    }
    const date = new Date(iso);
    const ago = daysAgo(date);
    if (ago <= 0) {
        return clockFormat.format(date);
    }
    if (ago === 1) {
        return 'Yesterday';
    }
    return (sameYear(date) ? shortDateFormat : longDateFormat).format(date);
}

// "Today", "Yesterday", "28 Nov 2024" (day separators of the thread).
function dayLabel(date) {
    const ago = daysAgo(date);
    if (ago <= 0) {
        return 'Today';
    }
    if (ago === 1) {
        return 'Yesterday';
    }
    return (sameYear(date) ? shortDateFormat : longDateFormat).format(date);
}

// "23 h left", "40 min left", "Window closed".
function windowLabel(window) {
    if (!window || !window.open || !window.closes_at) {
        return {open: false, text: 'Window closed'};
    }
    const seconds = (Date.parse(window.closes_at) - Date.now()) / 1000;
    if (seconds <= 0) {
        return {open: false, text: 'Window closed'};
    }
    if (seconds >= 3600) {
        return {open: true, text: `${Math.floor(seconds / 3600)} h left`,
            soon: seconds < 2 * 3600};
    }
    return {open: true, text: `${Math.max(1, Math.floor(seconds / 60))} min left`,
        soon: true};
}

function windowOpen(conversation) {
    return windowLabel(conversation.window).open;
}

function formatBytes(size) {
    if (size === null || size === undefined) {
        return '';
    }
    if (size < 1024) {
        return `${size} B`;
    }
    if (size < 1024 * 1024) {
        return `${Math.round(size / 1024)} KB`;
    }
    return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

function formatDuration(seconds) {
    if (!seconds) {
        return '';
    }
    const minutes = Math.floor(seconds / 60);
    const rest = seconds % 60;
    return minutes ? `${minutes} min${rest ? ` ${rest} s` : ''}` : `${rest} s`;
}

// A datetime-local value (India) as an ISO instant; India has no DST.
function indiaLocalToIso(value) {
    return new Date(`${value}:00+05:30`).toISOString();
}

function indiaLocalValue(date) {
    const india = new Date(date.getTime() + 5.5 * 3600000);
    return india.toISOString().slice(0, 16);
}

// --- API ---------------------------------------------------------------

function messageFor(status, data) {
    if (status === 401) {
        return 'Your session has ended: log in again in the desk.';
    }
    if (status === 403) {
        return 'The server refused this request.';
    }
    if (status === 404) {
        return 'This conversation is not (or no longer) yours to see.';
    }
    if (status === 429) {
        return 'Too many requests: wait a moment and try again.';
    }
    if (status >= 500) {
        return 'The server had a problem: try again in a moment.';
    }
    return data && data.error ? `Refused: ${data.error}` : `Error ${status}`;
}

const api = window.KrayaPages.apiClient(API, () => showBanner(
    'Your session has ended.', 'Log in again in the desk', DESK_URL),
    messageFor);

function query(parameters) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(parameters)) {
        if (value !== null && value !== undefined && value !== '') {
            search.set(name, value);
        }
    }
    const text = search.toString();
    return text ? `?${text}` : '';
}

// --- State -------------------------------------------------------------

const state = {
    filter: 'waiting',
    q: '',
    conversations: [],   // the list, in its order
    counts: {},
    cursor: null,
    openId: null,
    open: null,          // the open conversation
    items: [],           // its thread, oldest first
    hasMore: false,
    replyTo: null,       // {id, summary}
    channel: 'whatsapp',
    teammates: null,
    templates: new Map(),  // conversation id -> [template]
    drafts: new Map(),     // `${conversation id}:${channel}` -> draft
    listRequest: 0,
};

function draftFor(conversationId, channel) {
    const key = `${conversationId}:${channel}`;
    if (!state.drafts.has(key)) {
        state.drafts.set(key, {text: '', subject: '', buttons: [],
            showButtons: false, template: null, parameters: {}});
    }
    return state.drafts.get(key);
}

// --- Banner and live indicator -----------------------------------------

function showBanner(text, linkText, href) {
    const banner = $('#banner');
    replace(banner, text, ' ',
        linkText ? h('a', {href: safeUrl(href)}, linkText) : null);
    banner.hidden = false;
}

function setLive(status) {
    const live = $('#live');
    live.dataset.status = status;
    $('.live-text', live).textContent = {live: 'Live',
        connecting: 'Connecting…', offline: 'Reconnecting…'}[status];
}

// --- The list ----------------------------------------------------------

function sortKey(conversation) {
    return [Date.parse(conversation.last_inbound_at || '') || 0,
        Date.parse(conversation.last_message && conversation.last_message.at
            || '') || 0];
}

function compareConversations(a, b) {
    const [ia, ma] = sortKey(a);
    const [ib, mb] = sortKey(b);
    return ib - ia || mb - ma || b.id - a.id;
}

// Whether a conversation belongs under the current filter, as far as the
// page can tell (null: only the server knows, e.g. "team").
function matchesFilter(conversation) {
    if (state.q) {
        return null;
    }
    const open = conversation.state === 'open';
    switch (state.filter) {
    case 'waiting': return open && conversation.waiting;
    case 'mine': return open && !!conversation.owner
        && conversation.owner.id === ME.id;
    case 'unassigned': return open && !conversation.owner;
    case 'done': return conversation.state === 'done';
    case 'snoozed': return conversation.state === 'snoozed';
    case 'all': return true;
    default: return null;
    }
}

function renderTabs() {
    const tabs = $('#tabs');
    const current = FILTERS.find(filter => filter.key === state.filter);
    const tab = filter => h('button', {type: 'button', role: 'tab',
            class: 'tab', 'aria-selected': String(filter.key === state.filter),
            dataset: {filter: filter.key},
            onclick: () => selectFilter(filter.key)},
        h('span', {class: 'tab-label'}, filter.label),
        state.counts[filter.key] !== undefined
            ? h('span', {class: 'tab-count'}, countText(filter.key)) : null);
    const moreMenu = h('div', {class: 'menu', role: 'menu', hidden: true},
        FILTERS.filter(filter => filter.more).map(filter => h('button', {
                type: 'button', role: 'menuitem', class: 'menu-item',
                'aria-checked': String(filter.key === state.filter),
                dataset: {filter: filter.key},
                onclick: () => selectFilter(filter.key)},
            filter.label,
            state.counts[filter.key] !== undefined
                ? h('span', {class: 'menu-count'}, countText(filter.key))
                : null)));
    const moreButton = h('button', {type: 'button', class: 'tab more',
            'aria-haspopup': 'true', 'aria-expanded': 'false',
            'aria-selected': String(!!current.more),
            onclick: event => toggleMenu(moreMenu, event.currentTarget)},
        current.more ? current.label : 'More', ' ▾');
    replace(tabs, ...FILTERS.filter(filter => !filter.more).map(tab),
        h('div', {class: 'menu-anchor'}, moreButton, moreMenu));
}

// The server counts up to COUNT_LIMIT (100): past it, "99+".
function countText(key) {
    const count = state.counts[key];
    return count >= 100 ? '99+' : String(count);
}

function selectFilter(key) {
    closeMenus();
    if (state.filter !== key) {
        state.filter = key;
        state.conversations = [];
        renderTabs();
        loadList();
    }
}

async function loadList({keep = false} = {}) {
    const request = ++state.listRequest;
    const limit = keep ? Math.max(PAGE_SIZE, state.conversations.length)
        : PAGE_SIZE;
    try {
        const data = await api('GET', 'conversations' + query({
            filter: state.filter, q: state.q, offset: 0, limit}));
        if (request !== state.listRequest) {
            return;  // a newer filter or search has been asked for
        }
        state.conversations = data.conversations;
        state.counts = data.counts || {};
        if (state.cursor === null && data.cursor) {
            state.cursor = data.cursor;
            startEvents();
        }
        keepOpenInList();
        renderTabs();
        renderList();
    } catch (error) {
        if (request === state.listRequest) {
            showListMessage(error.message);
        }
    }
}

async function loadMore() {
    const button = $('#load-more');
    button.disabled = true;
    try {
        const data = await api('GET', 'conversations' + query({
            filter: state.filter, q: state.q,
            offset: state.conversations.length, limit: PAGE_SIZE}));
        const known = new Set(state.conversations.map(c => c.id));
        state.conversations.push(
            ...data.conversations.filter(c => !known.has(c.id)));
        state.counts = data.counts || state.counts;
        renderTabs();
        renderList();
    } catch (error) {
        showListMessage(error.message);
    } finally {
        button.disabled = false;
    }
}

// The open conversation stays in the list while it is open, even once it
// no longer matches the filter (answered: no longer waiting).
function keepOpenInList() {
    if (state.open && !state.conversations.some(c => c.id === state.open.id)
            && !state.q) {
        state.conversations.push(state.open);
        state.conversations.sort(compareConversations);
    }
}

function showListMessage(text) {
    const empty = $('#list-empty');
    empty.textContent = text;
    empty.hidden = false;
}

function renderList() {
    const list = $('#conversation-list');
    replace(list, ...state.conversations.map(conversationRow));
    const empty = $('#list-empty');
    empty.hidden = state.conversations.length > 0;
    if (!state.conversations.length) {
        empty.textContent = state.q
            ? `No conversation matches “${state.q}”.`
            : 'Nothing here. Well done!';
    }
    // Not every tab is counted: a full page may have more after it.
    const total = state.counts[state.filter];
    $('#load-more').hidden = total !== undefined && total < 100 && !state.q
        ? !(total > state.conversations.length)
        : state.conversations.length % PAGE_SIZE !== 0
            || !state.conversations.length;
}

function leadName(conversation) {
    const lead = conversation.lead || {};
    return lead.name || lead.company_name || lead.whatsapp || lead.phone
        || lead.email || 'Unknown';
}

function summaryText(conversation) {
    const last = conversation.last_message;
    if (!last) {
        return 'No messages yet';
    }
    const prefix = {outbound: 'You: ', internal: 'Note: '}[last.direction];
    return (prefix || '') + (last.summary || '');
}

function conversationRow(conversation) {
    const name = leadName(conversation);
    const window = windowLabel(conversation.window);
    const lead = conversation.lead || {};
    const meta = [];
    meta.push(h('span', {class: 'owner'}, conversation.owner
        ? conversation.owner.name : 'Unassigned'));
    if (conversation.band) {
        meta.push(h('span', {class: `chip band band-${conversation.band}`},
            conversation.band));
    }
    if (conversation.opted_out && conversation.opted_out.length) {
        meta.push(h('span', {class: 'chip opted-out',
            title: `Opted out of ${conversation.opted_out.join(', ')}`},
            'Opted out'));
    }
    if (lead.whatsapp && !conversation.not_on_whatsapp) {
        meta.push(h('span', {class: `window ${window.open ? 'open' : 'closed'}`
            + (window.soon ? ' soon' : '')}, window.text));
    }
    if (conversation.state === 'snoozed' && conversation.snoozed_until) {
        meta.push(h('span', {class: 'chip snoozed'},
            `Snoozed to ${listTime(conversation.snoozed_until)}`));
    }
    const last = conversation.last_message;
    return h('li', {class: 'conversation' + (conversation.unread ? ' unread' : '')
                + (conversation.id === state.openId ? ' selected' : ''),
            dataset: {id: conversation.id}},
        h('a', {class: 'conversation-link',
                href: `?c=${encodeURIComponent(conversation.id)}`,
                'aria-current': conversation.id === state.openId ? 'true' : null,
                onclick: event => {
                    if (event.metaKey || event.ctrlKey || event.shiftKey) {
                        return;
                    }
                    event.preventDefault();
                    openConversation(conversation.id);
                }},
            h('span', {class: 'avatar', 'aria-hidden': 'true'}, initials(name)),
            h('span', {class: 'conversation-main'},
                h('span', {class: 'conversation-top'},
                    h('span', {class: 'conversation-name'}, name),
                    h('time', {class: 'conversation-time',
                            datetime: last ? last.at : null,
                            title: last ? fullFormat.format(new Date(last.at))
                                : null},
                        last ? listTime(last.at) : '')),
                h('span', {class: 'conversation-middle'},
                    h('span', {class: 'conversation-summary'},
                        summaryText(conversation)),
                    conversation.unread ? h('span', {class: 'badge unread-badge',
                            'aria-label': `${conversation.unread} unread`},
                        conversation.unread > 99 ? '99+' : conversation.unread)
                        : null),
                h('span', {class: 'conversation-meta'}, meta))));
}

// Changed conversations from the events: update, insert or drop them
// here at once, then ask the server for the list (order, counts).
function mergeConversations(changed) {
    for (const conversation of changed) {
        const index = state.conversations.findIndex(
            c => c.id === conversation.id);
        const belongs = matchesFilter(conversation);
        const isOpen = conversation.id === state.openId;
        if (index >= 0) {
            if (belongs === false && !isOpen) {
                state.conversations.splice(index, 1);
            } else {
                state.conversations[index] = conversation;
            }
        } else if (belongs || isOpen) {
            state.conversations.push(conversation);
        }
        if (isOpen) {
            state.open = conversation;
        }
    }
    state.conversations.sort(compareConversations);
    renderList();
    scheduleListRefresh();
}

let listRefreshTimer = null;
function scheduleListRefresh() {
    clearTimeout(listRefreshTimer);
    listRefreshTimer = setTimeout(() => loadList({keep: true}), 400);
}

// --- Live updates (one long poll) ---------------------------------------

let eventsRunning = false;
async function startEvents() {
    if (eventsRunning) {
        return;
    }
    eventsRunning = true;
    let delay = 1000;
    setLive('connecting');
    for (;;) {
        try {
            const pending = api('GET', 'events' + query(
                {cursor: state.cursor}));
            setLive('live');
            const data = await pending;
            delay = 1000;
            if (data.cursor) {
                state.cursor = data.cursor;
            }
            const changed = data.conversations || [];
            if (changed.length) {
                mergeConversations(changed);
                if (changed.some(c => c.id === state.openId)) {
                    refreshThread();
                }
            }
        } catch (error) {
            setLive('offline');
            if (error.status === 401) {
                eventsRunning = false;
                return;
            }
            const wait = error.status === 429 && error.data
                && error.data.retry_after ? error.data.retry_after * 1000
                : delay;
            await new Promise(resolve => setTimeout(resolve,
                wait + Math.random() * 500));
            delay = Math.min(delay * 2, 30000);
        }
    }
}

// --- The thread --------------------------------------------------------

async function openConversation(id, {push = true} = {}) {
    id = Number(id);
    closeMenus();
    const switching = id !== state.openId;
    if (switching) {
        saveDraft();
        state.openId = id;
        state.items = [];
        state.replyTo = null;
        state.hasMore = false;
        replace($('#thread-items'));
        const known = state.conversations.find(c => c.id === id);
        if (known) {
            state.open = known;
            renderThreadHeader();
            chooseChannel(defaultChannel(known));
        }
    }
    $('#thread-placeholder').hidden = true;
    $('#thread').hidden = false;
    showThreadScreen(push);
    const url = new URL(location.href);
    url.searchParams.set('c', id);
    history.replaceState(history.state, '', url);
    for (const row of document.querySelectorAll('.conversation')) {
        row.classList.toggle('selected', Number(row.dataset.id) === id);
    }
    try {
        const data = await api('GET', `conversations/${id}`
            + query({limit: PAGE_SIZE}));
        if (state.openId !== id) {
            return;
        }
        state.open = data.conversation;
        state.items = data.items;
        state.hasMore = data.has_more;
        upsertConversation(data.conversation);
        renderThreadHeader();
        if (switching || !state.channel) {
            chooseChannel(defaultChannel(data.conversation));
        } else {
            renderComposer();
        }
        renderItems({toBottom: true});
        markRead();
    } catch (error) {
        if (state.openId === id) {
            replace($('#thread-items'),
                h('li', {class: 'system-line error'}, error.message));
        }
    }
}

async function markRead() {
    const id = state.openId;
    if (!id || document.visibilityState !== 'visible') {
        return;
    }
    try {
        const data = await api('POST', `conversations/${id}/read`);
        if (data && data.conversation) {
            upsertConversation(data.conversation);
        }
    } catch (error) {
        // Unread badges are cosmetic: the next open marks it again.
    }
}

function upsertConversation(conversation) {
    const index = state.conversations.findIndex(c => c.id === conversation.id);
    if (index >= 0) {
        state.conversations[index] = conversation;
    }
    if (conversation.id === state.openId) {
        state.open = conversation;
    }
    renderList();
}

let refreshing = null;
async function refreshThread() {
    if (refreshing) {
        refreshing.again = true;
        return;
    }
    const id = state.openId;
    refreshing = {again: false};
    try {
        const data = await api('GET', `conversations/${id}`
            + query({limit: PAGE_SIZE}));
        if (state.openId !== id) {
            return;
        }
        state.open = data.conversation;
        mergeItems(data.items);
        if (!document.querySelector('#thread-header .menu:not([hidden])')) {
            renderThreadHeader();
        }
        // Only when what may be sent changed (the window closed...): a
        // redraw under the user's fingers would break their typing.
        if (composerMode(data.conversation) !== $('#composer').dataset.mode) {
            renderComposer({keepFocus: true});
        }
        if (data.conversation.unread) {
            markRead();
        }
    } catch (error) {
        // The next event or open tries again.
    } finally {
        const again = refreshing.again;
        refreshing = null;
        if (again) {
            refreshThread();
        }
    }
}

function mergeItems(items) {
    const byId = new Map(state.items.map((item, index) => [item.id, index]));
    for (const item of items) {
        if (byId.has(item.id)) {
            state.items[byId.get(item.id)] = item;
        } else {
            state.items.push(item);
        }
    }
    state.items.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    renderItems();
}

async function loadEarlier() {
    const button = $('#load-earlier');
    const scroll = $('#thread-scroll');
    const id = state.openId;
    button.disabled = true;
    try {
        const data = await api('GET', `conversations/${id}` + query({
            before: state.items.length ? state.items[0].id : null,
            limit: PAGE_SIZE}));
        if (state.openId !== id) {
            return;
        }
        const known = new Set(state.items.map(item => item.id));
        const fromBottom = scroll.scrollHeight - scroll.scrollTop;
        state.items.unshift(...data.items.filter(item => !known.has(item.id)));
        state.hasMore = data.has_more;
        renderItems();
        scroll.scrollTop = scroll.scrollHeight - fromBottom;
    } catch (error) {
        button.textContent = error.message;
    } finally {
        button.disabled = false;
    }
}

function renderThreadHeader() {
    const conversation = state.open;
    if (!conversation) {
        return;
    }
    const lead = conversation.lead || {};
    const name = leadName(conversation);
    const number = lead.whatsapp || lead.phone;
    const window = windowLabel(conversation.window);
    const deal = conversation.deal;
    const details = [];
    if (number) {
        details.push(h('a', {class: 'tel', href: `tel:${number.replace(/[^+\d]/g, '')}`},
            icon('phone'), number));
    }
    details.push(h('span', {class: 'owner'}, conversation.owner
        ? `Owner: ${conversation.owner.name}` : 'Unassigned'));
    if (deal) {
        details.push(h('a', {class: 'deal', href: safeUrl(deal.desk_url),
            target: '_blank', rel: 'noopener'},
            `${deal.title || 'Deal'} · `,
            h('span', {class: 'stage'}, deal.stage || '')));
    }
    if (conversation.band) {
        details.push(h('span', {class: `chip band band-${conversation.band}`},
            conversation.band));
    }
    if (lead.whatsapp && !conversation.not_on_whatsapp) {
        details.push(h('span', {class: `window ${window.open ? 'open' : 'closed'}`
            + (window.soon ? ' soon' : '')}, window.text));
    }
    if (conversation.opted_out && conversation.opted_out.length) {
        details.push(h('span', {class: 'chip opted-out'},
            `Opted out: ${conversation.opted_out.join(', ')}`));
    }
    if (conversation.state === 'snoozed' && conversation.snoozed_until) {
        details.push(h('span', {class: 'chip snoozed'}, 'Snoozed until ',
            fullFormat.format(new Date(conversation.snoozed_until))));
    }
    if (conversation.state === 'done') {
        details.push(h('span', {class: 'chip done'}, 'Done'));
    }

    const assignMenu = h('div', {class: 'menu', role: 'menu', hidden: true});
    const snoozeMenu = h('div', {class: 'menu', role: 'menu', hidden: true},
        snoozeChoices().map(choice => h('button', {type: 'button',
                class: 'menu-item', role: 'menuitem',
                onclick: () => choice.until ? snooze(choice.until)
                    : openSnoozeDialog()},
            choice.label,
            choice.until ? h('span', {class: 'menu-count'},
                listTime(choice.until.toISOString()) === clockFormat.format(choice.until)
                    ? clockFormat.format(choice.until)
                    : `${shortDateFormat.format(choice.until)} ${clockFormat.format(choice.until)}`)
                : null)));
    const isDone = conversation.state === 'done';
    const deskUrl = safeUrl(lead.desk_url);
    replace($('#thread-header'),
        h('div', {class: 'thread-title-row'},
            h('button', {type: 'button', class: 'icon-button back',
                'aria-label': 'Back to the conversations',
                onclick: () => showListScreen()}, icon('back')),
            h('span', {class: 'avatar', 'aria-hidden': 'true'}, initials(name)),
            h('div', {class: 'thread-title'},
                h('h2', {class: 'thread-name'}, name,
                    lead.company_name && lead.name
                        ? h('span', {class: 'company'}, ` · ${lead.company_name}`)
                        : null),
                h('div', {class: 'thread-details'}, details))),
        h('div', {class: 'thread-actions', role: 'toolbar',
                'aria-label': 'Conversation actions'},
            h('div', {class: 'menu-anchor'},
                h('button', {type: 'button', class: 'button small',
                    'aria-haspopup': 'true', 'aria-expanded': 'false',
                    onclick: event => openAssignMenu(assignMenu,
                        event.currentTarget)}, 'Assign'),
                assignMenu),
            h('div', {class: 'menu-anchor'},
                h('button', {type: 'button', class: 'button small',
                    'aria-haspopup': 'true', 'aria-expanded': 'false',
                    onclick: event => toggleMenu(snoozeMenu,
                        event.currentTarget)}, 'Snooze'),
                snoozeMenu),
            h('button', {type: 'button', class: 'button small',
                onclick: () => conversationAction(isDone ? 'reopen' : 'done')},
                isDone ? 'Reopen' : 'Mark done'),
            h('button', {type: 'button', class: 'button small',
                onclick: openCallDialog}, 'Log a call'),
            deskUrl ? h('a', {class: 'button small link', href: deskUrl,
                target: '_blank', rel: 'noopener'}, 'Open in desk') : null));
}

function snoozeChoices() {
    const now = new Date();
    const inAnHour = new Date(now.getTime() + 3600000);
    // Tomorrow 10:00 and next Monday 10:00, in India.
    const [y, m, d] = dayKey(now).split('-').map(Number);
    const tomorrow = new Date(Date.UTC(y, m - 1, d + 1, 4, 30));
    const weekday = new Date(Date.UTC(y, m - 1, d)).getUTCDay();
    const toMonday = ((8 - weekday) % 7) || 7;
    const nextWeek = new Date(Date.UTC(y, m - 1, d + toMonday, 4, 30));
    return [
        {label: '1 hour', until: inAnHour},
        {label: 'Tomorrow 10:00', until: tomorrow},
        {label: 'Next week', until: nextWeek},
        {label: 'Custom…', until: null},
    ];
}

async function conversationAction(action, payload) {
    closeMenus();
    const id = state.openId;
    try {
        const data = await api('POST', `conversations/${id}/${action}`,
            payload || {});
        if (data && data.conversation) {
            upsertConversation(data.conversation);
            renderThreadHeader();
        }
        refreshThread();
        scheduleListRefresh();
        return true;
    } catch (error) {
        showComposerError(error.message);
        return false;
    }
}

function snooze(until) {
    return conversationAction('snooze', {until: until.toISOString()});
}

async function loadTeammates() {
    if (!state.teammates) {
        const data = await api('GET', 'teammates');
        state.teammates = data.users || [];
    }
    return state.teammates;
}

async function openAssignMenu(menu, button) {
    if (!menu.hidden) {
        closeMenus();
        return;
    }
    replace(menu, h('div', {class: 'menu-note'}, 'Loading…'));
    toggleMenu(menu, button);
    try {
        const users = await loadTeammates();
        const owner = state.open && state.open.owner;
        replace(menu,
            ...users.map(user => h('button', {type: 'button',
                    class: 'menu-item', role: 'menuitemradio',
                    'aria-checked': String(!!owner && owner.id === user.id),
                    onclick: () => conversationAction('assign', {user: user.id})},
                user.id === ME.id ? `${user.name} (me)` : user.name)),
            h('button', {type: 'button', class: 'menu-item', role: 'menuitem',
                onclick: () => conversationAction('assign', {user: null})},
                'Unassign'));
    } catch (error) {
        replace(menu, h('div', {class: 'menu-note error'},
            error.message));
    }
}

// Item rendering.

function renderItems({toBottom = false} = {}) {
    const scroll = $('#thread-scroll');
    const atBottom = toBottom
        || scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 80;
    const list = $('#thread-items');
    const children = [];
    let day = null;
    for (const item of state.items) {
        const date = new Date(item.at);
        const key = dayKey(date);
        if (key !== day) {
            day = key;
            children.push(h('li', {class: 'day-separator'},
                h('span', {}, dayLabel(date))));
        }
        children.push(renderItem(item));
    }
    if (!state.items.length) {
        children.push(h('li', {class: 'system-line'}, 'No messages yet.'));
    }
    replace(list, ...children);
    $('#load-earlier').hidden = !state.hasMore;
    if (atBottom) {
        scroll.scrollTop = scroll.scrollHeight;
    }
}

function renderItem(item) {
    if (item.type === 'note') {
        return renderNote(item);
    }
    if (item.type === 'call') {
        return renderCall(item);
    }
    if (item.type !== 'message') {
        return h('li', {class: `system-line ${item.type}`,
                dataset: {id: item.id}},
            h('span', {class: 'system-text'}, item.text || item.body || ''),
            h('time', {datetime: item.at, title: fullFormat.format(
                new Date(item.at))}, ` · ${clockFormat.format(new Date(item.at))}`),
            item.author ? ` · ${item.author.name}` : null);
    }
    return renderMessage(item);
}

function itemAuthor(item) {
    if (item.author) {
        return item.author.id === ME.id ? 'You' : item.author.name;
    }
    return item.automated ? 'Automated follow-up' : null;
}

function renderNote(item) {
    return h('li', {class: 'item note', dataset: {id: item.id}},
        h('div', {class: 'bubble note-bubble'},
            h('div', {class: 'note-label'}, 'Internal note — not sent'),
            h('div', {class: 'text'}, mentionText(item.body || '', item.mentions)),
            h('div', {class: 'meta'},
                h('span', {class: 'author'}, itemAuthor(item)),
                h('time', {datetime: item.at, title: fullFormat.format(
                    new Date(item.at))}, clockFormat.format(new Date(item.at))))));
}

// The text with its @mentions emphasised, as text nodes.
function mentionText(text, mentions) {
    if (!mentions || !mentions.length) {
        return text;
    }
    const parts = [];
    const pattern = /@("[^"]+"|[\w.\-]+)/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
        parts.push(text.slice(last, match.index));
        parts.push(h('span', {class: 'mention'}, match[0]));
        last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    return parts;
}

function renderCall(item) {
    const call = item.call || {};
    const outcome = call.outcome_label || CALL_OUTCOMES[call.outcome] || 'Call';
    const duration = formatDuration(call.duration_seconds);
    return h('li', {class: 'system-line call', dataset: {id: item.id}},
        h('span', {class: 'system-text'}, icon('phone'),
            ` Call · ${outcome}${duration ? ` · ${duration}` : ''}`),
        h('time', {datetime: item.at}, ` · ${clockFormat.format(new Date(item.at))}`),
        itemAuthor(item) ? ` · ${itemAuthor(item)}` : null,
        item.body ? h('div', {class: 'call-note'}, item.body) : null);
}

function statusMark(item) {
    const status = item.status;
    const label = STATUS_LABELS[status] || status;
    if (status === 'received' || !status) {
        return null;
    }
    if (status === 'failed' || status === 'skipped' || status === 'cancelled') {
        const reason = [item.error_code, item.error_message]
            .filter(Boolean).join(': ') || label;
        return h('button', {type: 'button', class: `status status-${status}`,
                title: reason, 'aria-label': `${label}: ${reason}`,
                onclick: event => {
                    event.stopPropagation();
                    event.currentTarget.closest('.item')
                        .classList.toggle('show-error');
                }},
            icon('alert'), h('span', {class: 'status-text'}, label));
    }
    const name = {queued: 'clock', sending: 'clock', sent: 'tick',
        delivered: 'ticks', read: 'ticks'}[status] || 'tick';
    return h('span', {class: `status status-${status}`, title: label,
        dataset: {status}}, icon(name, label));
}

function renderAttachment(item) {
    const attachment = item.attachment;
    if (!attachment) {
        return null;
    }
    const url = safeUrl(attachment.url);
    const isImage = (attachment.mime_type || '').startsWith('image/')
        || item.kind === 'image' || item.kind === 'sticker';
    if (attachment.state === 'pending') {
        return h('div', {class: 'attachment pending'}, icon('clock'),
            h('span', {}, `Downloading${attachment.name
                ? ` ${attachment.name}` : ''}…`));
    }
    if (attachment.state === 'failed') {
        return h('div', {class: 'attachment failed',
                title: attachment.error || ''}, icon('alert'),
            h('span', {}, 'Download failed'),
            attachment.error ? h('span', {class: 'attachment-error'},
                attachment.error) : null);
    }
    if (isImage && url) {
        return h('a', {class: 'attachment image', href: url, target: '_blank',
                rel: 'noopener'},
            h('img', {src: url, alt: attachment.name || 'Image',
                loading: 'lazy'}));
    }
    return h('a', {class: 'attachment file', href: url, download:
            attachment.name || true},
        h('span', {class: 'file-icon'}, icon('file'),
            h('span', {class: 'file-ext'}, fileExtension(attachment))),
        h('span', {class: 'file-text'},
            h('span', {class: 'file-name'}, attachment.name || 'Document'),
            h('span', {class: 'file-size'}, [formatBytes(attachment.size),
                (attachment.mime_type || '').split('/')[1]]
                .filter(Boolean).join(' · '))));
}

function fileExtension(attachment) {
    const match = /\.([a-z0-9]{1,5})$/i.exec(attachment.name || '');
    return match ? match[1].toUpperCase() : 'FILE';
}

const KIND_TEXT = {audio: '🎤 Voice message', video: '🎬 Video',
    location: '📍 Location', sticker: 'Sticker', reaction: 'Reaction',
    interactive: 'Button reply', button: 'Button reply'};

function renderMessage(item) {
    const ours = item.direction === 'outbound';
    const author = ours ? itemAuthor(item) : null;
    const bubble = h('div', {class: 'bubble'});
    if (item.reply_to) {
        bubble.append(h('div', {class: 'quote'},
            item.reply_to.summary || 'Message'));
    }
    if (item.template) {
        bubble.append(h('div', {class: 'template-label'},
            `Template · ${item.template.name} (${item.template.language})`));
    }
    if (item.channel === 'email' && item.subject) {
        bubble.append(h('div', {class: 'subject'}, item.subject));
    }
    const attachment = renderAttachment(item);
    if (attachment) {
        bubble.append(attachment);
    }
    const text = item.body || (!attachment ? KIND_TEXT[item.kind] : null);
    if (text) {
        bubble.append(h('div', {class: 'text'}, text));
    }
    if (item.buttons && item.buttons.length) {
        bubble.append(h('div', {class: 'reply-buttons'},
            item.buttons.map(label => h('span', {class: 'reply-button'}, label))));
    }
    const date = new Date(item.at);
    bubble.append(h('div', {class: 'meta'},
        item.channel === 'email' ? h('span', {class: 'channel'}, 'Email') : null,
        author ? h('span', {class: 'author'}, author) : null,
        h('time', {datetime: item.at, title: fullFormat.format(date)},
            clockFormat.format(date)),
        ours ? statusMark(item) : null));
    const error = (item.status === 'failed' || item.status === 'skipped')
        && (item.error_message || item.error_code)
        ? h('div', {class: 'error-reason'}, [item.error_code,
            item.error_message].filter(Boolean).join(': ')) : null;
    const canReply = item.channel === 'whatsapp'
        && String(item.id).startsWith('m');
    return h('li', {class: `item message ${ours ? 'ours' : 'theirs'}`
                + ` channel-${item.channel}` + (item.status === 'failed'
                    ? ' failed' : ''),
            dataset: {id: item.id, status: item.status || ''},
            onclick: event => {
                if (!event.target.closest('a, button')) {
                    event.currentTarget.classList.toggle('active');
                }
            }},
        bubble,
        canReply ? h('button', {type: 'button', class: 'reply-action',
                'aria-label': 'Reply', title: 'Reply',
                onclick: event => {
                    event.stopPropagation();
                    startReply(item);
                }},
            icon('reply'), h('span', {}, 'Reply')) : null,
        error);
}

function itemSummary(item) {
    if (item.body) {
        return item.body.length > 120 ? `${item.body.slice(0, 120)}…`
            : item.body;
    }
    if (item.attachment) {
        return `📎 ${item.attachment.name || item.kind}`;
    }
    return KIND_TEXT[item.kind] || item.kind || 'Message';
}

function startReply(item) {
    state.replyTo = {id: item.id, summary: itemSummary(item)};
    if (state.channel !== 'whatsapp') {
        chooseChannel('whatsapp');
    } else {
        renderComposer();
    }
    const input = $('#composer textarea');
    if (input) {
        input.focus();
    }
}

// --- Screens (phone) ---------------------------------------------------

const narrow = window.matchMedia('(max-width: 760px)');

function showThreadScreen(push) {
    if (!body.classList.contains('show-thread')) {
        body.classList.add('show-thread');
        if (push && narrow.matches) {
            history.pushState({thread: true}, '', location.href);
        }
    }
}

function showListScreen() {
    if (narrow.matches && history.state && history.state.thread) {
        history.back();  // popstate shows the list
        return;
    }
    body.classList.remove('show-thread');
}

window.addEventListener('popstate', () => {
    if (!(history.state && history.state.thread)) {
        body.classList.remove('show-thread');
    }
});

// --- Menus and dialogs -------------------------------------------------

function toggleMenu(menu, button) {
    const opening = menu.hidden;
    closeMenus();
    if (opening) {
        menu.hidden = false;
        button.setAttribute('aria-expanded', 'true');
        const first = menu.querySelector('button');
        if (first) {
            first.focus({preventScroll: true});
        }
    }
}

function closeMenus() {
    for (const menu of document.querySelectorAll('.menu:not([hidden])')) {
        menu.hidden = true;
    }
    for (const button of document.querySelectorAll('[aria-expanded="true"]')) {
        button.setAttribute('aria-expanded', 'false');
    }
}

document.addEventListener('click', event => {
    if (!event.target.closest('.menu-anchor')) {
        closeMenus();
    }
});
document.addEventListener('keydown', event => {
    if (event.key === 'Escape') {
        closeMenus();
        closeMention();
    }
});

for (const dialog of document.querySelectorAll('dialog')) {
    for (const close of dialog.querySelectorAll('[data-close]')) {
        close.addEventListener('click', () => dialog.close());
    }
}

function dialogError(dialog, text) {
    const error = $('.form-error', dialog);
    error.textContent = text || '';
    error.hidden = !text;
}

function openCallDialog() {
    closeMenus();
    const dialog = $('#call-dialog');
    dialogError(dialog, '');
    dialog.showModal();
}

$('#call-form').addEventListener('submit', async event => {
    event.preventDefault();
    const dialog = $('#call-dialog');
    const form = event.currentTarget;
    const data = new FormData(form);
    const submit = $('button[type="submit"]', form);
    submit.disabled = true;
    try {
        const answer = await api('POST', `conversations/${state.openId}/calls`, {
            outcome: data.get('outcome'),
            duration_seconds: Math.round(Number(data.get('minutes') || 0) * 60),
            note: data.get('note') || ''});
        if (answer && answer.item) {
            mergeItems([answer.item]);
        }
        form.reset();
        dialog.close();
        scheduleListRefresh();
    } catch (error) {
        dialogError(dialog, error.message);
    } finally {
        submit.disabled = false;
    }
});

function openSnoozeDialog() {
    closeMenus();
    const dialog = $('#snooze-dialog');
    const input = $('input[name="until"]', dialog);
    input.min = indiaLocalValue(new Date());
    input.value = indiaLocalValue(new Date(Date.now() + 3 * 3600000));
    dialogError(dialog, '');
    dialog.showModal();
}

$('#snooze-form').addEventListener('submit', async event => {
    event.preventDefault();
    const dialog = $('#snooze-dialog');
    const value = $('input[name="until"]', dialog).value;
    if (!value) {
        dialogError(dialog, 'Pick a date and time.');
        return;
    }
    const until = new Date(indiaLocalToIso(value));
    if (until <= new Date()) {
        dialogError(dialog, 'Pick a time in the future.');
        return;
    }
    if (await snooze(until)) {
        dialog.close();
    } else {
        dialogError(dialog, $('.composer-error')?.textContent);
    }
});

// --- The composer ------------------------------------------------------

function defaultChannel(conversation) {
    const lead = conversation.lead || {};
    const out = conversation.opted_out || [];
    if (lead.whatsapp && !conversation.not_on_whatsapp
            && !out.includes('whatsapp')) {
        return 'whatsapp';
    }
    if (lead.email && !out.includes('email')) {
        return 'email';
    }
    return 'note';
}

function chooseChannel(channel) {
    saveDraft();
    state.channel = channel;
    renderComposer();
}

// What the user typed lives in the draft of its conversation and channel,
// so that a re-render, an error or a switch loses nothing.
function saveDraft() {
    const composer = $('#composer');
    if (!state.openId || !composer.dataset.channel) {
        return;
    }
    const draft = draftFor(composer.dataset.conversation,
        composer.dataset.channel);
    const text = $('textarea[name="text"]', composer);
    if (text) {
        draft.text = text.value;
    }
    const subject = $('input[name="subject"]', composer);
    if (subject) {
        draft.subject = subject.value;
    }
    const buttons = composer.querySelectorAll('input[name="button"]');
    if (buttons.length) {
        draft.buttons = [...buttons].map(input => input.value);
    }
    for (const input of composer.querySelectorAll('input[name="parameter"]')) {
        draft.parameters[`${draft.template}:${input.dataset.index}`] =
            input.value;
    }
}

function renderComposer({keepFocus = false} = {}) {
    const composer = $('#composer');
    const conversation = state.open;
    if (!conversation) {
        return;
    }
    const focused = document.activeElement;
    const focusName = keepFocus && composer.contains(focused)
        ? focused.name : null;
    const selection = focusName && 'selectionStart' in focused
        ? [focused.selectionStart, focused.selectionEnd] : null;
    const error = $('.composer-error', composer);
    const errorText = error && !error.hidden ? error.textContent : '';
    saveDraft();
    const channel = state.channel;
    composer.dataset.channel = channel;
    composer.dataset.conversation = conversation.id;
    composer.dataset.mode = composerMode(conversation);
    const draft = draftFor(conversation.id, channel);
    const channels = [['whatsapp', 'WhatsApp'], ['email', 'Email'],
        ['note', 'Note']];
    const content = {whatsapp: whatsappComposer, email: emailComposer,
        note: noteComposer}[channel](conversation, draft);
    composer.className = `composer channel-${channel}`;
    replace(composer,
        h('div', {class: 'composer-error', role: 'alert', hidden: !errorText},
            errorText),
        h('div', {class: 'channel-switch', role: 'radiogroup',
                'aria-label': 'Channel'},
            channels.map(([key, label]) => h('button', {type: 'button',
                    role: 'radio', class: `channel-option ${key}`,
                    'aria-checked': String(key === channel),
                    onclick: () => {
                        if (state.channel !== key) {
                            hideComposerError();
                            chooseChannel(key);
                            const input = $('#composer textarea');
                            if (input) {
                                input.focus();
                            }
                        }
                    }},
                label))),
        content);
    for (const textarea of composer.querySelectorAll('textarea')) {
        autosize(textarea);
    }
    if (focusName) {
        const again = composer.querySelector(`[name="${focusName}"]`);
        if (again) {
            again.focus({preventScroll: true});
            if (selection && 'setSelectionRange' in again) {
                try {
                    again.setSelectionRange(...selection);
                } catch (error) {
                    // Not a text field.
                }
            }
        }
    }
}

function composerMode(conversation) {
    const lead = conversation.lead || {};
    return [state.channel, windowOpen(conversation), !!lead.whatsapp,
        !!lead.email, conversation.not_on_whatsapp,
        (conversation.opted_out || []).join()].join('|');
}

function composerNotice(text, kind = '') {
    return h('p', {class: `composer-notice ${kind}`}, text);
}

function textArea(draft, placeholder, {enterSends}) {
    return h('textarea', {name: 'text', rows: 1, placeholder,
            'aria-label': placeholder, enterkeyhint: enterSends ? 'send' : null,
            oninput: event => {
                autosize(event.currentTarget);
                draft.text = event.currentTarget.value;
            },
            onkeydown: event => {
                if (mentionKeydown(event)) {
                    return;
                }
                if (event.key === 'Enter' && !event.shiftKey
                        && !event.isComposing && (enterSends
                            || event.ctrlKey || event.metaKey)) {
                    event.preventDefault();
                    event.currentTarget.form.requestSubmit();
                }
            }},
        draft.text);
}

function autosize(textarea) {
    textarea.style.height = 'auto';
    textarea.style.height = `${Math.min(textarea.scrollHeight, 180)}px`;
}

function sendButton(label) {
    return h('button', {type: 'submit', class: 'send-button',
        'aria-label': label, title: label}, icon('send'),
        h('span', {class: 'send-label'}, label));
}

function whatsappComposer(conversation, draft) {
    const lead = conversation.lead || {};
    const out = conversation.opted_out || [];
    const name = leadName(conversation);
    if (!lead.whatsapp) {
        return composerNotice(`${name} has no WhatsApp number.`);
    }
    if (conversation.not_on_whatsapp) {
        return composerNotice(`${lead.whatsapp} is not on WhatsApp.`, 'warning');
    }
    if (out.includes('whatsapp')) {
        return composerNotice(`${name} opted out of WhatsApp: nothing more `
            + 'can be sent there.', 'warning');
    }
    if (!windowOpen(conversation)) {
        return templateComposer(conversation, draft);
    }
    const reply = state.replyTo ? h('div', {class: 'replying'},
        h('div', {class: 'quote'}, h('span', {class: 'quote-label'},
            'Replying to'), h('span', {class: 'quote-text'},
            state.replyTo.summary)),
        h('button', {type: 'button', class: 'icon-button',
            'aria-label': 'Cancel the reply', onclick: () => {
                state.replyTo = null;
                renderComposer();
            }}, icon('close'))) : null;
    const fileInput = h('input', {type: 'file', name: 'file', hidden: true,
        accept: 'image/jpeg,image/png,application/pdf,.pdf,.doc,.docx,.xls,'
            + '.xlsx,.ppt,.pptx,.txt',
        onchange: event => {
            const file = event.currentTarget.files[0];
            if (file) {
                sendFile(file);
            }
            event.currentTarget.value = '';
        }});
    const buttons = draft.showButtons ? h('div', {class: 'quick-buttons'},
        h('div', {class: 'quick-buttons-label'},
            'Reply buttons (up to 3, 20 characters each)'),
        [0, 1, 2].map(index => {
            const value = draft.buttons[index] || '';
            const counter = h('span', {class: 'counter'},
                `${value.length}/${BUTTON_CHARS}`);
            return h('label', {class: 'quick-button'},
                h('input', {name: 'button', maxlength: BUTTON_CHARS,
                    placeholder: `Button ${index + 1}`, value,
                    'aria-label': `Reply button ${index + 1}`,
                    oninput: event => {
                        draft.buttons[index] = event.currentTarget.value;
                        counter.textContent =
                            `${event.currentTarget.value.length}/${BUTTON_CHARS}`;
                    }}),
                counter);
        })) : null;
    return h('div', {class: 'composer-body'},
        reply, buttons,
        h('div', {class: 'composer-row'},
            fileInput,
            h('button', {type: 'button', class: 'icon-button attach',
                'aria-label': 'Attach an image or document',
                title: 'Attach an image or document',
                onclick: () => fileInput.click()}, icon('attach')),
            h('button', {type: 'button', class: 'icon-button buttons-toggle',
                'aria-pressed': String(draft.showButtons),
                'aria-label': 'Reply buttons', title: 'Reply buttons',
                onclick: () => {
                    saveDraft();
                    draft.showButtons = !draft.showButtons;
                    renderComposer();
                }}, h('span', {class: 'buttons-glyph'}, '☰')),
            textArea(draft, 'Type a WhatsApp message', {enterSends: true}),
            sendButton('Send')),
        h('div', {class: 'composer-hint'}, `Window open: ${
            windowLabel(conversation.window).text} · Enter sends, `
            + 'Shift+Enter new line'));
}

function templateComposer(conversation, draft) {
    const templates = state.templates.get(conversation.id);
    const notice = composerNotice(`The 24-hour window is closed: WhatsApp `
        + `only delivers an approved template until ${leadName(conversation)} `
        + 'writes again.', 'window-closed');
    if (!templates) {
        loadTemplates(conversation.id);
        return h('div', {class: 'composer-body'}, notice,
            composerNotice('Loading templates…'));
    }
    if (!templates.length) {
        return h('div', {class: 'composer-body'}, notice,
            composerNotice('No approved template yet: ask a manager to add one.'));
    }
    if (!templates.some(t => t.id === draft.template)) {
        draft.template = templates[0].id;
    }
    const template = templates.find(t => t.id === draft.template);
    const parameterValue = index => {
        const key = `${template.id}:${index}`;
        return key in draft.parameters ? draft.parameters[key]
            : (template.prefill && template.prefill[index]) || '';
    };
    const preview = h('div', {class: 'template-preview bubble'});
    const updatePreview = () => {
        const values = [...document.querySelectorAll(
            '#composer input[name="parameter"]')].map(input => input.value);
        replace(preview,
            template.header === 'DOCUMENT'
                ? h('div', {class: 'attachment file'}, icon('file'), ' Document')
                : null,
            h('div', {class: 'text'}, fillTemplate(template.body || '', values)));
    };
    const parameters = Array.from({length: template.parameters || 0},
        (_, index) => h('label', {class: 'parameter'},
            h('span', {class: 'parameter-name'}, `{{${index + 1}}}`),
            h('input', {name: 'parameter', dataset: {index},
                value: parameterValue(index), required: true,
                'aria-label': `Template value ${index + 1}`,
                oninput: event => {
                    draft.parameters[`${template.id}:${index}`] =
                        event.currentTarget.value;
                    updatePreview();
                }})));
    const picker = h('select', {name: 'template', 'aria-label': 'Template',
            onchange: event => {
                saveDraft();
                draft.template = Number(event.currentTarget.value);
                renderComposer();
            }},
        templates.map(t => h('option', {value: t.id,
                selected: t.id === template.id},
            `${t.name} · ${categoryLabel(t.category)} · ${t.language}`)));
    const body = h('div', {class: 'composer-body templates'}, notice,
        h('div', {class: 'template-picker'}, picker,
            h('span', {class: 'chip'}, categoryLabel(template.category)),
            h('span', {class: 'chip'}, template.language)),
        parameters.length ? h('div', {class: 'parameters'}, parameters) : null,
        h('div', {class: 'preview-label'}, 'Preview'),
        preview,
        h('div', {class: 'composer-row end'}, sendButton('Send template')));
    queueMicrotask(updatePreview);
    return body;
}

function categoryLabel(category) {
    const text = String(category || '').toLowerCase();
    return text ? text[0].toUpperCase() + text.slice(1) : 'Template';
}

function fillTemplate(body, values) {
    return body.replace(/\{\{(\d+)\}\}/g, (match, number) =>
        values[number - 1] || match);
}

async function loadTemplates(id) {
    try {
        const data = await api('GET', `conversations/${id}/templates`);
        state.templates.set(id, data.templates || []);
    } catch (error) {
        state.templates.set(id, []);
        showComposerError(error.message);
    }
    if (state.openId === id) {
        renderComposer({keepFocus: true});
    }
}

function emailComposer(conversation, draft) {
    const lead = conversation.lead || {};
    const name = leadName(conversation);
    if (!lead.email) {
        return composerNotice(`${name} has no email address.`);
    }
    if ((conversation.opted_out || []).includes('email')) {
        return composerNotice(`${name} opted out of email.`, 'warning');
    }
    return h('div', {class: 'composer-body'},
        h('div', {class: 'email-to'}, `To: ${lead.email}`),
        h('input', {name: 'subject', class: 'subject-input',
            placeholder: 'Subject (default: Re: the last subject)',
            'aria-label': 'Subject', value: draft.subject,
            oninput: event => {
                draft.subject = event.currentTarget.value;
            }}),
        h('div', {class: 'composer-row'},
            textArea(draft, 'Write an email', {enterSends: false}),
            sendButton('Send email')),
        h('div', {class: 'composer-hint'}, 'Ctrl+Enter sends'));
}

function noteComposer(conversation, draft) {
    return h('div', {class: 'composer-body'},
        h('div', {class: 'mention-list', id: 'mention-list', role: 'listbox',
            hidden: true}),
        h('div', {class: 'composer-row'},
            textArea(draft, 'Internal note — @ to mention a teammate',
                {enterSends: true}),
            sendButton('Add note')),
        h('div', {class: 'composer-hint'},
            'Only the team sees notes; @login notifies a teammate'));
}

// @mention autocomplete of the note composer.

const mention = {active: false, start: 0, index: 0, matches: []};

function mentionQuery(textarea) {
    const before = textarea.value.slice(0, textarea.selectionStart);
    const match = /(^|\s)@([\w.\-]*)$/.exec(before);
    return match ? {start: before.length - match[2].length - 1,
        text: match[2].toLowerCase()} : null;
}

async function updateMention(textarea) {
    const found = mentionQuery(textarea);
    if (!found) {
        closeMention();
        return;
    }
    let users;
    try {
        users = await loadTeammates();
    } catch (error) {
        closeMention();
        return;
    }
    const again = mentionQuery(textarea);
    if (!again) {
        return;
    }
    mention.matches = users.filter(user => user.login.toLowerCase()
            .startsWith(again.text)
            || user.name.toLowerCase().split(/\s+/)
                .some(word => word.startsWith(again.text)))
        .slice(0, 6);
    mention.start = again.start;
    mention.index = Math.min(mention.index, Math.max(0,
        mention.matches.length - 1));
    mention.active = mention.matches.length > 0;
    renderMention(textarea);
}

function renderMention(textarea) {
    const list = $('#mention-list');
    if (!list) {
        return;
    }
    list.hidden = !mention.active;
    replace(list, ...mention.matches.map((user, index) => h('button', {
            type: 'button', role: 'option', class: 'mention-option',
            'aria-selected': String(index === mention.index),
            onmousedown: event => event.preventDefault(),
            onclick: () => insertMention(textarea, user)},
        h('span', {class: 'avatar small', 'aria-hidden': 'true'},
            initials(user.name)),
        h('span', {class: 'mention-name'}, user.name),
        h('span', {class: 'mention-login'}, `@${user.login}`))));
}

function insertMention(textarea, user) {
    const end = textarea.selectionStart;
    const text = `@${user.login} `;
    textarea.value = textarea.value.slice(0, mention.start) + text
        + textarea.value.slice(end);
    const caret = mention.start + text.length;
    textarea.setSelectionRange(caret, caret);
    textarea.dispatchEvent(new Event('input'));
    closeMention();
    textarea.focus();
}

function closeMention() {
    mention.active = false;
    mention.index = 0;
    const list = $('#mention-list');
    if (list) {
        list.hidden = true;
    }
}

function mentionKeydown(event) {
    if (!mention.active) {
        return false;
    }
    const count = mention.matches.length;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
        mention.index = (mention.index + (event.key === 'ArrowDown' ? 1 : -1)
            + count) % count;
        renderMention(event.currentTarget);
    } else if (event.key === 'Enter' || event.key === 'Tab') {
        insertMention(event.currentTarget, mention.matches[mention.index]);
    } else if (event.key === 'Escape') {
        closeMention();
    } else {
        return false;
    }
    event.preventDefault();
    return true;
}

$('#composer').addEventListener('input', event => {
    if (state.channel === 'note' && event.target.name === 'text') {
        updateMention(event.target);
    }
});

// Sending.

function showComposerError(text) {
    const error = $('#composer .composer-error');
    if (error) {
        error.textContent = text;
        error.hidden = false;
    }
}

function hideComposerError() {
    const error = $('#composer .composer-error');
    if (error) {
        error.hidden = true;
        error.textContent = '';
    }
}

let sending = false;
$('#composer').addEventListener('submit', async event => {
    event.preventDefault();
    if (sending || !state.openId) {
        return;
    }
    saveDraft();
    const composer = event.currentTarget;
    const id = state.openId;
    const channel = state.channel;
    const draft = draftFor(id, channel);
    let path, payload;
    if (channel === 'note') {
        if (!draft.text.trim()) {
            return;
        }
        path = 'notes';
        payload = {text: draft.text};
    } else if (channel === 'email') {
        if (!draft.text.trim()) {
            return;
        }
        path = 'messages';
        payload = {channel: 'email', text: draft.text};
        if (draft.subject.trim()) {
            payload.subject = draft.subject.trim();
        }
    } else if (!windowOpen(state.open)) {
        const values = [...composer.querySelectorAll(
            'input[name="parameter"]')].map(input => input.value);
        if (values.some(value => !value.trim())) {
            showComposerError('Fill in every value of the template.');
            return;
        }
        path = 'messages';
        payload = {channel: 'whatsapp', template: {id: draft.template,
            parameters: values}};
    } else {
        if (!draft.text.trim()) {
            return;
        }
        path = 'messages';
        payload = {channel: 'whatsapp', text: draft.text};
        if (state.replyTo) {
            payload.reply_to = state.replyTo.id;
        }
        const buttons = draft.showButtons
            ? draft.buttons.map(b => (b || '').trim()).filter(Boolean) : [];
        if (buttons.length) {
            payload.buttons = buttons.slice(0, MAX_BUTTONS);
        }
    }
    await submitItem(id, path, payload, () => {
        draft.text = '';
        draft.subject = '';
        draft.buttons = [];
        draft.showButtons = false;
        state.replyTo = null;
    });
});

async function sendFile(file) {
    const id = state.openId;
    saveDraft();
    const draft = draftFor(id, 'whatsapp');
    const form = new FormData();
    form.append('file', file, file.name);
    if (draft.text.trim()) {
        form.append('caption', draft.text);
    }
    if (state.replyTo) {
        form.append('reply_to', state.replyTo.id);
    }
    const uploading = h('li', {class: 'item message ours uploading'},
        h('div', {class: 'bubble'}, h('div', {class: 'attachment pending'},
            icon('clock'), h('span', {}, `Sending ${file.name} (${
                formatBytes(file.size)})…`))));
    $('#thread-items').append(uploading);
    const scroll = $('#thread-scroll');
    scroll.scrollTop = scroll.scrollHeight;
    await submitItem(id, 'messages', form, () => {
        draft.text = '';
        state.replyTo = null;
    });
    uploading.remove();
}

async function submitItem(id, path, payload, clearDraft) {
    const composer = $('#composer');
    sending = true;
    composer.classList.add('sending');
    hideComposerError();
    for (const button of composer.querySelectorAll('button[type="submit"]')) {
        button.disabled = true;
    }
    try {
        const data = await api('POST', `conversations/${id}/${path}`, payload);
        clearDraft();
        // Sent: the redraw below must not save the sent text back as draft.
        delete composer.dataset.channel;
        if (state.openId === id) {
            if (data && data.item) {
                mergeItems([data.item]);
            }
            renderComposer({keepFocus: true});
            const scroll = $('#thread-scroll');
            scroll.scrollTop = scroll.scrollHeight;
            const input = $('#composer textarea');
            if (input && !narrow.matches) {
                input.focus();
            }
        }
        scheduleListRefresh();
    } catch (error) {
        if (state.openId === id) {
            renderComposer({keepFocus: true});
            showComposerError(error.message);
            if (error.code === 'window_closed') {
                refreshThread();
            }
        }
    } finally {
        sending = false;
        composer.classList.remove('sending');
        for (const button of composer.querySelectorAll('button[type="submit"]')) {
            button.disabled = false;
        }
    }
}

// --- Mentions of me ----------------------------------------------------

async function loadMentions() {
    try {
        const data = await api('GET', 'mentions');
        const items = data.items || [];
        const count = $('#mentions-count');
        count.textContent = items.length;
        count.hidden = !items.length;
        return items;
    } catch (error) {
        return [];
    }
}

$('#mentions-button').addEventListener('click', async event => {
    const button = event.currentTarget;
    let menu = $('#mentions-menu');
    if (menu && !menu.hidden) {
        closeMenus();
        return;
    }
    if (!menu) {
        menu = h('div', {class: 'menu mentions-menu', id: 'mentions-menu',
            role: 'menu', hidden: true});
        const anchor = h('div', {class: 'menu-anchor'});
        button.replaceWith(anchor);
        anchor.append(button, menu);
    }
    replace(menu, h('div', {class: 'menu-note'}, 'Loading…'));
    toggleMenu(menu, button);
    const items = await loadMentions();
    replace(menu, ...(items.length ? items.slice(0, 20).map(item =>
        h('button', {type: 'button', class: 'menu-item mention-item',
                role: 'menuitem', onclick: () => {
                    closeMenus();
                    openConversation(item.conversation);
                }},
            h('span', {class: 'mention-by'}, `${item.author
                ? item.author.name : 'Someone'} · ${listTime(item.at)}`),
            h('span', {class: 'mention-body'}, item.body || '')))
        : [h('div', {class: 'menu-note'}, 'No note mentions you yet.')]));
});

// --- Phone keyboard ----------------------------------------------------

// Keep the app (and its composer) inside what the on-screen keyboard
// leaves visible, where the browser does not resize the layout itself.
if (window.visualViewport) {
    const fit = () => {
        const scroll = $('#thread-scroll');
        const atBottom = scroll.scrollHeight - scroll.scrollTop
            - scroll.clientHeight < 80;
        document.documentElement.style.setProperty('--viewport-height',
            `${window.visualViewport.height}px`);
        if (atBottom) {
            scroll.scrollTop = scroll.scrollHeight;
        }
    };
    window.visualViewport.addEventListener('resize', fit);
    fit();
}

// --- Start -------------------------------------------------------------

let searchTimer = null;
$('#search').addEventListener('input', event => {
    clearTimeout(searchTimer);
    const value = event.currentTarget.value.trim();
    searchTimer = setTimeout(() => {
        if (value !== state.q) {
            state.q = value;
            loadList();
        }
    }, SEARCH_DELAY_MS);
});
$('#load-more').addEventListener('click', loadMore);
$('#load-earlier').addEventListener('click', loadEarlier);
document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.open
            && state.open.unread) {
        markRead();
    }
});
// Window countdowns ("23 h left") move on while the page stays open.
setInterval(() => {
    if (document.querySelector('.menu:not([hidden])')) {
        return;  // not under an open menu
    }
    renderList();
    if (state.open) {
        renderThreadHeader();
        if (composerMode(state.open) !== $('#composer').dataset.mode) {
            renderComposer({keepFocus: true});
        }
    }
}, 60000);

renderTabs();
const opening = new URLSearchParams(location.search).get('c');
loadList().then(() => {
    if (opening) {
        openConversation(opening, {push: false});
    }
});
loadMentions();
})();
