"""The live web page in a real browser: Debian's headless chromium driven by Selenium.

The page is served by the real Tiled server (``/opmap/live/``) and reads Tiled's HTTP API
with the key in the ``Authorization`` header. The values it shows (DOM text with ids) are
compared with the products read through a real Tiled client: once over the shared short
rehearsal, once while maps of that rehearsal land one by one in a fresh server, read with a
reader key typed into the page's key field.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opmap.callbacks.tiled_products import MAP_DIM, TiledProductWriter, read_latest, versions
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.service import create_key, start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.web import live_page_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
_WAIT_S = 60.0
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium through chromedriver (both from Debian: ``.ci/run`` installs them)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,1300")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _shown(driver: Any, element_id: str) -> float:
    """The number the page shows in ``element_id`` ("nan" where no pixel was finite)."""
    return float(_text(driver, element_id))


def _wait_for(driver: Any, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"page never showed {what}; error: {_text(driver, 'error')!r}")


def _latest_mean(products: Any, name: str) -> float:
    return _finite_mean(products.arrays[name].values[-1])


def _finite_mean(values: np.ndarray) -> float:
    """Mean of the finite values, NaN when there are none (the page then shows "nan")."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def test_the_page_shows_the_rehearsal_products_as_tiled_serves_them(
    rehearsal: Any, rehearsal_server: Any, browser: Any, tmp_path: Path
) -> None:
    client = rehearsal_server.client()
    products = read_latest(client["processed"], rehearsal.experiment_id)
    n_maps = products.arrays["c_perp"].values.shape[0]
    url = live_page_url(rehearsal_server.url, api_key=rehearsal_server.api_key, poll_s=1)
    browser.get(url)
    _wait_for(browser, lambda: _text(browser, "n-maps") == str(n_maps), f"{n_maps} maps")

    assert rehearsal_server.api_key not in browser.current_url  # dropped from the address
    assert _text(browser, "experiment-id") == rehearsal.experiment_id  # the latest run's
    # the newest version: v1 is the live analysis's; a replay test sharing this session's
    # rehearsal (on the same xdist worker) may have added v2, v3, ... before this test
    newest = versions(client["processed"], rehearsal.experiment_id)[-1]
    assert _text(browser, "version") == newest
    latest_run = client["raw"][rehearsal.map_uids[-1]].metadata
    assert _text(browser, "status").startswith(latest_run["stop"]["exit_status"])
    for family in ("perp", "par"):
        c_mean = _latest_mean(products, f"c_{family}")
        assert _shown(browser, f"mean-c-{family}") == pytest.approx(c_mean, abs=1e-5, nan_ok=True)
        if f"x_li_{family}" not in products.arrays:  # only calibrated families have x
            assert not browser.find_elements("id", f"mean-x-{family}")
            continue
        x_mean = _latest_mean(products, f"x_li_{family}")
        assert _shown(browser, f"mean-x-{family}") == pytest.approx(x_mean, abs=1e-4, nan_ok=True)
    assert "x_li_perp" in products.arrays  # the front family is calibrated by default
    grains = products.arrays["grains_total"].values[-1]
    assert float(_text(browser, "grains-latest")) == grains
    phases = {e.get_attribute("id") for e in browser.find_elements("css selector", "canvas")}
    assert {"map-phase-lco-003", "map-phase-li-110", "map-c-perp"} <= phases
    map_marks = browser.find_elements("css selector", "#echem-plot line.marker")
    assert len(map_marks) == n_maps  # one dashed line per map time
    screenshot = tmp_path / "live-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(_PNG_MAGIC)
    log = rehearsal_server.log_file.read_text()
    assert "/api/v1/array/full/processed/" in log  # the page read arrays over HTTP ...
    assert rehearsal_server.api_key not in log  # ... never with the key in a logged URL


def _one_map(products: Any, index: int) -> dict[str, Any]:
    """Map ``index`` of every per-map array of ``products`` (leading dim ``map`` kept)."""
    return {
        name: replace(labelled, values=labelled.values[index : index + 1])
        for name, labelled in products.arrays.items()
        if labelled.dims[:1] == (MAP_DIM,)
    }


def test_the_page_follows_maps_as_they_land_with_a_reader_key(
    rehearsal: Any, rehearsal_server: Any, browser: Any, tmp_path: Path
) -> None:
    stored = read_latest(rehearsal_server.client()["processed"], rehearsal.experiment_id)
    settings = OpmapSettings(data_dir=tmp_path / "live")
    with start_server_subprocess(settings) as server:
        processed = ensure_layout(server.client())["processed"]
        reader_key = create_key(server.settings, "collaborator", "reader", proposals=["p-live"])
        browser.get(live_page_url(server.url, experiment_id="lco-live", poll_s=0.5))
        _wait_for(browser, lambda: "401" in _text(browser, "error"), "401 without a key")
        assert browser.find_element("id", "key-form").is_displayed()
        browser.find_element("id", "key-input").send_keys(reader_key + "\n")

        writer = TiledProductWriter(processed, "lco-live", proposal="p-live")
        static = {k: v for k, v in stored.coords.items() if v.dims != (MAP_DIM,)}
        for index in range(stored.arrays["c_perp"].values.shape[0]):
            coords = {**static, "map": replace(stored.coords["map"], values=np.array([index]))}
            writer.append_map(_one_map(stored, index), coords=coords)
            n = str(index + 1)
            _wait_for(browser, lambda n=n: _text(browser, "n-maps") == n, f"{n} maps")
            # n-maps was once shown before the c panel existed (one CI run): wait for the panel
            _wait_for(browser, lambda: browser.find_elements("id", "mean-c-perp"), "the c mean")
            c_mean = _latest_mean(read_latest(processed, "lco-live"), "c_perp")
            assert _shown(browser, "mean-c-perp") == pytest.approx(c_mean, abs=1e-5, nan_ok=True)
        assert _text(browser, "error") == ""
        assert _text(browser, "experiment-id") == "lco-live"
