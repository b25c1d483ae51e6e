// Admin: users, virtual hosts, permissions (administrators), and policies and limits when the
// broker's API has them (administrators and policymakers); each section says why it is empty.

import { clear, emptyState, errorBox, field, form, h, json, loading, num, parseTable, select, table } from "./dom.js";

const e = encodeURIComponent;

function section(title) {
  const body = h("div", {}, loading());
  const el = h("section", { class: "panel", "aria-label": title }, h("h3", { text: title, tabindex: -1 }), body);
  return { el, body };
}

function removeButton(app, label, question, path, what) {
  return h("button", { type: "button", class: "danger small", "aria-label": label, onclick: async () => {
    if (!window.confirm(question)) return;
    try {
      await app.api.del(path);
      app.notify(`${what} done.`);
      app.rewatch();
    } catch (err) {
      app.fail(err, what);
    }
  } }, "Delete");
}

export function adminPage(app) {
  const admin = app.tags.has("administrator");
  const users = section("Users");
  const vhosts = section("Virtual hosts");
  const perms = section("Permissions");
  const policies = section("Policies");
  const limits = section("Virtual host limits");
  const userOptions = h("select", { name: "user", required: true });
  const vhostOptions = h("select", { name: "vhost", required: true });

  const addUser = form("Add a user", [
    field("Username", h("input", { name: "username", required: true, maxlength: 255, autocomplete: "off" })),
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
    field("Tags", h("input", { name: "tags", placeholder: "administrator", autocomplete: "off" }),
      "Comma-separated: administrator, monitoring, policymaker, management, impersonator; empty: no management access."),
  ], "Add user", async (d) => {
    const name = d.get("username");
    await app.api.put(`/api/users/${e(name)}`, { password: d.get("password"), tags: d.get("tags") });
    app.rewatch();
    return `User '${name}' added. Give it permissions on a virtual host below.`;
  });
  const addVhost = form("Add a virtual host", [
    field("Name", h("input", { name: "name", required: true, maxlength: 255, autocomplete: "off" })),
    field("Description", h("input", { name: "description", autocomplete: "off" })),
  ], "Add virtual host", async (d) => {
    const name = d.get("name");
    await app.api.put(`/api/vhosts/${e(name)}`, { description: d.get("description") });
    app.rewatch();
    app.reloadVhosts();
    return `Virtual host '${name}' added.`;
  });
  const setPerm = form("Set permission", [
    field("User", userOptions), field("Virtual host", vhostOptions),
    field("Configure regexp", h("input", { name: "configure", value: ".*", autocomplete: "off" })),
    field("Write regexp", h("input", { name: "write", value: ".*", autocomplete: "off" })),
    field("Read regexp", h("input", { name: "read", value: ".*", autocomplete: "off" })),
  ], "Set permission", async (d) => {
    await app.api.put(`/api/permissions/${e(d.get("vhost"))}/${e(d.get("user"))}`, {
      configure: d.get("configure"), write: d.get("write"), read: d.get("read"),
    });
    app.rewatch();
    return `Permission set for '${d.get("user")}' on '${d.get("vhost")}'.`;
  });
  const addPolicy = form("Add / update a policy", [
    field("Virtual host", app.vhostSelect("vhost")),
    field("Name", h("input", { name: "name", required: true, autocomplete: "off" })),
    field("Pattern", h("input", { name: "pattern", required: true, placeholder: "^amq\\.", autocomplete: "off" })),
    field("Apply to", select("apply-to", [["all", "Exchanges and queues"], ["queues", "Queues"], ["exchanges", "Exchanges"]], "all")),
    field("Priority", h("input", { name: "priority", type: "number", value: 0 })),
    field("Definition", h("textarea", { name: "definition", rows: 3, placeholder: "max-length = 1000" }), "One a line: key = value."),
  ], "Add / update policy", async (d) => {
    const name = d.get("name");
    await app.api.put(`/api/policies/${e(d.get("vhost"))}/${e(name)}`, {
      pattern: d.get("pattern"), "apply-to": d.get("apply-to"), priority: Number(d.get("priority")),
      definition: parseTable(d.get("definition"), "Definition"),
    });
    app.rewatch();
    return `Policy '${name}' saved.`;
  });
  const setLimit = form("Set a virtual host limit", [
    field("Virtual host", app.vhostSelect("vhost")),
    field("Limit", select("limit", [["max-connections", "max-connections"], ["max-queues", "max-queues"]], "max-connections")),
    field("Value", h("input", { name: "value", type: "number", required: true, min: -1 }), "-1 removes the limit."),
  ], "Set limit", async (d) => {
    await app.api.put(`/api/vhost-limits/${e(d.get("vhost"))}/${e(d.get("limit"))}`, { value: Number(d.get("value")) });
    app.rewatch();
    return "Limit set.";
  });

  users.body.after(addUser);
  vhosts.body.after(addVhost);
  perms.body.after(setPerm);
  const shown = (admin ? [["Users", users], ["Virtual hosts", vhosts], ["Permissions", perms]] : [])
    .concat([["Policies", policies], ["Limits", limits]]);
  const root = h("section", { "aria-labelledby": "page-title" }, h("h2", { id: "page-title", text: "Admin" }),
    h("nav", { class: "subnav", "aria-label": "Admin sections" }, shown.map(([t, sec]) =>
      h("button", { type: "button", class: "link", onclick: () => {
        sec.el.scrollIntoView();
        sec.el.querySelector("h3").focus();
      } }, t))),
    shown.map(([, sec]) => sec.el));

  function showOptional(sec, status, body, render, formEl, what) {
    if (status === 404 || status === 405) {
      clear(sec.body, emptyState(`${what} are not available on this broker`,
        `This version of the broker has no ${what.toLowerCase()} API yet; this section lights up when it has.`));
      formEl.hidden = true;
      return;
    }
    formEl.hidden = false;
    if (status !== 200) {
      clear(sec.body, errorBox({ status, reason: body && body.reason }, `Reading ${what.toLowerCase()}`));
      return;
    }
    render(body);
  }
  policies.body.after(addPolicy);
  limits.body.after(setLimit);

  return {
    title: "Admin",
    root,
    watches() {
      return (admin ? ["/api/users", "/api/vhosts", "/api/permissions"] : []).concat(["/api/policies", "/api/vhost-limits"]);
    },
    update(path, status, body) {
      if (path === "/api/policies") {
        return showOptional(policies, status, body, (rows) => clear(policies.body, rows.length ? table([
          { key: "vhost", label: "Virtual host" }, { key: "name", label: "Name" }, { key: "pattern", label: "Pattern" },
          { key: "apply-to", label: "Apply to" }, { label: "Definition", cell: (p) => json(p.definition) },
          { key: "priority", label: "Priority", num: true },
          { label: "", cell: (p) => removeButton(app, `Delete policy ${p.name}`, `Delete policy '${p.name}'?`,
            `/api/policies/${e(p.vhost)}/${e(p.name)}`, "Deleting the policy") },
        ], rows, { label: "Policies" }) : emptyState("No policies", "A policy applies arguments (max-length, message-ttl, dead-letter-exchange…) to every queue or exchange whose name matches its pattern.")),
        addPolicy, "Policies");
      }
      if (path === "/api/vhost-limits") {
        return showOptional(limits, status, body, (rows) => clear(limits.body, rows.length ? table([
          { key: "vhost", label: "Virtual host" }, { label: "Limits", cell: (l) => json(l.value) },
        ], rows, { label: "Virtual host limits" }) : emptyState("No limits", "Set a limit on connections or queues per virtual host below.")),
        setLimit, "Limits");
      }
      const target = { "/api/users": users, "/api/vhosts": vhosts, "/api/permissions": perms }[path];
      if (status !== 200) {
        clear(target.body, errorBox({ status, reason: body && body.reason }, `Reading ${path}`));
        return;
      }
      if (path === "/api/users") {
        const current = userOptions.value;
        clear(userOptions, body.map((u) => h("option", { value: u.name, selected: u.name === current || null }, u.name)));
        clear(users.body, table([
          { key: "name", label: "Name" },
          { label: "Tags", cell: (u) => (u.tags || []).join(", ") || "(none: no management access)" },
          { label: "", cell: (u) => (u.name === app.user ? "(you)" : removeButton(app, `Delete user ${u.name}`,
            `Delete user '${u.name}'?`, `/api/users/${e(u.name)}`, "Deleting the user")) },
        ], body, { label: "Users" }));
      } else if (path === "/api/vhosts") {
        const current = vhostOptions.value;
        clear(vhostOptions, body.map((v) => h("option", { value: v.name, selected: v.name === current || null }, v.name)));
        clear(vhosts.body, table([
          { key: "name", label: "Name" }, { key: "description", label: "Description" },
          { label: "Messages", cell: (v) => num(v.messages), num: true },
          { label: "", cell: (v) => removeButton(app, `Delete virtual host ${v.name}`,
            `Delete virtual host '${v.name}' with all its queues and messages?`, `/api/vhosts/${e(v.name)}`, "Deleting the virtual host") },
        ], body, { label: "Virtual hosts" }));
      } else {
        clear(perms.body, body.length ? table([
          { key: "user", label: "User" }, { key: "vhost", label: "Virtual host" },
          { key: "configure", label: "Configure regexp" }, { key: "write", label: "Write regexp" }, { key: "read", label: "Read regexp" },
          { label: "", cell: (p) => h("button", { type: "button", class: "danger small", "aria-label": `Clear permission of ${p.user} on ${p.vhost}`,
            onclick: async () => {
              try {
                await app.api.del(`/api/permissions/${e(p.vhost)}/${e(p.user)}`);
                app.notify("Permission cleared.");
                app.rewatch();
              } catch (err) {
                app.fail(err, "Clearing the permission");
              }
            } }, "Clear") },
        ], body, { label: "Permissions" }) : emptyState("No permissions", "Without a permission a user cannot open any virtual host."));
      }
      return undefined;
    },
  };
}
