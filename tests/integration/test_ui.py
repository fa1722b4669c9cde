"""`artfs ui` in a real browser (Debian's headless Chromium driven by Selenium): the pages load
with no console error, the lineage graph is drawn and its nodes navigate, the version list
pages, store strings are shown as text (never run as HTML), and a diff shows what changed.
Screenshots are kept in $ARTFS_TEST_ARTIFACTS (default /tmp/artfs-test-artifacts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request

import pytest
from conftest import ARTFS_BIN

import artfs
from artfs.names import ArtifactName

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
ARTIFACTS = os.environ.get("ARTFS_TEST_ARTIFACTS", "/tmp/artfs-test-artifacts")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and shutil.which("dot")),
    reason="needs Debian's chromium, chromium-driver and graphviz (scripts/setup.sh)",
)


def _log(store: artfs.Store, name: str, type_: str, files: dict[str, str], run: str, monkeypatch, **kw):
    monkeypatch.setenv("ARTFS_RUN_ID", run)
    art = artfs.Artifact(name, type_, **kw)
    for path, text in files.items():
        with art.new_file(path) as f:
            f.write(text)
    return store.log_artifact(art)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A store with 60 versions of p/raw (one page and a bit), lineage prep -> raw -> train ->
    model -> eval, and hostile strings in a description, metadata and a file name."""
    root = tmp_path_factory.mktemp("ui")
    store = artfs.Store(str(root / "store"), str(root / "cache"))
    mp = pytest.MonkeyPatch()
    try:
        _log(
            store,
            "p/raw",
            "dataset",
            {"data/a.txt": "a", f"odd/{'<b>'}name.txt": "x"},
            "prep",
            mp,
            description=XSS,
            metadata={"source": XSS, "rows": 1},
        )
        for i in range(1, 60):
            files = {"data/a.txt": "a" if i % 2 else "A", f"data/n{i}.txt": str(i)}
            _log(store, "p/raw", "dataset", files, "prep", mp, metadata={"rows": i})
        mp.setenv("ARTFS_RUN_ID", "train")
        store.use_artifact("p/raw:v59")
        _log(store, "p/model", "model", {"weights.bin": "w" * 5000}, "train", mp, description="trained")
        mp.setenv("ARTFS_RUN_ID", "eval")
        store.use_artifact("p/model:v0")
        for i in range(60):  # a project of more artifacts than one page shows
            store.registry.ensure_artifact(ArtifactName("many", f"a{i:03d}"), "dataset")
    finally:
        mp.undo()
    return store


