// What the module's own pages (the team inbox, My day) share: the page is
// built from text only (h: strings become text nodes, never markup), and
// their API is asked with the desk's session and the page's CSRF token.
// Loaded before each page's own script.
'use strict';

window.KrayaPages = (() => {
    // h('div', {class: 'x', onclick: f}, 'text', child).
    function h(tag, attributes, ...children) {
        const element = document.createElement(tag);
        for (const [name, value] of Object.entries(attributes || {})) {
            if (value === null || value === undefined || value === false) {
                continue;
            }
            if (name.startsWith('on')) {
                element.addEventListener(name.slice(2), value);
            } else if (name === 'class') {
                element.className = value;
            } else if (name === 'dataset') {
                Object.assign(element.dataset, value);
            } else if (value === true) {
                element.setAttribute(name, '');
            } else {
                element.setAttribute(name, String(value));
            }
        }
        return append(element, children);
    }

    // element.append, with h()'s rules for children (null: nothing).
    function append(element, children) {
        for (const child of children.flat(Infinity)) {
            if (child === null || child === undefined || child === false) {
                continue;
            }
            element.append(child instanceof Node
                ? child : document.createTextNode(String(child)));
        }
        return element;
    }

    // replaceChildren, with h()'s rules for children.
    function replace(element, ...children) {
        element.replaceChildren();
        return append(element, children);
    }

    // The server's message, else the page's text for the status.
    class ApiError extends Error {
        constructor(status, data, messageFor) {
            super(data && data.message
                || (messageFor ? messageFor(status, data)
                    : `Error ${status}`));
            this.status = status;
            this.code = data && data.error;
            this.data = data;
        }
    }

    // api(method, path, payload, {signal}) of the API at `base`: JSON (or
    // a FormData, for a file) with the CSRF token; an answer that is not
    // 2xx throws an ApiError, after sessionEnded() on a 401.
    function apiClient(base, sessionEnded, messageFor) {
        const csrf = document.querySelector('meta[name="csrf-token"]')
            .content;
        return async function api(method, path, payload, {signal} = {}) {
            const options = {method, credentials: 'same-origin', signal,
                headers: {Accept: 'application/json'}};
            if (method !== 'GET') {
                options.headers['X-CSRF-Token'] = csrf;
                if (payload instanceof FormData) {
                    options.body = payload;
                } else {
                    options.headers['Content-Type'] = 'application/json';
                    options.body = JSON.stringify(payload || {});
                }
            }
            let response;
            try {
                response = await fetch(base + path, options);
            } catch (error) {
                if (error.name === 'AbortError') {
                    throw error;
                }
                throw new ApiError(0, {message: 'No connection to the '
                    + 'server: check the network and try again.'},
                    messageFor);
            }
            let data = null;
            try {
                data = await response.json();
            } catch (error) {
                data = null;
            }
            if (!response.ok) {
                if (response.status === 401) {
                    sessionEnded();
                }
                throw new ApiError(response.status, data, messageFor);
            }
            return data;
        };
    }

    return {h, append, replace, ApiError, apiClient};
})();
