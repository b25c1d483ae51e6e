// The UI's shell: login and logout, the tabs (routes in the URL's #fragment), the virtual-host
// selector, the refresh interval, and handing each page the live answers it watches.
//
// A page is {title, root, watches() -> API paths, update(path, status, body), tick()?}.  When the
// route, the vhost, the interval or a page's own state (filter, sort, page) changes, the app
// asks the page for its paths again and opens one event stream for them (app.rewatch()).

import { adminPage } from "./admin.js";
import { Api } from "./api.js";
import { channelsPage, connectionsPage } from "./connections.js";
import { clear, errorBox, h } from "./dom.js";
import { exchangePage, exchangesPage } from "./exchanges.js";
import { overviewPage } from "./overview.js";
import { queuePage, queuesPage } from "./queues.js";

const MGMT_TAGS = ["management", "policymaker", "monitoring", "administrator"];
const $ = (id) => document.getElementById(id);

class App {
  constructor() {
    this.api = new Api();
    this.api.onUnauthorized = (reason) => this.loggedOut(reason || "Your login is no longer accepted: log in again.");
    this.user = null;
    this.tags = new Set();
    this.vhost = sessionStorage.getItem("burrowmq.vhost") || "";
    this.vhosts = [];
    this.interval = Number(sessionStorage.getItem("burrowmq.interval") || 5);
    this.page = null;
    this.stopWatch = () => {};
    this.ticker = null;
    this.lists = new Map();
  }

  async start() {
    $("login-form").addEventListener("submit", (ev) => this.login(ev));
    $("logout").addEventListener("click", () => this.loggedOut("You are logged out."));
    $("vhost").addEventListener("change", (ev) => {
      this.vhost = ev.target.value;
      sessionStorage.setItem("burrowmq.vhost", this.vhost);
      this.rewatch();
    });
    $("interval").value = String(this.interval);
    $("interval").addEventListener("change", (ev) => {
      this.interval = Number(ev.target.value);
      sessionStorage.setItem("burrowmq.interval", String(this.interval));
      this.rewatch();
    });
    $("refresh").addEventListener("click", () => this.rewatch());
    window.addEventListener("hashchange", () => this.route());
    if (this.api.auth) await this.enter();
    else this.showLogin();
  }

  // -- login -------------------------------------------------------------------------------
  showLogin(message) {
    document.body.classList.remove("in");
    $("app").hidden = true;
    $("login").hidden = false;
    clear($("login-status"), message ? h("p", { role: "alert", text: message }) : null);
    $("username").focus();
  }

  async login(ev) {
    ev.preventDefault();
    this.api.login($("username").value, $("password").value);
    await this.enter();
  }

  async enter() {
    let me;
    try {
      me = await this.api.get("/api/whoami");
    } catch (err) {
      this.api.logout();
      const why = err.status === 401 ? `Login failed: ${err.reason}. Check the user name and password (a user needs a management tag).`
        : `Login failed: ${err.reason}.`;
      this.showLogin(why);
      return;
    }
    this.user = me.name;
    this.tags = new Set(me.tags || []);
    if (!MGMT_TAGS.some((t) => this.tags.has(t))) {
      this.api.logout();
      this.showLogin("This user has no management tag (management, policymaker, monitoring or administrator).");
      return;
    }
    this.api.remember();
    $("password").value = "";
    $("login").hidden = true;
    $("app").hidden = false;
    document.body.classList.add("in");
    $("whoami").textContent = `${me.name} (${[...this.tags].join(", ") || "no tags"})`;
    $("tab-admin").hidden = !(this.tags.has("administrator") || this.tags.has("policymaker"));
    await this.reloadVhosts();
    this.route();
  }

  loggedOut(message) {
    this.stopWatch();
    clearInterval(this.ticker);
    this.api.logout();
    this.page = null;
    clear($("main"));
    this.showLogin(message);
  }

  // -- virtual hosts -----------------------------------------------------------------------
  async reloadVhosts() {
    try {
      this.vhosts = (await this.api.get("/api/vhosts?columns=name")).map((v) => v.name);
    } catch (err) {
      this.vhosts = [];
    }
    if (this.vhost && !this.vhosts.includes(this.vhost)) this.vhost = "";
    clear($("vhost"), h("option", { value: "" }, "All virtual hosts"),
      this.vhosts.map((v) => h("option", { value: v, selected: v === this.vhost || null }, v)));
  }

  // a <select name=...> of the vhosts, the selected one first chosen
  vhostSelect(name) {
    const current = this.vhost || this.vhosts[0] || "/";
    return h("select", { name }, (this.vhosts.length ? this.vhosts : ["/"]).map((v) =>
      h("option", { value: v, selected: v === current || null }, v)));
  }

  listState(id, initial) {
    if (!this.lists.has(id)) this.lists.set(id, initial);
    return this.lists.get(id);
  }

  // -- routes ------------------------------------------------------------------------------
  route() {
    if (!this.user) return;
    const parts = (location.hash || "#/overview").slice(2).split("/").map(decodeURIComponent);
    const tab = parts[0] || "overview";
    let page;
    if (tab === "connections") page = connectionsPage(this);
    else if (tab === "channels") page = channelsPage(this);
    else if (tab === "exchanges" && parts.length === 3) page = exchangePage(this, parts[1], parts[2]);
    else if (tab === "exchanges") page = exchangesPage(this);
    else if (tab === "queues" && parts.length === 3) page = queuePage(this, parts[1], parts[2]);
    else if (tab === "queues") page = queuesPage(this);
    else if (tab === "admin" && !$("tab-admin").hidden) page = adminPage(this);
    else page = overviewPage(this);
    const current = page.title === "Overview" ? "overview" : tab;
    for (const a of document.querySelectorAll("#tabs a")) {
      if (a.dataset.tab === current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    clear($("notice"));
    this.page = page;
    document.title = `${page.title} · BurrowMQ`;
    clear($("main"), page.root);
    this.rewatch();
  }

  go(hash) {
    location.hash = hash;
  }

  rewatch() {
    this.stopWatch();
    clearInterval(this.ticker);
    const page = this.page;
    if (!page) return;
    this.stopWatch = this.api.watch(page.watches(), this.interval,
      (path, status, body) => { if (this.page === page) page.update(path, status, body); },
      (state, reason) => this.liveState(state, reason));
    if (page.tick && this.interval) this.ticker = setInterval(() => page.tick(), this.interval * 1000);
  }

  liveState(state, reason) {
    const text = { live: "Live", polling: "Polling", reconnecting: "Reconnecting…", paused: "Not refreshing", ended: `Stopped: ${reason}` }[state];
    $("live").textContent = text || state;
    $("live").dataset.state = state;
  }

  // -- messages to the user ----------------------------------------------------------------
  notify(text) {
    clear($("notice"), h("p", { class: "ok", role: "status", text }));
  }

  fail(err, what) {
    clear($("notice"), errorBox(err, what));
  }
}

new App().start();
