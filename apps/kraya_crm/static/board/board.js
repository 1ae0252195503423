// Kraya CRM pipeline board: deals by stage, the forecast by expected-close
// month, leads by status. Cards are dragged between columns with SortableJS
// (on a phone, moved through a menu); each move is written by the server
// through the same method as a desk save, and a refused one snaps back with
// the server's reason. Other people's moves arrive by long poll.
//
// Whatever a user typed is put in the page as text (h() makes text nodes of
// strings); nothing from the API goes through innerHTML.
'use strict';

(() => {
const body = document.body;
const DATABASE = body.dataset.database;
const DESK_URL = body.dataset.deskUrl;
const API = `/${encodeURIComponent(DATABASE)}/crm/board/api/`;
const FILTER_NAMES = ['q', 'owner', 'team', 'source', 'band', 'close_from',
    'close_to', 'value_min', 'value_max'];
const MODES = ['deals', 'forecast', 'leads'];
const COLOUR = /^#[0-9a-f]{3,8}$/i;
const PHONE = window.matchMedia('(max-width: 700px)');
// After a failed poll, ask again after this long.
const POLL_RETRY_MS = 5000;
// The cards a poll asks about (the server's MAX_SHOWN).
const MAX_SHOWN = 1000;

const {h, replace, ApiError} = window.KrayaPages;
const api = window.KrayaPages.apiClient(API, () => {
    state.ended = true;
    showBanner('Your session has ended: sign in to the desk again.');
});

const state = {
    mode: 'deals',
    start: null,
    filters: {},
    columns: new Map(),
    canMove: false,
    showMoney: true,
    options: null,
    cursor: null,
    poll: null,
    generation: 0,
    // While a card is dragged or saved, live changes wait here.
    busy: 0,
    waiting: [],
    sortables: [],
    ended: false,
};

// --- Feedback ----------------------------------------------------------

const banner = document.getElementById('banner');
const toast = document.getElementById('toast');
let toastTimer = null;

function showBanner(text) {
    replace(banner, text, ' ', h('a', {href: DESK_URL}, 'Open the desk'));
    banner.hidden = false;
}

function showToast(text, tone = 'info') {
    toast.textContent = text;
    toast.dataset.tone = tone;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; },
        tone === 'error' ? 8000 : 4000);
}

// --- The address: mode, first month and filters ------------------------

function readAddress() {
    const params = new URLSearchParams(window.location.search);
    const mode = params.get('mode');
    state.mode = MODES.includes(mode) ? mode : 'deals';
    state.start = params.get('start') || null;
    state.filters = {};
    for (const name of FILTER_NAMES) {
        const value = params.get(name);
        if (value) {
            state.filters[name] = value;
        }
    }
}

function viewParams(extra = {}) {
    const params = new URLSearchParams({mode: state.mode});
    if (state.mode === 'forecast' && state.start) {
        params.set('start', state.start);
    }
    for (const [name, value] of Object.entries(state.filters)) {
        params.set(name, value);
    }
    for (const [name, value] of Object.entries(extra)) {
        params.set(name, value);
    }
    return params;
}

function writeAddress() {
    const params = viewParams();
    if (state.mode === 'deals') {
        params.delete('mode');
    }
    const search = params.toString();
    window.history.replaceState(null, '',
        window.location.pathname + (search ? `?${search}` : ''));
}

// --- Text --------------------------------------------------------------

function daysText(days, what) {
    if (days === null || days === undefined) {
        return '';
    }
    if (days === 0) {
        return `${what} today`;
    }
    return `${days} ${days === 1 ? 'day' : 'days'} ${what === 'Entered'
        ? 'in stage' : 'old'}`;
}

function isOpen(card) {
    if (card.model === 'crm.lead') {
        return !['converted', 'unqualified'].includes(card.status);
    }
    return card.stage.kind === 'open';
}

// --- Drawing -----------------------------------------------------------

const board = document.getElementById('board');
const tabs = document.getElementById('column-tabs');

