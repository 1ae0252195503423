// Kraya CRM "My day": today's and overdue tasks and the hot leads waiting,
// with click-to-call, WhatsApp and a one-tap outcome (it logs the call,
// the lead's first response, and finishes the task).
//
// Whatever a lead or a teammate wrote is put in the page as text (h()
// makes text nodes of strings); nothing from the API goes through
// innerHTML.
'use strict';

(() => {
const body = document.body;
const DATABASE = body.dataset.database;
const DESK_URL = body.dataset.deskUrl;
const API = `/${encodeURIComponent(DATABASE)}/crm/my-day/api/`;
// India has no daylight saving: +05:30 all year.
const IST_OFFSET_MINUTES = 330;

const {h} = window.KrayaPages;
const api = window.KrayaPages.apiClient(API, () => showBanner(
    'Your session has ended: sign in to the desk again.'));

// --- Feedback ----------------------------------------------------------

const banner = document.getElementById('banner');
const toast = document.getElementById('toast');
let toastTimer = null;

function showBanner(text) {
    banner.replaceChildren(text, ' ', h('a', {href: DESK_URL}, 'Open the desk'));
    banner.hidden = false;
}

function showToast(text) {
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, 4000);
}

// --- Drawing -----------------------------------------------------------

const state = {kinds: [], callOutcomes: []};

function minutesText(minutes) {
    if (minutes === null || minutes === undefined) {
        return '';
    }
    if (minutes < 60) {
        return `${minutes} min`;
    }
    if (minutes < 48 * 60) {
        return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
    }
    return `${Math.floor(minutes / 1440)} days`;
}

function contactLinks(lead) {
    const links = [];
    if (lead.tel_url) {
        links.push(h('a', {class: 'action call', href: lead.tel_url,
            'aria-label': `Call ${lead.name}`}, 'Call'));
    }
    if (lead.wa_url) {
        links.push(h('a', {class: 'action whatsapp', href: lead.wa_url,
            target: '_blank', rel: 'noopener noreferrer',
            'aria-label': `WhatsApp ${lead.name}`}, 'WhatsApp'));
    }
    if (lead.inbox_url) {
        links.push(h('a', {class: 'action', href: lead.inbox_url}, 'Inbox'));
    }
    links.push(h('a', {class: 'action', href: lead.desk_url}, 'Lead'));
    return h('div', {class: 'actions'}, links);
}

// The first outcomes are one tap away; the others behind "More".
const FIRST_OUTCOMES = 3;

function outcomeButtons(outcomes, onPick, label) {
    const group = h('div', {class: 'outcomes', role: 'group',
        'aria-label': label});
    outcomes.forEach((outcome, index) => group.append(h('button', {
        type: 'button', class: 'outcome', hidden: index >= FIRST_OUTCOMES,
        dataset: {outcome: outcome.value},
        onclick: (event) => onPick(outcome, event.currentTarget)},
        outcome.label)));
    if (outcomes.length > FIRST_OUTCOMES) {
        group.append(h('button', {type: 'button', class: 'outcome more',
            'aria-expanded': 'false', onclick: (event) => {
                group.querySelectorAll('.outcome[hidden]').forEach((b) => {
                    b.hidden = false;
                });
                event.currentTarget.remove();
            }}, 'More…'));
    }
    return group;
}

function leadLine(lead) {
    const parts = [lead.company_name, lead.city].filter(Boolean);
    return h('p', {class: 'card-lead'},
        h('strong', {}, lead.name),
        parts.length ? ` · ${parts.join(' · ')}` : '',
        lead.phone ? h('span', {class: 'number'}, lead.phone) : null);
}

function taskCard(task) {
    const item = h('li', {class: `card task${task.overdue ? ' overdue' : ''}`,
        dataset: {taskId: task.id, kind: task.kind}},
        h('div', {class: 'card-head'},
            h('span', {class: `kind kind-${task.kind}`}, task.kind_label),
            h('span', {class: 'due'},
                task.overdue ? h('span', {class: 'late'}, 'Overdue') : null,
                task.due_text)),
        h('p', {class: 'card-title'}, task.name),
        task.lead ? leadLine(task.lead) : null,
        task.deal ? h('p', {class: 'card-deal'}, 'Deal: ',
            h('a', {href: task.deal.desk_url}, task.deal.title)) : null,
        task.previous ? h('p', {class: 'card-previous'},
            `After: ${task.previous.name}`) : null,
        task.notes ? h('p', {class: 'card-notes'}, task.notes) : null,
        task.lead ? contactLinks(task.lead)
            : h('div', {class: 'actions'},
                h('a', {class: 'action', href: task.desk_url}, 'Open task')),
        outcomeButtons(task.outcomes,
            (outcome, button) => logTaskOutcome(task, outcome, item, button),
            `Outcome of ${task.name}`));
    return item;
}

function leadCard(lead) {
    const item = h('li', {class: 'card hot', dataset: {leadId: lead.id}},
        h('div', {class: 'card-head'},
            h('span', {class: 'kind kind-hot'},
                lead.score === null ? 'Hot' : `Hot · ${lead.score}`),
            h('span', {class: 'due'}, lead.waiting_minutes !== null
                ? `Waiting ${minutesText(lead.waiting_minutes)}` : '')),
        leadLine(lead),
        contactLinks(lead),
        outcomeButtons(state.callOutcomes,
            (outcome, button) => logLeadCall(lead, outcome, item, button),
            `Log a call to ${lead.name}`));
    return item;
}

function draw(day) {
    state.kinds = day.kinds;
    state.callOutcomes = day.call_outcomes;
    const tasks = document.getElementById('tasks');
    const leads = document.getElementById('hot-leads');
    tasks.replaceChildren(...day.tasks.map(taskCard));
    leads.replaceChildren(...day.hot_leads.map(leadCard));
    document.getElementById('tasks-empty').hidden = day.tasks.length > 0;
    document.getElementById('hot-empty').hidden = day.hot_leads.length > 0;
    const overdue = day.tasks.filter((t) => t.overdue).length;
    document.getElementById('summary').textContent = [
        `${overdue} overdue`, `${day.tasks.length - overdue} due today`,
        `${day.hot_leads.length} hot ${day.hot_leads.length === 1
            ? 'lead' : 'leads'} waiting`].join(' · ');
    document.getElementById('day').setAttribute('aria-busy', 'false');
}

async function load() {
    try {
        draw(await api('GET', 'day'));
    } catch (error) {
        document.getElementById('summary').textContent = error.message;
    }
}

function finishCard(item, text) {
    item.classList.add('finished');
    item.querySelectorAll('.outcomes button').forEach((b) => {
        b.disabled = true;
    });
    item.append(h('p', {class: 'card-done'}, text));
}

function setBusy(item, busy) {
    item.querySelectorAll('.outcomes button').forEach((b) => {
        b.disabled = busy;
    });
}

async function logTaskOutcome(task, outcome, item, button) {
    setBusy(item, true);
    button.classList.add('picked');
    try {
        await api('POST', `tasks/${task.id}/outcome`,
            {outcome: outcome.value});
    } catch (error) {
        button.classList.remove('picked');
        setBusy(item, false);
        showToast(error.message);
        return;
    }
    finishCard(item, `Done: ${outcome.label}`);
    showToast(`Logged: ${outcome.label}`);
    askNext(task, outcome);
}

async function logLeadCall(lead, outcome, item, button) {
    setBusy(item, true);
    button.classList.add('picked');
    try {
        await api('POST', `leads/${lead.id}/calls`, {outcome: outcome.value});
    } catch (error) {
        button.classList.remove('picked');
        setBusy(item, false);
        showToast(error.message);
        return;
    }
    finishCard(item, `Call logged: ${outcome.label}`);
    showToast(`Logged: ${outcome.label}`);
}

// --- The next task -----------------------------------------------------

const nextDialog = document.getElementById('next-dialog');
const nextForm = document.getElementById('next-form');
let nextFor = null;

// A datetime-local value in India time, from a Date.
function localInputValue(date) {
    const shifted = new Date(date.getTime() + IST_OFFSET_MINUTES * 60000);
    return shifted.toISOString().slice(0, 16);
}

// The UTC ISO time of a datetime-local value typed in India time.
function utcFromLocalInput(value) {
    const [day, time] = value.split('T');
    const [year, month, date] = day.split('-').map(Number);
    const [hours, minutes] = time.split(':').map(Number);
    const utc = Date.UTC(year, month - 1, date, hours, minutes)
        - IST_OFFSET_MINUTES * 60000;
    return new Date(utc).toISOString();
}

function askNext(task, outcome) {
    nextFor = task;
    const kind = document.getElementById('next-kind');
    kind.replaceChildren(...state.kinds.map((k) => h('option',
        {value: k.value, selected: k.value === task.kind}, k.label)));
    document.getElementById('next-context').textContent =
        `${task.name} (${outcome.label})` +
        (task.lead ? ` — ${task.lead.name}` : '');
    const tomorrow = new Date(Date.now() + 24 * 3600 * 1000);
    nextForm.elements.due.value = localInputValue(tomorrow);
    nextForm.elements.name.value = '';
    nextForm.querySelector('.form-error').hidden = true;
    if (typeof nextDialog.showModal === 'function') {
        nextDialog.showModal();
    }
}

nextForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = nextForm.querySelector('.form-error');
    try {
        await api('POST', `tasks/${nextFor.id}/next`, {
            kind: nextForm.elements.kind.value,
            due: utcFromLocalInput(nextForm.elements.due.value),
            name: nextForm.elements.name.value,
        });
    } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        return;
    }
    nextDialog.close();
    showToast('Next task planned');
    load();
});
nextDialog.querySelector('[data-close]').addEventListener('click', () => {
    nextDialog.close();
});

document.getElementById('refresh').addEventListener('click', load);
// Coming back to the tab (after a call) shows what changed meanwhile.
document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
        load();
    }
});
load();
})();
