"""Drives the Fleetward console in a real browser (Debian's chromium through selenium).

Run by ConsoleBrowserTests with: BASE OPERATOR_TOKEN OWNER_TOKEN OWN_DEVICE OTHER_DEVICE SCREENSHOTS.
Prints one JSON object of what it saw; the Swift test asserts on it (and on the server side).
"""
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, operator_token, owner_token, own_device, other_device, shots = sys.argv[1:7]
seen = {"steps": []}


def step(name):
    seen["steps"].append(name)


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(60)


def text(element_id):
    return driver.find_element(By.ID, element_id).text


def submit(element_id, by=By.ID):
    """Clicks a control that loads another page and waits until that page has replaced this one
    (a click returns before the navigation it starts: on a loaded machine the old page is still there)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, element_id).click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def sign_in(token):
    driver.get(base + "/console/sign-in")
    driver.find_element(By.ID, "token").send_keys(token)
    submit("sign-in")


try:
    # A wrong token is refused, on the page.
    sign_in("fwt_0123456789abcdef_not-a-real-secret")
    seen["badTokenError"] = text("error")
    step("bad token refused")

    # The operator signs in and lands on the overview.
    sign_in(operator_token)
    seen["overviewTitle"] = driver.title
    seen["overview"] = {
        state: int(text("count-" + state)) for state in ["allowed", "pending", "active", "suspended", "revoked", "stolen"]
    }
    seen["totalDevices"] = int(text("total-devices"))
    seen["liveConnections"] = int(text("live-connections"))
    seen["cookieVisibleToScript"] = driver.execute_script("return document.cookie")
    driver.save_screenshot(shots + "/overview.png")
    step("overview")

    driver.get(base + "/console/devices")
    seen["devicesListed"] = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#devices a")]
    driver.save_screenshot(shots + "/devices.png")
    step("devices")

    # The device whose metadata holds a <script>: shown as text, never run.
    driver.get(base + "/console/devices/" + own_device)
    seen["deviceTitle"] = driver.title
    seen["metadataText"] = driver.find_element(By.CSS_SELECTOR, "#metadata td").text
    seen["scriptsInMetadata"] = len(driver.find_elements(By.CSS_SELECTOR, "#metadata script"))
    seen["pwned"] = driver.execute_script("return window.fleetwardPwned === true || document.title.indexOf('pwned') >= 0")
    seen["liveBefore"] = int(text("device-live"))
    driver.save_screenshot(shots + "/device.png")
    step("device page")

    # Revoke from the device page, through its confirmation.
    submit("action-revoke")
    seen["confirmText"] = driver.find_element(By.CSS_SELECTOR, "form.confirm p").text
    driver.save_screenshot(shots + "/confirm-revoke.png")
    seen["revokedAt"] = time.time()
    submit("confirm")
    seen["stateAfter"] = text("device-state")
    live = None
    for _ in range(100):
        driver.get(base + "/console/devices/" + own_device)
        live = int(text("device-live"))
        if live == 0:
            break
        time.sleep(0.05)
    seen["liveAfter"] = live
    seen["liveZeroAt"] = time.time()
    driver.save_screenshot(shots + "/device-revoked.png")
    step("revoked")

    driver.get(base + "/console/audit?verify=1")
    seen["auditVerification"] = text("verification")
    driver.save_screenshot(shots + "/audit.png")
    driver.get(base + "/console/security-events")
    driver.save_screenshot(shots + "/security-events.png")
    step("audit")

    # Sign out: the session ends on the server too.
    submit("nav .sign-out button", By.CSS_SELECTOR)
    driver.get(base + "/console/devices")
    seen["afterSignOutURL"] = driver.current_url
    step("signed out")

    # An owner sees only their own devices; another owner's device does not exist for them.
    sign_in(owner_token)
    seen["ownerLandedOn"] = driver.current_url
    seen["ownerDevices"] = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#devices a")]
    driver.save_screenshot(shots + "/owner-devices.png")
    driver.get(base + "/console/devices/" + other_device)
    seen["otherDeviceTitle"] = driver.title
    seen["otherDeviceError"] = text("error")
    driver.get(base + "/console/devices?owner=someone-else")
    try:
        seen["ownerFilterError"] = text("error")
    except NoSuchElementException:
        seen["ownerFilterError"] = None
    step("owner")

    seen["consoleErrors"] = [
        entry["message"] for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
finally:
    driver.quit()
print(json.dumps(seen))
