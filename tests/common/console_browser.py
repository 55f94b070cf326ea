"""Drives the web console in headless Chromium (Debian's chromium and
chromium-driver, through Selenium's WebDriver client) as a person would, runs
axe-core in every page it visits and saves a screenshot of each.

usage: console_browser.py <base url> <api key> <event id> <tampered event id> <output folder> <axe.min.js> <operator key>
(the organization has one active alert, one dead letter, and a checkpoint
that covers both events; the second was altered in the database since; the
operator key is of the operators' organization)
prints one JSON object: {"steps": {name: true|message}, "pages": {name: [violations]},
"errors": {name: [messages]}} where a violation is {"id", "impact", "nodes"} of
impact serious or critical, and an error one the browser's console logged as
severe while on the page (a refusal of the CSP, a script's failure).

Once the verification the person starts is recorded, the test makes a run
of another worker appear; the script writes <output folder>/seen-running
when the page shows it, and the test then ends that run.
"""
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

base, key, event_id, tampered_id, out, axe_path, operator_key = sys.argv[1:8]
os.makedirs(out, exist_ok=True)
axe = open(axe_path).read()

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)
steps, pages, errors = {}, {}, {}


def audit(name):
    """axe-core's serious and critical violations of the page, and its screenshot."""
    driver.save_screenshot(os.path.join(out, f"{name}.png"))
    driver.execute_script(axe)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));"
    )
    pages[name] = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n.get("html", n) if isinstance(n, dict) else n for n in v["nodes"]][:3]}
        for v in result
        if v.get("impact") in ("serious", "critical")
    ]
    # Since the last page audited; the browser's own icon request is not the page's.
    errors[name] = [entry["message"] for entry in driver.get_log("browser") if "favicon.ico" not in entry["message"]]


def step(name, check):
    try:
        ok = check()
        steps[name] = True if ok else "not as expected"
    except Exception as error:  # the step's failure is the answer, the run goes on
        steps[name] = f"{type(error).__name__}: {error}"


wait = WebDriverWait(driver, 15)
try:
    driver.get(f"{base}/console/login")
    audit("login")

    def sign_in(secret):
        driver.find_element(By.ID, "api_key").send_keys(secret)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(lambda d: d.current_url.endswith("/console/events"))
        return secret not in driver.page_source

    step("sign_in", lambda: sign_in(key))
    audit("events")

    def histogram():
        chart = driver.find_element(By.CSS_SELECTOR, "figure.histogram svg[role=img]")
        label = chart.get_attribute("aria-label")
        return label.startswith("Events per hour (UTC) by status") or label

    step("the_events_page_draws_a_histogram", histogram)

    def search():
        field = driver.find_element(By.NAME, "action")
        field.clear()
        field.send_keys("patient.*")
        driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
        wait.until(lambda d: "action=patient" in d.current_url)
        return driver.find_element(By.CSS_SELECTOR, f'a[href="/console/events/{event_id}"]') is not None

    step("search_finds_the_event", search)

    def proof_status():
        status = driver.find_element(By.ID, "proof-status")
        wait.until(lambda d: status.text.startswith(("verified", "failed")))
        return status.text

    def open_event():
        driver.find_element(By.CSS_SELECTOR, f'a[href="/console/events/{event_id}"]').click()
        wait.until(lambda d: d.current_url.endswith(f"/console/events/{event_id}"))
        status = proof_status()
        return status.startswith("verified") or status

    step("open_the_event_and_see_it_verified", open_event)
    audit("event")

    def tampered_event():
        driver.get(f"{base}/console/events/{tampered_id}")
        status = proof_status()
        return status.startswith("failed: the event does not hash") or status

    step("see_a_tampered_event_fail", tampered_event)

    def acknowledge_an_alert():
        driver.get(f"{base}/console/alerts")
        audit("alerts")
        button = driver.find_element(By.XPATH, "//button[text()='Acknowledge']")
        button.click()
        wait.until(staleness_of(button))
        return bool(driver.find_elements(By.XPATH, "//td[text()='acknowledged']")) and not driver.find_elements(
            By.XPATH, "//button[text()='Acknowledge']"
        )

    step("acknowledge_an_alert", acknowledge_an_alert)

    def verify_the_trail():
        driver.get(f"{base}/console/integrity")
        audit("integrity")
        button = driver.find_element(By.XPATH, "//button[text()='Verify the whole trail now']")
        button.click()
        wait.until(staleness_of(button))
        # It runs in the background while the page follows it; the altered
        # event is in the trail: the run, once in the history, must find it.
        wait.until(lambda d: d.find_elements(By.XPATH, "//td[text()='failed']"))
        return not driver.find_elements(By.XPATH, "//td[text()='verified']")

    step("verify_the_trail_and_find_the_alteration", verify_the_trail)

    def follow_a_run_live():
        # Another worker's run: the page shows its progress, and htmx reads
        # the live part again until the run ends, without reloading the page.
        try:
            WebDriverWait(driver, 30).until(
                lambda d: d.get(f"{base}/console/integrity") or "Verification running" in d.page_source
            )
        except Exception:
            return "the run never showed: " + driver.find_element(By.TAG_NAME, "main").text[:500]
        audit("integrity_running")
        driver.execute_script("window.stillTheSamePage = true")
        loaded = driver.execute_script("return typeof htmx")
        open(os.path.join(out, "seen-running"), "w").close()
        try:
            WebDriverWait(driver, 30).until(lambda d: "Verification running" not in d.page_source)
        except Exception:
            return f"htmx {loaded}; the page kept: " + driver.find_element(By.ID, "live").get_attribute("outerHTML")[:800] + str(driver.get_log("browser"))
        same = driver.execute_script("return window.stillTheSamePage === true")
        return (loaded == "object" and same) or f"htmx: {loaded}, same page: {same}"

    step("follow_another_run_without_reloading", follow_a_run_live)

    def replay_a_dead_letter():
        driver.get(f"{base}/console/destinations")
        audit("destinations")
        button = driver.find_element(By.XPATH, "//button[text()='Replay']")
        button.click()
        wait.until(staleness_of(button))
        return driver.current_url.endswith("/console/destinations") and "notice" not in driver.page_source

    step("replay_a_dead_letter", replay_a_dead_letter)

    for page in ("gdpr", "reports"):
        driver.get(f"{base}/console/{page}")
        audit(page)

    def sign_out():
        driver.find_element(By.CSS_SELECTOR, "header form button").click()
        wait.until(lambda d: d.current_url.endswith("/console/login"))
        driver.get(f"{base}/console/events")
        return driver.current_url.endswith("/console/login")

    step("sign_out_closes_the_pages", sign_out)

    def operators():
        sign_in(operator_key)
        driver.get(f"{base}/console/operators")
        audit("operators")
        return "Internal errors" in driver.find_element(By.TAG_NAME, "main").text

    step("an_operator_sees_the_operators_page", operators)
finally:
    driver.quit()

print(json.dumps({"steps": steps, "pages": pages, "errors": errors}))
