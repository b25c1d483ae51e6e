// Admin: users, virtual hosts, permissions, operator policies and limits (administrators) and
// policies (administrators and policymakers); each section says why it is empty.

import { clear, emptyState, errorBox, field, form, h, loading, num, table } from "./dom.js";
import { limitSection } from "./limits.js";
import { policySection } from "./policies.js";

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
  const opPolicies = section("Operator policies");
  const vhostLimits = section("Virtual host limits");
  const userLimits = section("User limits");
  const userOptions = h("select", { name: "user", required: true });
  const vhostOptions = h("select", { name: "vhost", required: true });
  const limitUserOptions = h("select", { name: "user", required: true });

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
  const policy = policySection(app, false);
  const opPolicy = policySection(app, true);
  const vhostLimit = limitSection(app, "vhost", app.vhostSelect("vhost"));
  const userLimit = limitSection(app, "user", limitUserOptions);
  // each watched path: its section, and how to show the answer there
  const parts = new Map([[policy.path, [policies, policy]]].concat(admin ? [
    [opPolicy.path, [opPolicies, opPolicy]], [vhostLimit.path, [vhostLimits, vhostLimit]], [userLimit.path, [userLimits, userLimit]],
  ] : []));

  users.body.after(addUser);
  vhosts.body.after(addVhost);
  perms.body.after(setPerm);
  const shown = admin
    ? [["Users", users], ["Virtual hosts", vhosts], ["Permissions", perms], ["Policies", policies],
      ["Operator policies", opPolicies], ["Limits", vhostLimits], ["User limits", userLimits]]
    : [["Policies", policies]];
  const root = h("section", { "aria-labelledby": "page-title" }, h("h2", { id: "page-title", text: "Admin" }),
    h("nav", { class: "subnav", "aria-label": "Admin sections" }, shown.map(([t, sec]) =>
      h("button", { type: "button", class: "link", onclick: () => {
        sec.el.scrollIntoView();
        sec.el.querySelector("h3").focus();
      } }, t))),
    shown.map(([, sec]) => sec.el));

  for (const [sec, part] of parts.values()) sec.body.after(part.form);

  return {
    title: "Admin",
    root,
    watches() {
      return (admin ? ["/api/users", "/api/vhosts", "/api/permissions"] : []).concat([...parts.keys()]);
    },
    update(path, status, body) {
      if (parts.has(path)) {
        const [sec, part] = parts.get(path);
        if (status !== 200) clear(sec.body, errorBox({ status, reason: body && body.reason }, `Reading ${sec.el.getAttribute("aria-label").toLowerCase()}`));
        else part.render(sec.body, body);
        return undefined;
      }
      const target = { "/api/users": users, "/api/vhosts": vhosts, "/api/permissions": perms }[path];
      if (status !== 200) {
        clear(target.body, errorBox({ status, reason: body && body.reason }, `Reading ${path}`));
        return;
      }
      if (path === "/api/users") {
        const current = userOptions.value;
        clear(userOptions, body.map((u) => h("option", { value: u.name, selected: u.name === current || null }, u.name)));
        const currentLimit = limitUserOptions.value;
        clear(limitUserOptions, body.map((u) => h("option", { value: u.name, selected: u.name === currentLimit || null }, u.name)));
        clear(users.body, table([
          { key: "name", label: "Name" },
          { label: "Tags", cell: (u) => (u.tags || []).join(", ") || "(none: no management access)" },
          { label: "", cell: (u) => (u.name === app.user ? "(you)" : removeButton(app, `Delete user ${u.name}`,
            `Delete user '${u.name}'?`, `/api/users/${e(u.name)}`, "Deleting the user")) },
        ], body, { label: "Users" }));
      } else if (path === "/api/vhosts") {
        // every form's vhost choice follows the list (a vhost added here can take a policy at once)
        for (const sel of root.querySelectorAll("form select[name=vhost]")) {
          const current = sel.value;
          clear(sel, body.map((v) => h("option", { value: v.name, selected: v.name === current || null }, v.name)));
        }
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
