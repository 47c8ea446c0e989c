"""The dashboard page in headless Chromium (selenium), against the real server.

Starts ``run_search.py dashboard`` in a subprocess on 127.0.0.1 and a free port, opens the page,
reads the scatter from plotly's ``gd.data``, clicks a plotted point with a real mouse click
(selenium ActionChains at the point's pixel position, computed from plotly's axes) and a front
table row, checks the detail view, checks that a trial written while the page is open appears
(the page polls the API), and saves a screenshot to ``runs/dashboard_browser.png``.

Skipped only when chromium/chromedriver are absent and the environment variable CI is unset;
in CI it always runs (install with .ci/install_browser.sh). SFN_CHROMIUM / SFN_CHROMEDRIVER
override the binaries' paths.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "runs" / "dashboard_browser.png"


def _find(env: str, *names: str) -> str | None:
    """$env if set (must exist), else the first of ``names`` on PATH or in /usr/bin."""
    if os.environ.get(env):
        return os.environ[env] if os.path.exists(os.environ[env]) else None
    for n in names:
        p = shutil.which(n) or (f"/usr/bin/{n}" if os.path.exists(f"/usr/bin/{n}") else None)
        if p:
            return p
    return None


pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = _find("SFN_CHROMIUM", "chromium", "chromium-browser")
CHROMEDRIVER = _find("SFN_CHROMEDRIVER", "chromedriver")

if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("chromium/chromedriver not installed (run .ci/install_browser.sh); "
                "the test runs whenever CI is set", allow_module_level=True)

from test_dashboard_api import FIDELITY, fill_db  # noqa: E402  (tests/ is on sys.path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with {proc.returncode}: "
                               f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"dashboard did not answer {url} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("browser") / "results.db"
    expect = fill_db(str(db))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_search.py"), "dashboard", "--db", str(db),
         "--port", str(port), "--poll-seconds", "1"],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url + "api/health", proc)
        health = json.loads(urllib.request.urlopen(url + "api/health", timeout=5).read())
        assert health["readonly"] is True
        yield url, str(db), expect
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("CI is set but chromium/chromedriver are missing: run .ci/install_browser.sh")
    profile = tempfile.mkdtemp(prefix="sfn-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1500,1900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


TRACES_JS = """
const gd = document.getElementById('scatter');
if (!gd || !gd.data) return null;
return gd.data.map(t => ({name: t.name, n: (t.x || []).length, text: t.text || null,
                          ids: t.customdata || []}));
"""

# Pixel position (relative to the plot div's top-left corner) of point i of trace `name`.
POINT_XY_JS = """
const [name, i] = arguments;
const gd = document.getElementById('scatter');
const t = gd.data.find(t => t.name === name);
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
return {x: xa._offset + xa.l2p(t.x[i]), y: ya._offset + ya.l2p(t.y[i]), id: t.customdata[i],
        w: gd.getBoundingClientRect().width, h: gd.getBoundingClientRect().height};
