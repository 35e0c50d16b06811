"""A real headless Chromium for the console tests and the screenshot command: Debian's
``chromium`` driven by ``chromium-driver`` through Selenium, offline, with a fresh
profile each time.

The browser is installed here when missing and this runs as root with apt-get (a clean
CI machine); otherwise it fails loudly, naming the packages: a console test that
cannot run must not pass by being skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ["chromium", "chromium-driver"]
WINDOW = (1366, 900)  # a laptop screen
# Nothing but the page under test: no network of the browser's own, no first-run UI.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1"]


class BrowserMissing(RuntimeError):
    pass


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver if they are missing."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserMissing(f"the console tests need {CHROMIUM} and {CHROMEDRIVER}: "
                             f"apt-get install -y {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, timeout=900, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], check=True, timeout=1800,
                   env=env)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise BrowserMissing(f"apt-get installed {' '.join(PACKAGES)} but {CHROMIUM} or "
                             f"{CHROMEDRIVER} is still missing")


def start_browser(profile: Path) -> webdriver.Chrome:
    """A headless Chromium with an empty profile in ``profile``."""
    ensure_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # The driver is named, so Selenium Manager (which would go online) is never run.
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
