"""Start ``rsretrieve app`` on 127.0.0.1, type a query in headless Chromium, wait for results, click a footprint
on the map, save a screenshot.

    python benchmarks/screenshot_app.py --db demo.lance [--query "a river crossing farmland"] [--out PNG]

Needs Chromium (``apt-get install chromium``, /usr/bin/chromium) and the ``playwright`` Python package (its own
browser download is not used). Prints one JSON line: seconds to load the page, to answer the query, which result
a click on the map highlighted, and the screenshot path. Exits non-zero when the page shows an error or no results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEFAULT_OUT = Path(__file__).parent / "results" / "app-screenshot.png"
VIEWPORT = {"width": 1440, "height": 1000}
# Streamlit scrolls inside its main container, so a full-page screenshot needs a viewport as tall as it
CONTENT_HEIGHT = "() => document.querySelector('[data-testid=stMain]').scrollHeight"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll Streamlit's health endpoint until it answers; fail early if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rsretrieve app exited with code {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the page did not come up at {url} within {timeout:.0f} s")


def is_local(url: str) -> bool:
    """Whether a request stays on this machine (the page itself, data: and blob: URLs)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname in ("127.0.0.1", "localhost")


@contextlib.contextmanager
def running_app(db: Path, port: int, timeout: float = 60) -> Iterator[str]:
    """``rsretrieve app --db DB --port PORT`` in the background; yields its URL, stops it afterwards."""
    command = [sys.executable, "-m", "rsretrieve.cli", "app", "--db", str(db), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # a session of its own: `rsretrieve app` runs Streamlit as a child, and both must stop afterwards
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, timeout)
        yield url
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process group (Streamlit takes a few seconds to stop), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # raises once every process of the group is gone
        except ProcessLookupError:
            break
        process.poll()  # reap the direct child so that it does not linger as a zombie
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


PAGE_K = 12  # the page's default number of results
CLEAR_PX = 20  # a footprint to click has no other result's centre nearer than this