function cardElement(card) {
    const movable = state.canMove && columnDroppableFrom(card);
    const task = card.next_task;
    const element = h('li', {
        class: `card${movable ? '' : ' fixed'}`,
        dataset: {id: card.id, column: card.column},
        'aria-label': card.title,
        onclick: (event) => {
            if (event.target.closest('a, button') || element.dataset.dragged) {
                return;
            }
            window.location.href = card.desk_url;
        }},
        h('div', {class: 'card-top'},
            h('a', {class: 'card-title', href: card.desk_url}, card.title),
            card.band ? h('span', {class: `band band-${card.band}`},
                card.band) : null,
            movable ? h('button', {type: 'button', class: 'card-move',
                'aria-label': `Move ${card.title}`,
                onclick: () => openMoveMenu(card)}, 'Move') : null),
        card.customer && card.customer !== card.title
            ? h('p', {class: 'card-customer'}, card.customer) : null,
        card.value_text ? h('p', {class: 'card-value'},
            card.model === 'crm.lead' ? `Budget ${card.value_text}`
                : card.value_text) : null,
        h('p', {class: 'card-meta'},
            h('span', {class: 'owner'},
                card.owner ? card.owner.name : 'Unassigned'),
            card.model === 'crm.lead' && card.source
                ? h('span', {class: 'source'}, card.source) : null,
            state.mode === 'forecast' && card.expected_close_text
                ? h('span', {class: 'close'}, `Closes ${card.expected_close_text}`)
                : null,
            state.mode === 'forecast'
                ? h('span', {class: 'stage'}, card.stage.name)
                : h('span', {class: 'days'}, daysText(card.days_in_stage,
                    card.model === 'crm.lead' ? 'Created' : 'Entered'))),
        task ? h('p', {class: `card-task${task.overdue ? ' overdue' : ''}`},
            h('span', {class: 'task-name'}, `${task.kind_label}: ${task.name}`),
            task.due_text ? h('span', {class: 'due'}, task.due_text) : null,
            task.overdue ? h('span', {class: 'late'}, 'Overdue') : null)
            : isOpen(card) ? h('p', {class: 'card-task none'}, 'No next task')
                : null,
        card.badges && card.badges.length ? h('p', {class: 'badges'},
            card.badges.map((badge) => h('span', {
                class: `badge tone-${badge.tone}`,
                dataset: {kind: badge.kind}}, badge.text))) : null);
    element.kraya = card;
    return element;
}

function columnDroppableFrom(card) {
    const column = state.columns.get(card.column);
    // A lead that is converted stays so; the forecast's overdue and later
    // columns are no place to drop in, yet their cards move out.
    return !(state.mode === 'leads' && column && !column.droppable);
}

function summaryElements(column) {
    const money = state.showMoney && column.total_text;
    return [
        h('span', {class: 'column-count', 'aria-label': 'Cards'},
            String(column.count)),
        money ? h('span', {class: 'column-total'}, column.total_text) : null,
        money && column.weighted_text ? h('span', {class: 'column-weighted',
            title: 'Value × the stage’s probability'},
            `weighted ${column.weighted_text}`) : null,
        money && state.mode === 'leads' ? h('span',
            {class: 'column-weighted'}, 'in budgets') : null,
    ];
}

function columnElement(column) {
    const list = h('ol', {class: 'cards', dataset: {column: column.id},
        'aria-label': column.name});
    for (const card of column.cards) {
        list.append(cardElement(card));
    }
    const more = h('button', {type: 'button', class: 'more',
        hidden: !column.more, onclick: () => loadMore(column.id)},
        'Show more');
    const section = h('section', {class: `column kind-${column.kind}${
        column.droppable ? '' : ' no-drop'}`, dataset: {column: column.id},
        'aria-label': column.name},
        h('header', {class: 'column-head'},
            h('h2', {class: 'column-name'}, column.name,
                column.probability !== null && state.mode === 'deals'
                    ? h('span', {class: 'probability'},
                        `${column.probability}%`) : null),
            h('p', {class: 'column-summary'}, summaryElements(column))),
        // Under the list, which takes the drop, at its top.
        h('p', {class: 'column-empty', hidden: column.cards.length > 0},
            column.droppable && state.canMove ? 'Drop a card here'
                : 'Nothing here'),
        list,
        more);
    if (COLOUR.test(column.color || '')) {
        section.style.setProperty('--stage', column.color);
    }
    watchEnd(list);
    return section;
}

