"""Reading the HTML report as a reader would: `snakemake --report` opened in
a real headless browser (Debian's chromium through chromium-driver, driven by
selenium). The report is a JavaScript app, so :func:`check_report` clicks
through it: every table and figure is listed and opens. A screenshot of every
opened result is kept under test-artifacts/report/. Called by the smoke
workflow test, which has the run the report is built from."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

from conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts" / "report"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, DRIVER):
        assert shutil.which(path), f"{path} is missing: apt-get install chromium chromium-driver (README test command)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def click_text(driver, text: str):
    """Click the innermost visible element whose own text is ``text``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    xpath = f"//*[normalize-space(text())='{text}']"
    element = WebDriverWait(driver, 30).until(ec.element_to_be_clickable((By.XPATH, xpath)))
    click(driver, element)
    return element


def click(driver, element) -> None:
    """Click ``element`` once it is scrolled to the middle of the window. While
    the app is still laying out the list (the content pane of the previous
    item opening beside it), another cell can lie over it for a moment: try
    again then, and dispatch the click to the element itself if it stays
    covered (the app's handler is the same)."""
    import time

    from selenium.common.exceptions import ElementClickInterceptedException

    for _ in range(10):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        try:
            element.click()
            return
        except ElementClickInterceptedException:
            time.sleep(0.3)
    driver.execute_script("arguments[0].click();", element)


def open_result(driver, label: str, filename: str) -> None:
    """In the open category, click the view button of the row labelled
    ``label`` and wait until the content pane shows ``filename`` (an image, or
    an HTML page in a frame)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    row = WebDriverWait(driver, 30).until(ec.presence_of_element_located(
        (By.XPATH, f"//tr[td[normalize-space(.)='{label}']]")))
    click(driver, row.find_element(By.XPATH, ".//a"))
    tag, mime = ("img", "data:image/png") if filename.endswith(".png") else ("iframe", "data:text/html")
    shown = WebDriverWait(driver, 30).until(ec.visibility_of_element_located(
        (By.XPATH, f"//{tag}[starts-with(@src, '{mime}') and contains(@src, 'filename={filename};')]")))
    assert shown.size["height"] > 50 and shown.size["width"] > 50
    if tag == "iframe":  # the page inside the frame holds its table
        driver.switch_to.frame(shown)
        assert driver.find_elements(By.TAG_NAME, "td"), f"{filename} shows no table"
        driver.switch_to.default_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{filename.rsplit('.', 1)[0]}.png"))


def open_category(driver, name: str) -> None:
    """Back to the list of result categories, then into ``name``."""
    from selenium.webdriver.common.by import By

    if not driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{name}']"):
        click_text(driver, "Results")
    click_text(driver, name)


def check_report(workflow_copy, root) -> None:
    """Build the report of the run in ``workflow_copy`` and open every item."""
    from selenium.webdriver.common.by import By

    workflow_copy.snakemake("--report", "report.html")
    report = workflow_copy.folder / "report.html"
    assert report.stat().st_size > 100_000
    tables = sorted(p.stem for p in (root / "tables").glob("table*.html"))
    figures = sorted(p.stem for p in (root / "figures").glob("*.png"))
    assert len(tables) >= 9 and len(figures) >= 8
    with browser() as driver:
        driver.get(report.as_uri())
        open_category(driver, "Tables")
        for table in tables:
            open_result(driver, table, f"{table}.html")
        open_category(driver, "Figures")
        for figure in figures:
            open_result(driver, figure, f"{figure}.png")
        open_category(driver, "Paper vs reproduction")
        open_result(driver, "paper comparison", "paper_comparison.html")
        open_category(driver, "Claims")
        open_result(driver, "claims", "claims.html")
        open_category(driver, "Provenance")
        open_result(driver, "provenance", "provenance.html")
        driver.switch_to.frame(driver.find_element(By.XPATH, "//iframe[contains(@src, 'filename=provenance.html;')]"))
        page = driver.find_element(By.TAG_NAME, "body").text
        for text in ("git commit", "torchvision", "sha256 of model.pt", "eq-rotation-s1", "table_audit built",
                     "claims built", "figure1 not built", "Resolved config"):
            assert text in page, text
        driver.switch_to.default_content()
        driver.save_screenshot(str(ARTIFACTS / "report.png"))