"""


def _wait(drv, fn, timeout=30.0, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(drv, timeout, poll_frequency=0.2).until(lambda d: fn(d), message=what)


def _no_console_errors(drv) -> None:
    """No JS exception, failed request or CSP violation was logged by the page."""
    severe = [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


FAMILY_TRACES_JS = """
const gd = document.getElementById('family-plot');
if (!gd || !gd.data) return null;
return gd.data.map(t => ({name: t.name, n: (t.x || []).length, text: t.text || null}));
"""


def _add_family(db: str, name: str = "fam") -> list[dict]:
    """A family scaled from XS with the generic analytic predictor, saved as `scale` saves it
    (comparison rows in config); returns the comparison rows."""
    from latency_models.predictor import LatencyPredictor, prior_coef
    from results.families import save_family
    from results.store import ResultsStore
    from search.scaling import Coefficients, family_comparison, scale_family
    from search_space.spec import PRESETS

    pred = LatencyPredictor("generic-analytic", prior_coef(None))
    t = pred.predict(PRESETS["XS"])[0]
    fam = scale_family(PRESETS["XS"], [t, t * 1.8], pred, coefficients=Coefficients(1.2, 1.1, 1.15))
    members = [m.to_dict() for m in fam.members]
    rows = family_comparison(members, pred)
    with ResultsStore(db) as store:
        save_family(store, name, base_spec=fam.base, base_source="XS", device=fam.device,
                    predictor_version=fam.predictor_version,
                    coefficients=fam.coefficients.to_dict(),
                    config={**fam.config(), "comparison": rows},
                    members=[{**m.to_dict(), "spec": m.spec} for m in fam.members])
    return rows


def _add_supernet_rung(db: str) -> list[int]:
    """Three candidates of study "demo" scored on a supernet (as `search --proxy supernet`
    records them); returns their trial ids, sorted."""
    from results.schema import SUPERNET
    from results.store import ResultsStore
    from search.proxy.record import TrialRecorder
    from search_space.space import DEFAULT_SPACE

    with ResultsStore(db) as store:
        rec = TrialRecorder(store, store.study_id("demo"), FIDELITY, rung=SUPERNET)
        for i, spec in enumerate(DEFAULT_SPACE.sample_many(3, seed=11)):
            key = f"sn-{i:05d}-{spec.arch_hash}"
            rec.start(key, spec, config={"kind": "candidate"}, seed=0)
            rec.finish(key, "COMPLETED", {"score": -1.0 - i, "val_loss": 1.0 + i,
                                          "latency_ms": 0.5 + i, "latency_std_ms": 0.05},
                       reached=FIDELITY)
        ids = sorted(t["id"] for t in store.trials(store.study_id("demo"), rung=SUPERNET))
    return ids


def _family_table(drv) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.text.split()[0] for r in drv.find_elements(By.CSS_SELECTOR, "#family-table tbody tr")]


def _traces(drv) -> dict:
    return {t["name"]: t for t in (drv.execute_script(TRACES_JS) or [])}


def test_dashboard_in_browser(server, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, db, exp = server
    driver.get(url)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1"
          and _traces(d).get("Pareto front"), what="page ready with a scatter")
    # No request left the machine: every resource came from our server.
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(url) for r in resources), resources
    assert not driver.execute_script(
        "return [...document.scripts].some(s => s.src && !s.src.startsWith(location.origin))")

    tr = _traces(driver)
    n_front, n_dom = tr["Pareto front"]["n"], tr["dominated"]["n"]
    assert n_front + n_dom == len(exp["full"])
    assert n_front == len(exp["front"]) and n_dom > 0
    assert sorted(tr["Pareto front"]["ids"]) == sorted(p["trial_id"] for p in exp["front"])
    assert tr["baselines"]["text"] == ["XS", "S", "L1", "L3"]
    assert tr["baselines"]["ids"] == [exp["baselines"][n]["trial_id"]
                                      for n in ("XS", "S", "L1", "L3")]
    rows = driver.find_elements(By.CSS_SELECTOR, "#front-table tbody tr")
    assert len(rows) == len(exp["front"])
    studies = [r.text.split()[0] for r in
               driver.find_elements(By.CSS_SELECTOR, "#studies-table tbody tr")]
    assert studies == ["demo", "empty"]

    # 1) A real mouse click on a dominated point (hover + click through plotly's drag layer).
    pos = driver.execute_script(POINT_XY_JS, "dominated", 0)
    gd = driver.find_element(By.ID, "scatter")
    ActionChains(driver).move_to_element_with_offset(
        gd, int(pos["x"] - pos["w"] / 2), int(pos["y"] - pos["h"] / 2)).pause(0.3).click().perform()
    _wait(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("data-trial-id")
          == str(pos["id"]), what=f"detail of clicked point (trial {pos['id']})")
    detail = driver.find_element(By.ID, "detail").text
    assert "Stages" in detail and "Per-epoch curves" in detail
    assert f"export --trial {pos['id']}" in driver.find_element(By.ID, "commands").text
    # The detail draws the trial's per-epoch curve (3 epochs).
    n_epochs = driver.execute_script(
        "const g = document.getElementById('epochs'); return g.data ? g.data[0].x.length : 0")
    assert n_epochs == FIDELITY["epochs"]

    # 2) A click on the front table row of the fastest front member.
    fastest = min(exp["front"], key=lambda p: p["latency_ms"])
    row = driver.find_element(By.CSS_SELECTOR,
                              f"#front-table tbody tr[data-trial-id='{fastest['trial_id']}']")
    row.click()
    _wait(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("data-trial-id")
          == str(fastest["trial_id"]), what="detail of the clicked front row")
    # The selected point is ringed on the scatter.
    _wait(driver, lambda d: (_traces(d).get("selected") or {}).get("ids") == [fastest["trial_id"]],
          what="selected marker")

    # 3) Live update: a trial committed by a writer shows up without reloading (page polls).
    from results.store import ResultsStore
    from search_space.spec import ArchSpec
    writer = ResultsStore(db)
    spec = ArchSpec(depths=(1, 1, 2, 1), widths=(16, 24, 32, 48), mlp_ratios=(2, 2, 2, 2),
                    attn_blocks=(0, 0, 1, 1))
    h = writer.upsert_architecture(spec)
    tid = writer.start_trial(writer.study_id("demo"), "live", h, config={"kind": "candidate"},
                             seed=0)
    writer.finish_trial(tid, "COMPLETED", metrics={"top1": 20.0, "latency_ms": 5.0},
                        fidelity_reached=FIDELITY)
    writer.close()
    _wait(driver, lambda d: tid in (_traces(d).get("dominated") or {}).get("ids", []),
          timeout=20, what="polled update with the new trial")

    # 4) A family saved by a writer (as `scale` does) appears in the families view by polling.
    assert "no families" in driver.find_element(By.ID, "family-note").text
    rows = _add_family(db)
    _wait(driver, lambda d: _family_table(d) == [r["baseline"] for r in rows], timeout=20,
          what="family comparison table after polling")
    ft = {t["name"]: t for t in driver.execute_script(FAMILY_TRACES_JS)}
    assert ft["family (fam)"]["n"] == 2 and ft["SwiftFormer"]["text"] == ["XS", "S", "L1", "L3"]

    # 5) A supernet rung written to the study: the rung control appears (polling), and choosing
    # it draws that rung's points by their supernet score, never mixed with trained top-1.
    rung = driver.find_element(By.ID, "rung-control")
    assert not rung.is_displayed()  # one rung so far
    sn_ids = _add_supernet_rung(db)
    _wait(driver, lambda d: d.find_element(By.ID, "rung-control").is_displayed(), timeout=20,
          what="rung control after polling")
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element(By.ID, "rung-select")).select_by_value("supernet")
    _wait(driver, lambda d: sorted(_traces(d).get("dominated", {}).get("ids", [])
                                   + _traces(d).get("Pareto front", {}).get("ids", [])) == sn_ids,
          what="the supernet rung's points")
    assert driver.execute_script("return document.getElementById('scatter')._fullLayout"
                                 ".yaxis.title.text").startswith("supernet score")
    assert driver.find_element(By.CSS_SELECTOR, "#front-table thead").text.startswith(
        "trial key supernet score")
    Select(driver.find_element(By.ID, "rung-select")).select_by_value("standalone")
    _wait(driver, lambda d: tid in (_traces(d).get("dominated") or {}).get("ids", []),
          what="back on the stand-alone rung")

    _no_console_errors(driver)
    driver.execute_script("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_offline_report_in_browser(driver, tmp_path):
    """The report file draws the same scatter from its inlined data, with no server at all."""
    from selenium.webdriver.common.by import By

    from results.dashboard.page import build_report
    from results.store import ResultsStore

    db = tmp_path / "results.db"
    exp = fill_db(str(db))
    rows = _add_family(str(db), "reported")
    out = tmp_path / "report.html"
    with ResultsStore(str(db), readonly=True) as store:
        build_report(store, out, db_label=str(db))
    driver.get(out.as_uri())
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1"
          and _traces(d).get("Pareto front"), what="report ready with a scatter")
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [r for r in resources if r.startswith(("http:", "https:"))], resources
    tr = _traces(driver)
    assert tr["Pareto front"]["n"] + tr["dominated"]["n"] == len(exp["full"])
    assert tr["baselines"]["text"] == ["XS", "S", "L1", "L3"]
    first = exp["front"][0]["trial_id"]
    driver.find_element(By.CSS_SELECTOR, f"#front-table tbody tr[data-trial-id='{first}']").click()
    _wait(driver, lambda d: d.find_element(By.ID, "detail").get_attribute("data-trial-id")
          == str(first), what="report detail of a front row")
    href = driver.find_element(By.ID, "csv-link").get_attribute("href")
    assert href.startswith("blob:")  # CSV built in the page from the inlined front
    assert _family_table(driver) == [r["baseline"] for r in rows]  # the family view, offline
    _no_console_errors(driver)