function render(data) {
    state.columns = new Map(data.columns.map((c) => [c.id, c]));
    state.canMove = data.can_move;
    state.showMoney = data.show_money;
    state.start = data.start;
    state.options = data.options;
    fillOptions(data.options);
    for (const sortable of state.sortables) {
        sortable.destroy();
    }
    state.sortables = [];
    endObserver.disconnect();
    tabObserver.disconnect();
    replace(board, data.columns.map(columnElement));
    replace(tabs, data.columns.map((column) => h('button', {type: 'button',
        class: 'column-tab', dataset: {column: column.id},
        onclick: () => columnSection(column.id).scrollIntoView(
            {behavior: 'smooth', inline: 'start', block: 'nearest'})},
        column.name, h('span', {class: 'tab-count'}, String(column.count)))));
    for (const section of board.querySelectorAll('.column')) {
        tabObserver.observe(section);
    }
    for (const list of board.querySelectorAll('.cards')) {
        state.sortables.push(makeSortable(list));
    }
    document.getElementById('months').hidden = state.mode !== 'forecast';
    if (state.mode === 'forecast') {
        const months = data.columns.filter((c) => c.kind === 'month');
        document.getElementById('months-label').textContent = months.length
            ? `${months[0].name} – ${months[months.length - 1].name}` : '';
    }
    board.dataset.mode = state.mode;
    board.setAttribute('aria-busy', 'false');
}

function updateSummaries(columns) {
    for (const column of columns) {
        const known = state.columns.get(column.id);
        if (!known) {
            continue;
        }
        Object.assign(known, column, {cards: known.cards});
        const section = columnSection(column.id);
        if (section) {
            replace(section.querySelector('.column-summary'),
                summaryElements(known));
        }
        const tab = tabs.querySelector(`[data-column="${CSS.escape(column.id)}"] .tab-count`);
        if (tab) {
            tab.textContent = String(column.count);
        }
    }
    refreshEmpty();
}

function refreshEmpty() {
    for (const section of board.querySelectorAll('.column')) {
        section.querySelector('.column-empty').hidden =
            section.querySelector('.card') !== null;
    }
}

function columnSection(id) {
    return board.querySelector(`.column[data-column="${CSS.escape(id)}"]`);
}

function cardElementById(id) {
    return board.querySelector(`.card[data-id="${CSS.escape(String(id))}"]`);
}

// --- The filters -------------------------------------------------------

const filtersForm = document.getElementById('filters');

function fillOptions(options) {
    const choices = {owner: options.owners, team: options.teams,
        source: options.sources, band: options.bands};
    for (const [name, items] of Object.entries(choices)) {
        const select = filtersForm.elements[name];
        for (const option of [...select.options]) {
            if (option.dataset.option) {
                option.remove();
            }
        }
        for (const item of items) {
            select.append(h('option', {value: String(item.id),
                dataset: {option: '1'}}, item.name));
        }
    }
    // A field the user may not read is no filter of theirs.
    const allowed = {source: options.sources.length > 0,
        value: state.showMoney};
    for (const element of filtersForm.querySelectorAll(
            '[data-needs], [data-modes]')) {
        element.hidden = (element.dataset.modes && !element.dataset.modes
            .split(' ').includes(state.mode))
            || (element.dataset.needs && !allowed[element.dataset.needs]);
    }
    for (const name of FILTER_NAMES) {
        filtersForm.elements[name].value = state.filters[name] || '';
    }
}

let filterTimer = null;

function readFilters() {
    const filters = {};
    for (const name of FILTER_NAMES) {
        const value = filtersForm.elements[name].value.trim();
        if (value) {
            filters[name] = value;
        }
    }
    return filters;
}

function filtersChanged() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
        const filters = readFilters();
        if (JSON.stringify(filters) !== JSON.stringify(state.filters)) {
            state.filters = filters;
            load();
        }
    }, 300);
}

filtersForm.addEventListener('input', filtersChanged);
filtersForm.addEventListener('change', filtersChanged);
filtersForm.addEventListener('submit', (event) => event.preventDefault());
filtersForm.addEventListener('reset', () => setTimeout(filtersChanged, 0));
document.getElementById('filters-toggle').addEventListener('click',
    (event) => {
        const open = filtersForm.classList.toggle('open');
        event.currentTarget.setAttribute('aria-expanded', String(open));
    });

for (const button of document.querySelectorAll('.mode')) {
    button.addEventListener('click', () => {
        if (state.mode === button.dataset.mode) {
            return;
        }
        state.mode = button.dataset.mode;
        load();
    });
}

