// A list page paginated, filtered and sorted by the broker (page, page_size, name, use_regex,
// sort, sort_reverse: RabbitMQ's list parameters), so a page of 10,000 queues stays cheap.

import { checkbox, clear, emptyState, errorBox, field, h, loading, pager, table } from "./dom.js";

// spec: {id, title, path(vhost) -> API path, columns, empty(filtered) -> node, below: node, sort}
export function listPage(app, spec) {
  const state = app.listState(spec.id, { page: 1, page_size: 20, name: "", use_regex: false,
    sort: spec.sort || "name", reverse: false });
  const body = h("div", { class: "list-body" }, loading());
  let timer = null;
  const filter = h("input", { type: "search", value: state.name, placeholder: "name contains…", autocomplete: "off",
    oninput: () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.name = filter.value; state.page = 1; app.rewatch(); }, 300);
    } });
  const regex = checkbox("Regex", "use_regex", state.use_regex);
  regex.querySelector("input").addEventListener("change", (e) => {
    state.use_regex = e.target.checked;
    state.page = 1;
    app.rewatch();
  });
  const root = h("section", { "aria-labelledby": "page-title" },
    h("h2", { id: "page-title", text: spec.title }),
    h("div", { class: "toolbar", role: "search" }, field(`Filter ${spec.title.toLowerCase()} by name`, filter), regex),
    body, spec.below || null);

  function onSort(key) {
    if (state.sort === key) state.reverse = !state.reverse;
    else {
      state.sort = key;
      state.reverse = false;
    }
    app.rewatch();
  }

  function path() {
    const qs = new URLSearchParams({ page: String(state.page), page_size: String(state.page_size),
      sort: state.sort, sort_reverse: String(state.reverse), pagination: "true" });
    if (state.name) {
      qs.set("name", state.name);
      qs.set("use_regex", String(state.use_regex));
    }
    return `${spec.path(app.vhost)}?${qs}`;
  }

  return {
    title: spec.title,
    root,
    watches: () => [path()],
    update(_path, status, page) {
      if (status !== 200) {
        clear(body, errorBox({ status, reason: page && page.reason }, `Listing ${spec.title.toLowerCase()}`));
        return;
      }
      if (page.page > page.page_count && page.page > 1) {
        state.page = page.page_count;  // the list shrank under us
        app.rewatch();
        return;
      }
      if (!page.items.length) {
        clear(body, page.total_count
          ? emptyState(`No ${spec.title.toLowerCase()} match this filter`, "Change or clear the filter above.")
          : spec.empty());
        return;
      }
      clear(body, table(spec.columns, page.items, { label: spec.title, sort: state.sort, reverse: state.reverse, onSort }),
        pager(page, (n) => { state.page = n; app.rewatch(); },
          (n) => { state.page_size = n; state.page = 1; app.rewatch(); }));
    },
  };
}

export function vpath(vhost, all, one) {
  return vhost ? one(encodeURIComponent(vhost)) : all;
}