def footprint_to_click(db: Path, query: str) -> tuple[int, tuple[float, float]] | None:
    """The best-ranked result after the first (highlighted already) whose footprint centre lies clear of every
    other result's on the map, and the pixels from the map's centre to it, as the page draws the map: the same
    search, the same fitted view; deck.gl's Web Mercator world is 512 px wide at zoom 0."""
    from app.footprint_map import fitted_view, union_bbox
    from rsretrieve.query import Query
    from rsretrieve.search import Searcher

    hits = [hit for hit in Searcher(db).search(Query.build(text=query, k=PAGE_K)).hits if hit.chip.bbox]
    view = fitted_view(union_bbox(hits))
    world = 512 * 2**view.zoom

    def pixels(lon: float, lat: float) -> tuple[float, float]:
        y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
        return world * (lon + 180) / 360, world * (1 - y / math.pi) / 2

    cx, cy = pixels(view.longitude, view.latitude)
    centres = [pixels((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) for box in (hit.chip.bbox for hit in hits)]
    for rank, (x, y) in enumerate(centres[1:], 2):
        others = centres[: rank - 1] + centres[rank:]
        if all(math.dist((x, y), other) > CLEAR_PX for other in others):
            return rank, (x - cx, y - cy)
    return None  # every result's footprint overlaps another (scenes of several dates): nothing to click for sure


def click_footprint(page, offset: tuple[float, float], rank: int, attempts: int = 5) -> str:
    """Click the map at ``offset`` from its centre until the page highlights result ``rank``; its label.

    deck.gl picks what is under the pointer from its last frame, so on a busy machine the first click may land
    before the map has drawn: hover, wait, click, and try again a few times.
    """
    from playwright.sync_api import expect

    chart = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
    chart.wait_for()
    selected = page.get_by_label("Highlighted on the map")
    for attempt in range(attempts):
        box = chart.bounding_box()
        x, y = box["x"] + box["width"] / 2 + offset[0], box["y"] + box["height"] / 2 + offset[1]
        page.mouse.move(x, y)
        page.wait_for_timeout(500)
        page.mouse.click(x, y)
        try:
            expect(selected).to_have_value(re.compile(rf"^#{rank} ·"), timeout=10_000)
            break
        except AssertionError:
            if attempt == attempts - 1:
                raise
    return selected.input_value()


FIRST_QUERY_JS = """() => {
    const images = [...document.querySelectorAll('[data-testid=stImage] img')];
    const resources = performance.getEntriesByType('resource');
    const kb = (entries) => Math.round(entries.reduce((total, e) => total + e.transferSize, 0) / 1024);
    const sum = (entries) => ({count: entries.length, kb: kb(entries)});
    return {
        images_complete: images.every((img) => img.complete && img.naturalWidth > 0),
        media: sum(resources.filter((e) => e.name.includes('/media/'))),
        scripts: sum(resources.filter((e) => e.initiatorType === 'script' || e.name.endsWith('.js'))),
    };
}"""
NARROW = {"width": 420, "height": 900}
IMAGES_COMPLETE = "() => [...document.querySelectorAll('[data-testid=stImage] img')].every((img) => img.complete)"


def card_columns(page) -> int:
    """How many result cards sit side by side in the first row."""
    boxes = [box for box in (card.bounding_box() for card in page.locator("[class*='st-key-meta-']").all()) if box]
    return sum(1 for box in boxes if abs(box["y"] - boxes[0]["y"]) < 2) if boxes else 0


def full_screenshot(page, path: Path, viewport: dict) -> None:
    """The whole page at ``viewport``'s width (Streamlit scrolls inside its main container)."""
    page.set_viewport_size(viewport)
    page.wait_for_timeout(800)
    page.set_viewport_size({**viewport, "height": max(viewport["height"], page.evaluate(CONTENT_HEIGHT))})
    page.wait_for_timeout(1000)  # let the map and images settle at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def label_and_classify(page, positives: int = 3, negatives: int = 2) -> dict:
    """Type a class, mark results ✓ and ✗ on their cards, press "Find all": the sidebar's counts and the
    classifier's summary line."""
    from playwright.sync_api import expect

    box = page.get_by_label("Class", exact=True)
    box.fill(f"river-{os.getpid()}")  # a class of its own: labels stay in the index folder
    box.press("Enter")
    page.get_by_text("Mark results ✓").wait_for(state="detached")  # the class is taken
    for index in range(positives):
        page.locator("[class*='st-key-pos-'] button:visible").nth(index).click()
        expect(page.get_by_text(f"{index + 1} ✓ · 0 ✗")).to_be_visible(timeout=30_000)
    for index in range(negatives):
        page.locator("[class*='st-key-neg-'] button:visible").nth(positives + index).click()
        expect(page.get_by_text(f"{positives} ✓ · {index + 1} ✗")).to_be_visible(timeout=30_000)
    page.locator(".st-key-classify button:visible").first.click()
    page.get_by_text("across the index").wait_for()
    page.get_by_text("chips score ≥").wait_for()
    layer = page.locator("[data-testid='stDeckGlJsonChart'] canvas")
    page.wait_for_function("() => document.querySelectorAll(\"[data-testid='stDeckGlJsonChart'] canvas\").length >= 2")
    summary = page.locator("[data-testid=stCaptionContainer]", has_text="chips score ≥").first.inner_text()
    return {"labels": f"{positives} ✓ · {negatives} ✗", "classifier": summary, "maps": layer.count()}


def table_and_pages(page) -> dict:
    """Table view, then k = 1000 and the second page of cards: what each shows."""
    page.get_by_text("Table", exact=True).first.click()
    table = page.locator("[data-testid=stDataFrame]:visible").first
    table.wait_for()
    page.get_by_text("Cards", exact=True).first.click()
    slider = page.get_by_role("slider").first
    slider.evaluate("element => element.focus()")  # the thumb is never "stable" enough for a click
    page.keyboard.press("End")
    page.get_by_text(re.compile(r"Results 1–24 of \d+")).first.wait_for()
    page.locator("[class*=st-key-next-page] button:visible").first.click()
    second = page.get_by_text(re.compile(r"Results 25–48 of \d+")).first
    second.wait_for()
    return {"table": True, "paged": second.inner_text()}


def area_to_draw(db: Path, query: str, k: int = 1000) -> tuple[list[list[float]], int]:
    """The corners of a search area over the western part of the results (its east edge through a column of
    chip centres, so that a pixel either way changes nothing) and how many of the ``k`` results it keeps."""
    import shapely

    from app.footprint_map import union_bbox
    from rsretrieve.query import Query
    from rsretrieve.search import Searcher

    hits = [hit for hit in Searcher(db).search(Query.build(text=query, k=k)).hits if hit.chip.footprint]
    minx, miny, maxx, maxy = union_bbox(hits)
    centres = sorted({round((hit.chip.bbox[0] + hit.chip.bbox[2]) / 2, 7) for hit in hits})
    east, pad = centres[len(centres) // 3], 0.02 * max(maxx - minx, maxy - miny)
    corners = [[minx - pad, miny - pad], [east, miny - pad], [east, maxy + pad], [minx - pad, maxy + pad]]
    area = shapely.Polygon(corners)
    return corners, sum(shapely.geometry.shape(hit.chip.footprint).intersects(area) for hit in hits)


def draw_search_area(page, corners: list[list[float]], expected: int, shot: Path | None) -> dict:
    """Turn on "Area (drawn on a map)", click the corners on the page's drawing map (its iframe) and the first
    corner again to close the ring; the count of results the page then shows (waiting up to 30 s for
    ``expected``), and a screenshot of the map."""
    from playwright.sync_api import expect

    started = time.monotonic()
    page.get_by_text("Area (drawn on a map)").click()
    frame = page.frame_locator("iframe[src*=area_draw]").first
    frame.locator("#map path.footprint").wait_for(state="attached")
    drawing = next(f for f in page.frames if "area_draw" in f.url)
    drawing.wait_for_function("() => document.querySelector('#map path.footprint').getAttribute('d').length > 0")
    for lon, lat in [*corners, corners[0]]:  # the first corner again closes the ring
        x, y = drawing.evaluate("([lon, lat]) => toScreen(lon, lat)", [lon, lat])
        frame.locator("#map").click(position={"x": x, "y": y})
    expect(frame.locator("#hint")).to_contain_text(f"Search area: {len(corners)} corners")
    header = page.get_by_text(re.compile(r"^\d+ results? for")).first
    with contextlib.suppress(AssertionError):  # the count shown is reported either way
        expect(header).to_have_text(re.compile(rf"^{expected} results? for"), timeout=30_000)
    drawn = {"drawn_results": int(header.inner_text().split()[0]), "draw_seconds": round(time.monotonic() - started, 2)}
    if shot is not None:
        page.locator("iframe[src*=area_draw]").first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
    return drawn


def query_and_screenshot(
    url: str,
    query: str,
    out: Path,
    chromium: str,
    click: tuple[int, tuple[float, float]] | None,
    narrow_out: Path | None = None,
    area: tuple[list[list[float]], int] | None = None,
    timeout: float = 90,
) -> dict:
    """Open the page, run a text query (timing the first one in this browser session), click a footprint, label
    results and run the classifier, take the wide (and narrow) screenshots, then try the table and the pages."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            outside = []  # requests leaving this machine: the page must work offline
            page.on("request", lambda request: outside.append(request.url) if not is_local(request.url) else None)
            page.set_default_timeout(timeout * 1000)
            started = time.monotonic()
            page.goto(url)
            box = page.get_by_label("Describe what you are looking for")
            box.wait_for()
            loaded = time.monotonic()
            box.fill(query)
            box.press("Enter")
            page.get_by_text("results for").wait_for()
            shown = time.monotonic()
            page.locator("[data-testid='stImage'] img").last.wait_for()
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete)"
            )
            images = time.monotonic()
            page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for()
            mapped = time.monotonic()
            page.wait_for_load_state("networkidle")
            answered = time.monotonic()
            first_query = page.evaluate(FIRST_QUERY_JS)
            errors = page.locator("[data-testid='stAlertContentError']")
            if errors.count():
                raise RuntimeError(f"the page shows an error: {errors.first.inner_text()}")
            highlighted = click_footprint(page, click[1], click[0]) if click else None
            wide_columns = card_columns(page)
            try:
                analyst = label_and_classify(page)
            except Exception:
                full_screenshot(page, out.with_name(out.stem + "-failed.png"), VIEWPORT)  # what the page showed
                raise
            full_screenshot(page, out, VIEWPORT)
            narrow_columns = None
            if narrow_out is not None:
                full_screenshot(page, narrow_out, NARROW)
                narrow_columns = card_columns(page)
                page.set_viewport_size(VIEWPORT)
            browsing = table_and_pages(page)
            drawn = draw_search_area(page, *area, out.with_name(out.stem + "-area.png")) if area else {}
        finally:
            browser.close()
    return {
        "page_seconds": round(loaded - started, 2),
        "query_seconds": round(answered - loaded, 2),
        "first_query": {
            "results_text_s": round(shown - loaded, 2),
            "images_loaded_s": round(images - loaded, 2),
            "map_drawn_s": round(mapped - loaded, 2),
            "network_idle_s": round(answered - loaded, 2),
            **first_query,
        },
        "outside_requests": outside,
        "clicked_rank": click[0] if click else None,
        "highlighted": highlighted,
        "card_columns": {"wide": wide_columns, "narrow": narrow_columns},
        **analyst,
        **browsing,
        **drawn,
        "area_expected": area[1] if area else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, type=Path, help="index folder")
    parser.add_argument("--query", default="a river crossing farmland")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"screenshot PNG (default {DEFAULT_OUT})")
    parser.add_argument("--narrow-out", type=Path, help="also a screenshot 420 px wide (a phone) to this PNG")
    parser.add_argument("--draw", action="store_true", help="also draw a search area on the page's drawing map")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")
    args = parser.parse_args(argv)
    click = footprint_to_click(args.db, args.query)
    area = area_to_draw(args.db, args.query) if args.draw else None
    with running_app(args.db, args.port or free_port()) as url:
        timings = query_and_screenshot(url, args.query, args.out, args.chromium, click, args.narrow_out, area)
    print(json.dumps({**timings, "screenshot": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