function showMode() {
    for (const button of document.querySelectorAll('.mode')) {
        button.setAttribute('aria-selected',
            String(button.dataset.mode === state.mode));
    }
}

for (const button of document.querySelectorAll('.month-step')) {
    button.addEventListener('click', () => {
        const [year, month] = (state.start || '').split('-').map(Number);
        if (!year) {
            return;
        }
        const date = new Date(Date.UTC(year, month - 1 + Number(
            button.dataset.step), 1));
        state.start = date.toISOString().slice(0, 7);
        load();
    });
}
document.getElementById('months-now').addEventListener('click', () => {
    state.start = null;
    load();
});

// --- Loading -----------------------------------------------------------

async function load() {
    const generation = ++state.generation;
    stopPolling();
    showMode();
    writeAddress();
    board.setAttribute('aria-busy', 'true');
    let data;
    try {
        data = await api('GET', `board?${viewParams()}`);
    } catch (error) {
        if (generation === state.generation) {
            board.setAttribute('aria-busy', 'false');
            replace(board, h('p', {class: 'load-error'}, error.message));
        }
        return;
    }
    if (generation !== state.generation) {
        return;
    }
    banner.hidden = true;
    render(data);
    writeAddress();
    state.cursor = data.cursor;
    poll(generation);
}

async function loadMore(columnId) {
    const section = columnSection(columnId);
    const button = section && section.querySelector('.more');
    if (!button || button.hidden || button.disabled) {
        return;
    }
    button.disabled = true;
    const generation = state.generation;
    const offset = section.querySelectorAll('.card').length;
    try {
        const data = await api('GET', `columns/${encodeURIComponent(columnId)}`
            + `/cards?${viewParams({offset})}`);
        if (generation !== state.generation) {
            return;
        }
        const list = section.querySelector('.cards');
        for (const card of data.cards) {
            if (!cardElementById(card.id)) {
                list.append(cardElement(card));
            }
        }
        button.hidden = !data.more;
        state.columns.get(columnId).more = data.more;
        watchEnd(list);
    } catch (error) {
        showToast(error.message, 'error');
    } finally {
        button.disabled = false;
    }
}

// A column pages in as its last card scrolls into view (inside the
// column's own scrolling, which the observer takes into account).
const endObserver = new IntersectionObserver((entries) => {
    for (const entry of entries) {
        if (entry.isIntersecting) {
            endObserver.unobserve(entry.target);
            loadMore(entry.target.closest('.column').dataset.column);
        }
    }
});

function watchEnd(list) {
    const last = list.querySelector('.card:last-child');
    const column = state.columns.get(list.dataset.column);
    if (last && column && column.more) {
        endObserver.observe(last);
    }
}

// On a phone, the tab of the column in view is marked.
const tabObserver = new IntersectionObserver((entries) => {
    for (const entry of entries) {
        if (entry.isIntersecting) {
            for (const tab of tabs.querySelectorAll('.column-tab')) {
                tab.classList.toggle('current',
                    tab.dataset.column === entry.target.dataset.column);
            }
        }
    }
}, {root: board, threshold: 0.6});

// --- Order of the cards in a column ------------------------------------

function compareCards(a, b) {
    if (state.mode === 'forecast') {
        const x = a.expected_close || '9999', y = b.expected_close || '9999';
        return x < y ? -1 : x > y ? 1 : a.id - b.id;
    }
    if (state.mode === 'leads') {
        const x = a.score ?? -1, y = b.score ?? -1;
        return y - x || b.id - a.id;
    }
    return a.position - b.position || b.id - a.id;
}

// Put the card's element in its column where the order wants it; not when
// it sorts after the loaded cards of a column that has more to load.
function place(card, element) {
    const section = columnSection(card.column);
    if (!section) {
        element.remove();
        return false;
    }
    const list = section.querySelector('.cards');
    const others = [...list.querySelectorAll('.card')].filter(
        (other) => other !== element);
    const after = others.find((other) => compareCards(card, other.kraya) < 0);
    if (!after && state.columns.get(card.column).more) {
        element.remove();
        return false;
    }
    list.insertBefore(element, after || null);
    return true;
}

function showCard(card) {
    const old = cardElementById(card.id);
    const element = cardElement(card);
    if (old) {
        old.replaceWith(element);
    }
    place(card, element);
    return element;
}

// --- Moving ------------------------------------------------------------

