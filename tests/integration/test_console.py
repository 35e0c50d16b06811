"""Issue 24: the audit console, driven in a real headless Chromium against a running
gateway (real OIDC issuer, nats-server, decisions on record).

Sign in as auditor (API token) and as admin (OIDC token with the role claim); filter to
one DAG's denies and open a decision; answer a "who could?" question whose answer is
known (also through the API endpoint); see a tampered log reported as tampered; see the
auditor refused the purge and the admin purge. Then the defences: nothing secret in the
browser's storage or cookies, a client name with markup shown as text, CSRF on every
form, sessions that end, security headers on every page.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from gateway.console.guard import COOKIE, HEADERS
from tests.integration.browser import start_browser
from tests.integration.console_stack import LiveStack

pytestmark = pytest.mark.integration
WAIT = 15  # seconds: the bound on every wait for the page


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    stack = LiveStack(tmp_path_factory.mktemp("console")).start().seed()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = start_browser(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, css: str) -> str:
    """The text of the element ``css`` once the page shows it."""
    element = WebDriverWait(driver, WAIT).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return str(element.text)


def sign_in(driver: WebDriver, live: LiveStack, token: str) -> None:
    driver.get(f"{live.base_url}/console/login")
    field = WebDriverWait(driver, WAIT).until(
        ec.element_to_be_clickable((By.ID, "token")))
    field.send_keys(token)
    field.send_keys(Keys.ENTER)  # the keyboard submits: no mouse needed
    WebDriverWait(driver, WAIT).until(ec.url_contains("/console/decisions"))
    wait_for(driver, "#decisions")


def nav_labels(driver: WebDriver) -> list[str]:
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "nav a")]


def rows(driver: WebDriver, table: str) -> list[list[str]]:
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")]


def fill(driver: WebDriver, field_id: str, text: str) -> None:
    field = driver.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)


# -- the "done when" list ---------------------------------------------------------------


def test_auditor_filters_one_dags_denies_and_opens_a_decision(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    assert "Retention" not in nav_labels(browser)  # read-only: no purge in sight
    assert "(auditor)" in browser.find_element(By.ID, "who").text
    fill(browser, "f-dag", "billing")
    browser.find_element(By.CSS_SELECTOR, "#f-decision option[value=deny]").click()
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("dag=billing"))
    shown = rows(browser, "#decisions")
    expected = [d for d in live.decided if d.dag == "billing" and not d.granted]
    assert len(shown) == len(expected) == 2
    assert all(r[1] == "deny" and r[3] == "billing" for r in shown)
    assert {r[5] for r in shown} == {"r1", "r2"}
    browser.find_element(By.CSS_SELECTOR, "#decisions tbody tr a").click()
    outcome = wait_for(browser, "#decision-outcome")
    assert outcome == "deny"
    assert browser.find_element(By.ID, "fingerprint").text.startswith("sha256:")
    assert "billing" in browser.find_element(By.ID, "scope").text
    assert browser.find_element(By.ID, "chain-seq").text.isdigit()
    assert browser.find_element(By.ID, "policy-set-hash").text.startswith("sha256:")


def test_a_granted_decision_shows_its_permissions_expiry_and_policies(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.get(f"{live.base_url}/console/decisions?dag=etl&task=load&run=r1")
    browser.find_element(By.CSS_SELECTOR, "#decisions tbody tr a").click()
    assert wait_for(browser, "#decision-outcome") == "grant"
    assert browser.find_element(By.ID, "policies").text == "etl-workers"
    assert browser.find_element(By.ID, "expires").text.endswith("Z")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "airflow.etl.load.>" in page


def test_who_could_answers_a_question_whose_answer_is_known(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.find_element(By.LINK_TEXT, "Who could?").click()
    fill(browser, "w-subject", "airflow.etl.load.complete")
    browser.find_element(By.ID, "ask").click()
    answer = wait_for(browser, "#who-could-answer")
    runs = sorted(d.run for d in live.decided
                  if d.granted and (d.dag, d.task) == ("etl", "load"))
    assert answer.startswith(f"{len(runs)} grants could publish on")
    shown = rows(browser, "#who-could")
    assert sorted(r[3] for r in shown) == runs
    assert all(r[1:3] == ["etl", "load"] and r[4] == "etl-workers"
               and r[0].endswith("#system:serviceaccount:airflow:etl-worker")
               and r[7] == "airflow.etl.load.>" for r in shown)
    # Subscribe is judged by its own permissions; nobody could publish elsewhere.
    browser.find_element(By.ID, "w-subscribe").click()
    fill(browser, "w-subject", "airflow.etl.extract.done")
    browser.find_element(By.ID, "ask").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("extract"))
    assert wait_for(browser, "#who-could-answer").startswith("1 grant could subscribe")
    fill(browser, "w-subject", "airflow.billing.load.done")
    browser.find_element(By.ID, "ask").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("billing"))
    assert wait_for(browser, "#who-could-answer").startswith("0 grants")
    # A range before anything was granted: nobody.
    fill(browser, "w-subject", "airflow.etl.load.complete")
    fill(browser, "w-until", "2001-01-01T00:00")
    browser.find_element(By.ID, "ask").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("2001"))
    assert wait_for(browser, "#who-could-answer").startswith("0 grants")


def test_who_could_is_an_api_endpoint_too(live: LiveStack) -> None:
    auth = {"Authorization": f"Bearer {live.auditor_token}"}
    with httpx.Client(base_url=live.base_url, headers=auth) as api:
        answer = api.get("/v1/grants/who-could",
                         params={"subject": "airflow.etl.load.complete"}).json()
        wildcard = api.get("/v1/grants/who-could", params={"subject": "airflow.etl.>"})
        future = api.get("/v1/grants/who-could", params={
            "subject": "airflow.etl.load.complete", "since": "2999-01-01T00:00"}).json()
    granted = [d for d in live.decided if d.granted and (d.dag, d.task) == ("etl", "load")]
    assert len(answer["matches"]) == len(granted) and not answer["truncated"]
    assert {m["policy_ids"][0] for m in answer["matches"]} == {"etl-workers"}
    assert all(m["valid_from"] < m["valid_until"] for m in answer["matches"])
    assert wildcard.status_code == 422 and "wildcard" in wildcard.json()["detail"]
    assert future["matches"] == []
    assert httpx.get(f"{live.base_url}/v1/grants/who-could",
                     params={"subject": "a"}).status_code == 401


def test_a_tampered_log_is_reported_as_tampered(tmp_path: Path, browser: WebDriver) -> None:
    live = LiveStack(tmp_path / "stack").start().seed()
    try:
        sign_in(browser, live, live.auditor_token)
        browser.find_element(By.LINK_TEXT, "Integrity").click()
        assert wait_for(browser, "#verdict").startswith("Intact")
        # An edit straight in the database, the hashes left as they were.
        with closing(sqlite3.connect(live.tmp / "audit.db")) as db, db:
            victim = db.execute("SELECT decision_id FROM decisions WHERE decision = 'deny' "
                                "ORDER BY seq LIMIT 1").fetchone()[0]
            db.execute("UPDATE decisions SET decision = 'grant' WHERE decision_id = ?",
                       (victim,))
        browser.find_element(By.ID, "rerun").click()
        verdict = WebDriverWait(browser, WAIT).until(
            ec.text_to_be_present_in_element((By.ID, "verdict"), "Tampered"))
        assert verdict
        problems = browser.find_element(By.ID, "instances").text
        assert "modified" in problems and victim in problems
    finally:
        live.stop()


def test_the_auditor_is_refused_the_purge_and_an_oidc_admin_purges(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.get(f"{live.base_url}/console/retention")
    assert wait_for(browser, "#refusal") == "the `admin` role is required"
    assert not browser.find_elements(By.ID, "purge")
    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("/console/login"))

    sign_in(browser, live, live.oidc_token("platform-admins"))
    assert "(admin)" in browser.find_element(By.ID, "who").text
    browser.find_element(By.LINK_TEXT, "Retention").click()
    fill(browser, "r-days", "30")
    browser.find_element(By.ID, "purge").click()
    assert wait_for(browser, "#purge-result").startswith("Purged 0 records older than 30 days")


def test_an_oidc_token_without_the_role_claim_cannot_sign_in(
        live: LiveStack, browser: WebDriver) -> None:
    browser.get(f"{live.base_url}/console/login")
    fill(browser, "token", live.oidc_token("engineers"))
    browser.find_element(By.CSS_SELECTOR, "form.signin button").click()
    assert "role" in wait_for(browser, "#signin-error")
    fill(browser, "token", "not-a-token")
    browser.find_element(By.CSS_SELECTOR, "form.signin button").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.ID, "signin-error"), "invalid token"))


def test_policies_show_the_set_in_force_and_explain_answers_like_the_cli(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.find_element(By.LINK_TEXT, "Policies").click()
    shown_hash = wait_for(browser, "#content-hash")
    api = httpx.get(f"{live.base_url}/v1/policies",
                    headers={"Authorization": f"Bearer {live.auditor_token}"}).json()
    assert shown_hash == api["content_hash"]
    assert "etl-workers" in browser.find_element(By.ID, "policy-list").text
    claims = json.dumps({"iss": live.live.issuer.issuer,
                         "sub": "system:serviceaccount:airflow:etl-worker"})
    fill(browser, "e-claims", claims)
    fill(browser, "e-dag", "etl")
    fill(browser, "e-task", "load")
    browser.find_element(By.ID, "explain").click()
    assert wait_for(browser, "#explain-decision") == "grant"
    assert "airflow.etl.load.>" in browser.find_element(By.ID, "explain-result").text
    fill(browser, "e-dag", "billing")
    browser.find_element(By.ID, "explain").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.ID, "explain-decision"), "deny"))


def test_summary_charts_each_dag_and_exports_the_current_filter(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.find_element(By.LINK_TEXT, "Summary").click()
    per_dag = {r[0]: r[1:3] for r in rows(browser, "#per-dag")}
    assert per_dag["billing"] == ["0", "2"] and per_dag["other"] == ["0", "1"]
    assert int(per_dag["etl"][0]) >= 3
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.deny")
    browser.get(f"{live.base_url}/console/decisions?dag=billing&decision=deny")
    link = browser.find_element(By.ID, "export-csv").get_attribute("href")
    assert link is not None and "dag=billing" in link and "decision=deny" in link
    session = {COOKIE: browser.get_cookie(COOKIE)["value"]}  # type: ignore[index]
    exported = httpx.get(link, cookies=session)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.strip().splitlines()
    assert len(lines) == 3 and all(",billing," in line for line in lines[1:])


# -- the defences -----------------------------------------------------------------------


def test_nothing_secret_is_kept_in_the_browser(live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    storage = browser.execute_script(
        "return [window.localStorage.length, window.sessionStorage.length]")
    assert storage == [0, 0]
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == [COOKIE]
    [cookie] = cookies
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert live.auditor_token not in cookie["value"]
    assert live.auditor_token not in browser.page_source
    assert browser.execute_script("return document.cookie") == ""


def test_a_client_name_with_markup_is_shown_as_text(live: LiveStack, browser: WebDriver) -> None:
    hostile = '<img src=x id=pwned onerror="document.title=1"><script>alert(1)</script>'
    assert live.decide("etl", "extract", "xss", name=hostile)
    sign_in(browser, live, live.auditor_token)
    browser.get(f"{live.base_url}/console/decisions?run=xss")
    [row] = rows(browser, "#decisions")
    assert row[7] == hostile  # the text, exactly as recorded
    assert not browser.find_elements(By.ID, "pwned")
    assert not browser.find_elements(By.CSS_SELECTOR, "main script")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_every_form_needs_the_sessions_csrf_token_and_sign_out_ends_the_session(
        live: LiveStack) -> None:
    with httpx.Client(base_url=live.base_url) as client:
        assert client.get("/console/login").status_code == 200
        refused = client.post("/console/login", data={"token": live.admin_token})
        assert refused.status_code == 403 and COOKIE not in refused.cookies
        nonce = refused.cookies["nats_gateway_console_signin"]  # a fresh form, a fresh one
        signed = client.post("/console/login", data={"token": live.admin_token,
                                                     "csrf": nonce})
        assert signed.status_code == 303
        for path, data in [("/console/retention", {"older_than_days": "1"}),
                           ("/console/integrity", {}), ("/console/logout", {}),
                           ("/console/policies", {"dag_id": "etl", "task_id": "load"})]:
            response = client.post(path, data={**data, "csrf": "forged"})
            assert response.status_code == 403, path
            assert "did not come from the console" in response.text
        page = client.get("/console/integrity")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
        cookie = signed.cookies[COOKIE]
    again = httpx.get(f"{live.base_url}/console/decisions", cookies={COOKIE: cookie})
    assert again.status_code == 303 and again.headers["location"].startswith("/console/login")


def test_pages_carry_the_security_headers(live: LiveStack) -> None:
    with httpx.Client(base_url=live.base_url) as client:
        for path in ("/console/login", "/console/decisions", "/console/static/console.css"):
            response = client.get(path)
            for name, value in HEADERS.items():
                assert response.headers.get(name) == value, (path, name)
        assert "content-security-policy" not in client.get("/healthz").headers


def test_the_skip_link_is_the_first_stop_of_the_keyboard(
        live: LiveStack, browser: WebDriver) -> None:
    sign_in(browser, live, live.auditor_token)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.text == "Skip to content"
    for field in browser.find_elements(By.CSS_SELECTOR, "main input:not([type=hidden]), "
                                                        "main select"):
        field_id = field.get_attribute("id")
        assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{field_id}']"), field_id
