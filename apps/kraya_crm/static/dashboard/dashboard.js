// Kraya CRM dashboard home: today's numbers of the user's scope (each a
// link to the desk list behind it), this month's won value against the
// target, and three charts drawn as plain SVG at the width they have.
//
// Names of sources and stages are put in the page as text (h() makes text
// nodes of strings, SVG text gets textContent); nothing from the API goes
// through innerHTML.
'use strict';

(() => {
const body = document.body;
const DATABASE = body.dataset.database;
const API = `/${encodeURIComponent(DATABASE)}/crm/dashboard/api/`;
const SVG = 'http://www.w3.org/2000/svg';

const {h, replace} = window.KrayaPages;
const banner = document.getElementById('banner');
const api = window.KrayaPages.apiClient(API, () => showBanner(
    'Your session has ended: sign in to the desk again.'));

function showBanner(text) {
    banner.replaceChildren(text, ' ',
        h('a', {href: body.dataset.deskUrl}, 'Open the desk'));
    banner.hidden = false;
}

// ₹12.5 L, ₹1.2 Cr: a bar's label, short enough to sit beside it.
function shortInr(value) {
    const number = Number(value);
    if (number >= 1e7) {
        return `₹${(number / 1e7).toFixed(number >= 1e8 ? 0 : 1)} Cr`;
    }
    if (number >= 1e5) {
        return `₹${(number / 1e5).toFixed(number >= 1e6 ? 0 : 1)} L`;
    }
    return '₹' + number.toLocaleString('en-IN');
}

// --- SVG ---------------------------------------------------------------

function svg(tag, attributes, ...children) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
        element.setAttribute(name, String(value));
    }
    for (const child of children) {
        if (typeof child === 'string') {
            element.textContent = child;
        } else if (child) {
            element.append(child);
        }
    }
    return element;
}

function clip(text, characters) {
    return text.length > characters
        ? text.slice(0, characters - 1) + '…' : text;
}

// One bar a row: [{label, value, text, color, title}]; centred makes a
// funnel of them.
function horizontalBars(width, rows, {centred = false} = {}) {
    const rowHeight = 30;
    const labelWidth = Math.min(170, Math.round(width * 0.36));
    const valueWidth = 70;
    const plot = Math.max(40, width - labelWidth - valueWidth);
    const max = Math.max(1, ...rows.map(r => r.value));
    const chart = svg('svg', {viewBox: `0 0 ${width} ${rows.length * rowHeight}`,
        width, height: rows.length * rowHeight, role: 'img'});
    rows.forEach((row, i) => {
        const y = i * rowHeight;
        const bar = row.value ? Math.max(3, plot * row.value / max) : 0;
        const x = labelWidth + (centred ? (plot - bar) / 2 : 0);
        const group = svg('g', {class: 'bar-row'},
            svg('title', {}, `${row.label}: ${row.title || row.text}`));
        group.append(
            svg('text', {x: 0, y: y + 19},
                clip(row.label, Math.floor(labelWidth / 7.5))),
            svg('rect', {x, y: y + 5, width: bar, height: rowHeight - 10,
                rx: 4, fill: row.color || '#0f766e'}),
            svg('text', {x: centred ? labelWidth + plot + 8 : x + bar + 6,
                y: y + 19, class: 'value'}, row.text));
        chart.append(group);
    });
    return chart;
}

// One column a month, the value above it (a phone gets rows instead).
function columns(width, rows) {
    const height = 220;
    const top = 22;
    const bottom = 24;
    const plot = height - top - bottom;
    const step = width / rows.length;
    const barWidth = Math.min(44, step * 0.62);
    const max = Math.max(1, ...rows.map(r => r.value));
    const chart = svg('svg', {viewBox: `0 0 ${width} ${height}`, width,
        height, role: 'img'});
    chart.append(svg('line', {x1: 0, x2: width, y1: top + plot,
        y2: top + plot, class: 'grid'}));
    rows.forEach((row, i) => {
        const bar = row.value ? Math.max(2, plot * row.value / max) : 0;
        const x = i * step + (step - barWidth) / 2;
        const group = svg('g', {class: 'bar-column'},
            svg('title', {}, `${row.label}: ${row.title || row.text}`));
        group.append(
            svg('rect', {x, y: top + plot - bar, width: barWidth,
                height: bar, rx: 3, fill: row.color || '#0f766e'}),
            svg('text', {x: i * step + step / 2, y: height - 6,
                'text-anchor': 'middle', class: 'muted'}, row.label));
        if (row.value) {
            group.append(svg('text', {x: i * step + step / 2,
                y: top + plot - bar - 6, 'text-anchor': 'middle',
                class: 'value'}, row.text));
        }
        chart.append(group);
    });
    return chart;
}