function makeSortable(list) {
    const column = state.columns.get(list.dataset.column);
    return new window.Sortable(list, {
        group: {name: 'board', pull: true,
            put: () => column.droppable},
        sort: state.mode === 'deals',
        disabled: !state.canMove || PHONE.matches,
        draggable: '.card:not(.fixed)',
        filter: '.card-move',
        preventOnFilter: false,
        animation: 150,
        ghostClass: 'card-ghost',
        chosenClass: 'card-chosen',
        dragClass: 'card-drag',
        onStart: () => { state.busy += 1; },
        onEnd: (event) => {
            event.item.dataset.dragged = '1';
            setTimeout(() => { delete event.item.dataset.dragged; }, 0);
            dropped(event).finally(() => {
                state.busy -= 1;
                applyWaiting();
            });
        },
    });
}

PHONE.addEventListener('change', () => {
    for (const sortable of state.sortables) {
        sortable.option('disabled', !state.canMove || PHONE.matches);
    }
});

async function dropped(event) {
    const {item, from, to, oldIndex, newIndex} = event;
    if (from === to && oldIndex === newIndex) {
        return;
    }
    const snapBack = () => {
        item.remove();
        from.insertBefore(item, from.children[oldIndex] || null);
        refreshEmpty();
    };
    const neighbour = (element) => element && element.kraya
        ? element.kraya.id : null;
    refreshEmpty();
    await move(item.kraya, to.dataset.column, {
        above: neighbour(item.previousElementSibling),
        below: neighbour(item.nextElementSibling),
    }, item, snapBack);
}

// Write the move; ask for what the stage requires; on a refusal, put the
// card back and say why.
async function move(card, columnId, neighbours, element, snapBack) {
    const generation = state.generation;
    element.classList.add('saving');
    let fields = {};
    try {
        for (;;) {
            try {
                const request = moveRequest(card, columnId, neighbours,
                    fields);
                const answer = await api('POST', request.path,
                    request.payload);
                if (generation === state.generation) {
                    showCard(answer.card).classList.add('moved');
                    updateSummaries(answer.columns);
                }
                return true;
            } catch (error) {
                if (error.code !== 'fields_required') {
                    throw error;
                }
                const given = await askFields(card, columnId, error);
                if (!given) {
                    snapBack();
                    return false;
                }
                fields = given;
            }
        }
    } catch (error) {
        snapBack();
        element.classList.add('refused');
        setTimeout(() => element.classList.remove('refused'), 1500);
        showToast(error.message, 'error');
        if (error.code === 'changed') {
            load();
        }
        return false;
    } finally {
        element.classList.remove('saving');
    }
}

function moveRequest(card, columnId, neighbours, fields) {
    const common = {timestamp: card.timestamp, filters: state.filters,
        start: state.start};
    if (state.mode === 'leads') {
        return {path: `leads/${card.id}/move`,
            payload: {...common, status: columnId}};
    }
    if (state.mode === 'forecast') {
        return {path: `deals/${card.id}/reschedule`,
            payload: {...common, month: columnId === 'none' ? null : columnId}};
    }
    return {path: `deals/${card.id}/move`, payload: {...common,
        stage: Number(columnId), after: neighbours.above,
        before: neighbours.below, fields}};
}

// --- What a stage asks for ---------------------------------------------

const fieldsDialog = document.getElementById('fields-dialog');
const fieldsForm = document.getElementById('fields-form');

function fieldInput(field) {
    const common = {name: field.name, id: `field-${field.name}`,
        required: true};
    if (field.type === 'text') {
        return h('textarea', {...common, rows: 3, maxlength: 2000});
    }
    if (field.type === 'selection') {
        return h('select', common, h('option', {value: ''}, ''),
            (field.selection || []).filter(([value]) => value)
                .map(([value, label]) => h('option', {value}, label)));
    }
    if (field.type === 'date') {
        return h('input', {...common, type: 'date'});
    }
    if (['integer', 'numeric', 'float'].includes(field.type)) {
        return h('input', {...common, type: 'number',
            step: field.type === 'integer' ? '1' : 'any'});
    }
    return h('input', {...common, type: 'text', maxlength: 500});
}

