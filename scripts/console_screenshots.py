"""Screenshots of each console page, for docs/console/ (the README shows one).

    .venv/bin/python scripts/console_screenshots.py [OUT_DIR]   # default: docs/console

Starts the test suite's stack (OIDC issuer, nats-server, gateway with SQLite) in a
temporary directory, records sample decisions (live ones from workers, and two weeks of
history written by a signed writer of its own so the chart has days to show), then
drives headless Chromium through every page. Tokens are minted for the run and gone
with it: nothing in the images is a secret.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from gateway.audit.chain import CheckpointSigner  # noqa: E402
from gateway.audit.record import AuditRecord  # noqa: E402
from gateway.audit.writer import AuditWriter  # noqa: E402
from gateway.keyfiles import CHECKPOINT_FILE  # noqa: E402
from tests.integration.browser import start_browser  # noqa: E402
from tests.integration.console_stack import LiveStack  # noqa: E402

DAY = 86400.0
HISTORY = [("etl", "load", 0.9), ("etl", "extract", 0.95), ("billing", "load", 0.0),
           ("reports", "render", 0.0)]


class _Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def _history_record(index: int, at: float, dag: str, task: str, granted: bool,
                    issuer: str) -> AuditRecord:
    worker = "system:serviceaccount:airflow:etl-worker"
    return AuditRecord(
        decision_id=f"hist{index:05d}", decided_at=at,
        decision="grant" if granted else "deny",
        reason_code="granted" if granted else "no_matching_policy",
        reason="granted" if granted else "no policy matches this identity and scope",
        gateway_instance="gw-history", latency_ms=1.8, method="oidc",
        principal=f"{issuer}#{worker}", identity_fingerprint=f"sha256:{index:064x}",
        dag_id=dag, task_id=task, run_id=f"scheduled__{time.strftime('%Y-%m-%d', time.gmtime(at))}",
        client_host="10.0.4.17", client_name=f"airflow-{dag}-{task}", client_lang="python3",
        client_version="2.9.0",
        permissions={"pub": {"allow": [f"airflow.{dag}.{task}.>"], "deny": []},
                     "sub": {"allow": [f"airflow.{dag}.{task}.>"], "deny": []}}
        if granted else {},
        expires_at=int(at) + 600 if granted else None,
        policy_ids=("etl-workers",) if granted else (), policy_set_hash="sha256:history")


async def _write_history(live: LiveStack) -> None:
    """Fourteen days, one signed run per day (start, records, final): verify stays clean."""
    gateway = live.live.gateway
    assert gateway is not None
    signer = CheckpointSigner.from_seed_hex((live.live.keys / CHECKPOINT_FILE).read_text())
    rng = random.Random(24)  # noqa: S311 (sample data, the same each run)
    index = 0
    for day in range(14, 0, -1):
        clock = _Clock(time.time() - day * DAY)
        writer = AuditWriter(gateway.store, instance="gw-history", signer=signer, clock=clock)
        for dag, task, grant_rate in HISTORY:
            for _ in range(rng.randint(2, 9)):
                clock.at += rng.uniform(30, 50)
                await writer.write(_history_record(index, clock.at, dag, task,
                                                   rng.random() < grant_rate,
                                                   live.live.issuer.issuer))
                index += 1
        writer.close()


def _shot(driver: WebDriver, out: Path, name: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, min(max(int(height), 640), 1200))
    driver.save_screenshot(str(out / f"{name}.png"))
    print(f"wrote {out / name}.png")


def _sign_in(driver: WebDriver, live: LiveStack, token: str) -> None:
    driver.get(f"{live.base_url}/console/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()


def _pages(driver: WebDriver, live: LiveStack, out: Path) -> None:
    base = f"{live.base_url}/console"
    driver.get(f"{base}/login")
    _shot(driver, out, "signin")
    _sign_in(driver, live, live.auditor_token)
    driver.get(f"{base}/decisions")
    _shot(driver, out, "decisions")
    driver.get(f"{base}/decisions?dag=billing&decision=deny")
    _shot(driver, out, "decisions-billing-denies")
    driver.get(f"{base}/decisions?dag=etl&task=load&decision=grant")
    driver.find_element(By.CSS_SELECTOR, "#decisions tbody tr a").click()
    _shot(driver, out, "decision")
    driver.get(f"{base}/who-could?subject=airflow.etl.load.complete&action=publish")
    _shot(driver, out, "who-could")
    driver.get(f"{base}/summary")
    _shot(driver, out, "summary")
    driver.get(f"{base}/integrity")
    _shot(driver, out, "integrity")
    driver.get(f"{base}/policies")
    driver.find_element(By.ID, "e-claims").send_keys(json.dumps(
        {"iss": live.live.issuer.issuer, "sub": "system:serviceaccount:airflow:etl-worker"}))
    driver.find_element(By.ID, "e-dag").send_keys("etl")
    driver.find_element(By.ID, "e-task").send_keys("load")
    driver.find_element(By.ID, "explain").click()
    _shot(driver, out, "policies")
    driver.get(f"{base}/retention")
    _shot(driver, out, "retention-auditor-refused")
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    _sign_in(driver, live, live.oidc_token("platform-admins"))
    driver.get(f"{base}/retention")
    _shot(driver, out, "retention")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "console"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        live = LiveStack(Path(tmp) / "stack").start()
        try:
            live.run(_write_history(live))
            live.seed()
            driver = start_browser(Path(tmp) / "profile")
            try:
                _pages(driver, live, out)
            finally:
                driver.quit()
        finally:
            live.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