// --- Drawing -----------------------------------------------------------

let figures = null;

function drawTiles(tiles) {
    replace(document.getElementById('tiles'), tiles.map(tile => {
        const attributes = {class: `tile ${tile.tone || ''}`.trim(),
            dataset: {key: tile.key}};
        const content = [
            h('span', {class: 'tile-label'}, tile.label),
            h('span', {class: 'tile-value'}, tile.text),
            tile.detail ? h('span', {class: 'tile-detail'}, tile.detail)
                : null,
        ];
        return tile.url
            ? h('a', {...attributes, href: tile.url,
                title: `Open the list in the desk`}, content)
            : h('div', attributes, content);
    }));
}

const TARGET_OF = {
    rep: 'your target', team: "the team's target",
    reps: "your reps' targets",
};

function drawTarget(target, monthText) {
    const section = document.getElementById('target');
    section.hidden = !target;
    if (!target) {
        return;
    }
    const meter = document.getElementById('target-meter');
    const text = document.getElementById('target-figures');
    if (target.amount === null) {
        replace(text, h('strong', {}, target.won_text),
            ` won in ${monthText}. No target is set for the month`,
            figures.scope === 'all'
                ? ' (CRM › Configuration › Monthly Targets).' : '.');
        meter.hidden = true;
        return;
    }
    replace(text, h('strong', {}, target.won_text),
        ` won of ${target.amount_text} (${TARGET_OF[target.kind]}): `,
        h('strong', {}, `${target.percent}%`));
    meter.hidden = false;
    meter.setAttribute('aria-valuenow', Math.min(100, target.percent));
    meter.setAttribute('aria-label', `${target.percent}% of the target`);
    meter.classList.toggle('reached', target.percent >= 100);
    document.getElementById('target-bar').style.width =
        `${Math.min(100, target.percent)}%`;
}

function chartBody(id) {
    return document.querySelector(`#${id} .chart-body`);
}

function drawChart(id, rows, draw, empty) {
    const section = document.getElementById(id);
    section.hidden = rows === null;
    if (rows === null) {
        return;
    }
    const target = chartBody(id);
    if (!rows.some(r => r.value)) {
        replace(target, h('p', {class: 'chart-empty'}, empty));
        return;
    }
    // Drawn at the width the panel has, so text stays at its size.
    target.replaceChildren();
    replace(target, draw(Math.max(240, target.clientWidth), rows));
}

function drawCharts() {
    const charts = figures.charts;
    drawChart('chart-sources', charts.sources && charts.sources.map(s => ({
        label: s.label, value: s.count, text: String(s.count),
        color: s.id ? '#0f766e' : '#94a3b8'})),
        (width, rows) => horizontalBars(width, rows),
        'No leads came this month yet.');
    drawChart('chart-funnel', charts.funnel.map(s => ({
        label: s.label, value: s.count, text: String(s.count),
        color: s.color})),
        (width, rows) => horizontalBars(width, rows, {centred: true}),
        'No deals yet.');
    drawChart('chart-won', charts.won_by_month && charts.won_by_month.map(
        m => ({label: m.label, value: Number(m.value),
            text: Number(m.value) ? shortInr(m.value) : '',
            title: `${m.value_text} (${m.count} won)`})),
        (width, rows) => width < 560
            ? horizontalBars(width, rows) : columns(width, rows),
        'No deal won this fiscal year yet.');
    document.getElementById('won-title').textContent =
        `Won value by month, fiscal year ${figures.fiscal_year}`;
}

function draw() {
    const scope = figures.scope === 'all'
        ? "everyone's numbers" : 'your numbers';
    document.getElementById('summary').textContent =
        `${figures.today_text} · ${scope}`;
    drawTiles(figures.tiles);
    drawTarget(figures.target, figures.month_text);
    drawCharts();
}

async function load() {
    const main = document.getElementById('dashboard');
    try {
        figures = await api('GET', 'figures');
        draw();
    } catch (error) {
        if (error.status !== 401) {
            showBanner(error.message);
        }
        document.getElementById('summary').textContent =
            'The numbers could not be loaded.';
    } finally {
        main.setAttribute('aria-busy', 'false');
    }
}

let resizeTimer = null;
window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => figures && drawCharts(), 150);
});

load();
})();