function askFields(card, columnId, error) {
    const column = state.columns.get(columnId);
    replace(document.getElementById('fields-context'),
        `${card.title} → ${column ? column.name : ''}`);
    document.getElementById('fields-title').textContent =
        column && column.kind === 'lost' ? 'Why was it lost?'
            : `${column ? column.name : 'This stage'} needs a few details`;
    replace(document.getElementById('fields-inputs'),
        error.data.fields.map((field) => h('label', {class: 'field'},
            field.string, fieldInput(field),
            field.help ? h('small', {}, field.help) : null)));
    const problem = fieldsForm.querySelector('.form-error');
    problem.hidden = true;
    return new Promise((resolve) => {
        const done = (value) => {
            fieldsForm.onsubmit = null;
            fieldsDialog.onclose = null;
            fieldsDialog.close();
            resolve(value);
        };
        fieldsForm.onsubmit = (event) => {
            event.preventDefault();
            const values = {};
            for (const field of error.data.fields) {
                const value = fieldsForm.elements[field.name].value.trim();
                if (!value) {
                    problem.textContent = `${field.string} is needed.`;
                    problem.hidden = false;
                    fieldsForm.elements[field.name].focus();
                    return;
                }
                values[field.name] = value;
            }
            done(values);
        };
        fieldsDialog.querySelector('[data-close]').onclick = () => done(null);
        fieldsDialog.onclose = () => done(null);
        fieldsDialog.showModal();
        const first = fieldsForm.querySelector('textarea, input, select');
        if (first) {
            first.focus();
        }
    });
}

// --- The move menu (a phone's way, and the keyboard's) -----------------

const moveDialog = document.getElementById('move-dialog');

function openMoveMenu(card) {
    replace(document.getElementById('move-context'), card.title);
    const targets = [...state.columns.values()].filter(
        (column) => column.droppable && column.id !== card.column);
    replace(document.getElementById('move-targets'), targets.map((column) =>
        h('button', {type: 'button', class: 'move-target',
            dataset: {column: column.id},
            onclick: async () => {
                moveDialog.close();
                const element = cardElementById(card.id);
                if (!element) {
                    return;
                }
                const home = element.parentElement;
                const index = [...home.children].indexOf(element);
                const snapBack = () => {
                    element.remove();
                    home.insertBefore(element, home.children[index] || null);
                    refreshEmpty();
                };
                state.busy += 1;
                try {
                    await move(card, column.id, {above: null, below: null},
                        element, snapBack);
                } finally {
                    state.busy -= 1;
                    applyWaiting();
                }
            }},
            h('span', {class: 'move-swatch'}), column.name)));
    for (const button of moveDialog.querySelectorAll('.move-target')) {
        const column = state.columns.get(button.dataset.column);
        if (COLOUR.test(column.color || '')) {
            button.style.setProperty('--stage', column.color);
        }
    }
    moveDialog.querySelector('[data-close]').onclick = () => moveDialog.close();
    moveDialog.showModal();
}

// --- Live updates ------------------------------------------------------

function stopPolling() {
    if (state.poll) {
        state.poll.abort();
        state.poll = null;
    }
}

async function poll(generation) {
    while (generation === state.generation && !state.ended) {
        const controller = new AbortController();
        state.poll = controller;
        try {
            // The cards shown: the server tells when one of them leaves.
            const shown = [...board.querySelectorAll('.card')].slice(
                0, MAX_SHOWN).map((card) => card.dataset.id).join(',');
            const data = await api('GET', `events?${viewParams({
                cursor: state.cursor, shown})}`, null,
                {signal: controller.signal});
            if (generation !== state.generation) {
                return;
            }
            state.cursor = data.cursor;
            if (data.changes) {
                state.waiting.push(data.changes);
                applyWaiting();
            }
        } catch (error) {
            if (error.name === 'AbortError' || generation !== state.generation
                    || error.status === 401) {
                return;
            }
            await new Promise((resolve) => setTimeout(resolve,
                POLL_RETRY_MS));
        }
    }
}

function applyWaiting() {
    if (state.busy > 0) {
        return;
    }
    while (state.waiting.length) {
        const changes = state.waiting.shift();
        for (const id of changes.gone) {
            const element = cardElementById(id);
            if (element) {
                element.remove();
            }
        }
        for (const card of changes.cards) {
            const shown = cardElementById(card.id);
            if (shown && shown.kraya.timestamp === card.timestamp
                    && shown.kraya.column === card.column) {
                continue;
            }
            showCard(card);
        }
        updateSummaries(changes.columns);
    }
}

readAddress();
load();
})();
