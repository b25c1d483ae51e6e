"""The web UI's browser tests' support: Debian's Chromium driven by Playwright, and a tab
that records every page and console error.

A test module that imports this is skipped, saying what to install, without the
``chromium`` binary or the ``playwright`` package (CI installs both: ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("BURROWMQ_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium", allow_module_level=True)


class Page:
    """A browser tab on the UI that records every page error and console error."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 800) -> None:
        self.ctx = browser.new_context(viewport={"width": width, "height": height})
        self.p = self.ctx.new_page()
        self.base = base
        self.errors: list[str] = []
        self.p.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.p.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                  if m.type in ("error", "warning") else None)
        self.p.on("dialog", lambda d: d.accept())  # the confirm() of purge / delete

    def login(self, user: str = "guest", password: str = "guest") -> None:
        self.p.goto(self.base + "/")
        self.p.get_by_label("Username").fill(user)
        self.p.get_by_label("Password").fill(password)
        self.p.get_by_role("button", name="Login").click()

    def tab(self, name: str) -> None:
        self.p.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
        self.p.wait_for_selector(f"#page-title:text-is('{name}')")

    def main(self) -> str:
        return self.p.inner_text("main")

    def close(self) -> None:
        errors = self.errors
        self.ctx.close()
        assert errors == [], errors