@pytest.fixture(scope="module")
def server(seeded):
    env = {**os.environ, "ARTFS_STORE": seeded.url, "ARTFS_CACHE": seeded.cache_dir}
    proc = subprocess.Popen(
        [ARTFS_BIN, "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        yield url.rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def visit(browser, url: str) -> None:
    browser.get(url)
    assert_clean(browser)


def assert_clean(browser) -> None:
    """No console error or warning on the page just loaded, and no store string ran as script."""
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    assert browser.execute_script("return window.__pwned === undefined")


def shot(browser, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"ui-{name}.png")
    assert browser.save_screenshot(path)
    return path


def link(browser, text: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.LINK_TEXT, text)


def test_browse_projects_artifacts_paged_versions_and_files(server, browser):
    from selenium.webdriver.common.by import By

    visit(browser, server + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Projects"
    link(browser, "p").click()
    assert_clean(browser)
    assert browser.current_url == server + "/p/p"
    link(browser, "raw").click()
    assert_clean(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "table tr td:first-child a")
    assert [r.text for r in rows][:2] == ["v59", "v58"] and len(rows) == 50
    assert "page 1 of 2" in browser.page_source
    link(browser, "older →").click()
    assert_clean(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "table tr td:first-child a")
    assert [r.text for r in rows] == [f"v{i}" for i in range(9, -1, -1)]
    shot(browser, "versions")
    link(browser, "v0").click()
    assert_clean(browser)
    assert browser.current_url == server + "/p/p/raw/v0"
    facts = browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert XSS in facts and "dataset" in facts  # the description, shown as the text it is
    assert XSS.replace('"', '\\"') in browser.find_element(By.TAG_NAME, "pre").text  # metadata, as JSON
    assert "run prep" in facts.replace("· run", "run")
    link(browser, "odd/").click()
    assert_clean(browser)
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table tr td:first-child")]
    assert cells == ["<b>name.txt"]
    shot(browser, "version")


def test_alias_page_redirects_to_its_version(server, browser):
    visit(browser, server + "/p/p/raw/latest")
    assert browser.current_url == server + "/p/p/raw/v59"


def test_lineage_graph_is_drawn_and_its_nodes_navigate(server, browser):
    from selenium.webdriver.common.by import By

    visit(browser, server + "/p/p/model/v0/lineage")
    svg = browser.find_element(By.CSS_SELECTOR, "#graph svg")
    assert svg.size["width"] > 200 and svg.size["height"] > 50  # laid out and drawn, not empty
    titles = {t.get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, "#graph svg g.node title")}
    assert {"p/model:v0", "p/raw:v59", "run train", "run eval", "run prep"} <= titles
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph svg g.edge")) >= 4
    path = shot(browser, "lineage")
    if os.environ.get("ARTFS_UPDATE_DOCS"):  # refreshes the picture the README shows
        shutil.copy(path, os.path.join(os.path.dirname(__file__), "..", "..", "docs", "ui-lineage.png"))
    node = browser.find_element(
        By.XPATH, "//*[name()='g'][contains(@class,'node')][*[name()='title' and text()='run train']]//*[name()='a']"
    )
    node.click()
    assert_clean(browser)
    assert browser.current_url == server + "/run/train"
    assert "p/raw:v59" in browser.page_source and "p/model:v0" in browser.page_source
    link(browser, "p/raw:v59").click()
    assert_clean(browser)
    assert browser.current_url == server + "/p/p/raw/v59"
    link(browser, "Lineage graph").click()
    assert_clean(browser)
    node = browser.find_element(
        By.XPATH, "//*[name()='g'][contains(@class,'node')][*[name()='title' and text()='p/model:v0']]//*[name()='a']"
    )
    node.click()
    assert_clean(browser)
    assert browser.current_url == server + "/p/p/model/v0/lineage"


def test_diff_of_two_versions(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    visit(browser, server + "/p/p/raw")
    Select(browser.find_element(By.NAME, "a")).select_by_visible_text("v0")
    Select(browser.find_element(By.NAME, "b")).select_by_visible_text("v1")
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url.startswith(server + "/diff/p/raw?"))
    assert_clean(browser)
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "1 added · 1 removed · 0 changed · 1 the same" in text
    assert "data/n1.txt" in text and "odd/<b>name.txt" in text
    assert "metadata.source" in text and XSS.replace('"', '\\"') in text and "description" in text
    assert "metadata.rows" not in text  # 1 in both
    shot(browser, "diff")
    visit(browser, server + "/diff/p/raw?a=v1&b=v2")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "1 added · 1 removed · 1 changed · 0 the same" in text
    assert "metadata.rows 1 2" in text and "data/a.txt 1 B 1 B" in text


def test_missing_things_are_clean_404_pages(server):
    for path in (
        "/p/nope",
        "/p/p/nope",
        "/p/p/raw/v999",
        "/p/p/raw/v0/lineage?depth=x",
        "/run/nobody",
        "/p/p/raw/v0?dir=nowhere",
        "/p/..%2f..%2fetc/x",
    ):
        try:
            urllib.request.urlopen(server + path)
            raise AssertionError(f"{path} answered 200")
        except urllib.error.HTTPError as e:
            assert e.code in (400, 404), (path, e.code)
            assert "Traceback" not in e.read().decode()


def test_ui_refuses_a_busy_port_in_one_line(server, seeded):
    port = server.rsplit(":", 1)[1]
    r = subprocess.run(
        [ARTFS_BIN, "ui", "--port", port],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ARTFS_STORE": seeded.url},
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"artfs: error: cannot serve on 127.0.0.1:{port}: Address already in use"]


def test_a_page_asked_for_under_another_host_name_is_refused(server):
    """DNS rebinding: a web site whose name resolves to 127.0.0.1 must not read the page."""
    request = urllib.request.Request(server + "/p/p/raw/v0", headers={"Host": "evil.example:8765"})
    try:
        urllib.request.urlopen(request)
        raise AssertionError("answered under a foreign Host")
    except urllib.error.HTTPError as e:
        assert e.code == 400
    for host in ("127.0.0.1", "localhost"):
        port = server.rsplit(":", 1)[1]
        ok = urllib.request.urlopen(urllib.request.Request(server + "/", headers={"Host": f"{host}:{port}"}))
        assert ok.status == 200


def test_a_project_pages_its_artifacts(server):
    first = urllib.request.urlopen(server + "/p/many").read().decode()
    assert "page 1 of 2" in first and first.count('href="/p/many/a') == 50 and "/p/many/a049" in first
    second = urllib.request.urlopen(server + "/p/many?page=2").read().decode()
    assert "page 2 of 2" in second and second.count('href="/p/many/a') == 10 and "/p/many/a059" in second
