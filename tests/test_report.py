"""`cvtool report` and `--report`: pages made from real runs on the sample photos, opened in a real
headless Chromium (Debian's chromium + chromium-driver, driven by Selenium; nothing is downloaded).

What the page shows is checked against the records themselves (read here with json/csv, not
through the report code): one card per record, failures with their reason, exactly the boxes at
or above the slider's threshold, class toggles, filters, sorting, training-run tables equal to
eval.json, the escaped file name, no console errors, no network requests, a non-blank screenshot.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, jsonl

EVIL = "<img src=x onerror=alert(1)>.jpg"


def _find_browser():
    chromium = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                     if p and os.path.exists(p)), None)
    driver = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and os.path.exists(p)), None)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _find_browser()
    if not chromium or not driver:
        pytest.skip("no Chromium here: apt-get install -y chromium chromium-driver (see README, Development)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1300,2400", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _open(d, page: Path):
    d.get(page.resolve().as_uri())
    d.get_log("browser")  # start each page with empty logs
    return d


def _set_range(d, css: str, value: float):
    d.execute_script("var e = document.querySelector(arguments[0]); e.value = arguments[1];"
                     "e.dispatchEvent(new Event('input'));", css, str(value))


def _visible_boxes(d):
    return d.execute_script(
        "return Array.from(document.querySelectorAll('.box')).filter(b => b.style.display !== 'none')"
        ".map(b => [b.dataset.label, +b.dataset.score]);")


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, cli_module):
    """detect on the six photos, a file with a hostile name (not a picture) and a missing file,
    with --report; also the records as JSONL."""
    tmp = tmp_path_factory.mktemp("report-detect")
    (tmp / EVIL).write_bytes(b"this is not a picture")
    page = tmp / "detect.html"
    res = cli_module("detect", str(SAMPLES), str(tmp / EVIL), str(tmp / "missing.jpg"), "--report", str(page))
    assert res.exit_code == 1, res.stderr  # two inputs failed
    assert "report written to" in res.stderr
    return jsonl(res.stdout), page, tmp


@pytest.fixture(scope="module")
def cli_module():
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    runner = CliRunner()
    return lambda *a, input=None: runner.invoke(app, [str(x) for x in a], input=input, catch_exceptions=False)


def test_one_card_per_record_failures_with_reason_and_escaped_name(browser, detect_run):
    recs, page, _ = detect_run
    d = _open(browser, page)
    assert d.execute_script("return window.cvReport.records") == len(recs) == 8
    titles = [e.get_attribute("title") for e in d.find_elements("css selector", ".card .title")]
    want = [r["source"] for r in recs]
    assert titles == want  # the window is tall enough to show all eight cards, in input order
    failed = {r["source"]: r["error"] for r in recs if not r["ok"]}
    assert len(failed) == 2
    shown = {c.find_element("css selector", ".title").get_attribute("title"): c.find_element("css selector", ".error").text
             for c in d.find_elements("css selector", ".card.failed")}
    assert shown == failed
    rows = [[td.text for td in tr.find_elements("css selector", "td")]
            for tr in d.find_elements("css selector", "#failures tr")[1:]]
    assert sorted(rows) == sorted([k, v] for k, v in failed.items())
    # The hostile name is text: shown literally, no element made from it, no alert.
    evil = [t for t in titles if t.endswith(EVIL)]
    assert len(evil) == 1
    assert any(e.text.endswith(EVIL) for e in d.find_elements("css selector", ".card .title"))
    assert d.execute_script("return document.querySelectorAll('img[src=\"x\"], img:not([src^=\"data:\"])').length") == 0
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text  # noqa: B018
    # The link to the picture is relative and percent-encoded.
    href = d.execute_script("return Array.from(document.querySelectorAll('.card .title a'))"
                            ".map(a => a.getAttribute('href')).find(h => h.indexOf('onerror') >= 0)")
    assert href == "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.jpg"


def test_threshold_slider_hides_exactly_the_boxes_below_it(browser, detect_run):
    recs, page, _ = detect_run
    d = _open(browser, page)
    scores = [det["score"] for r in recs if r["ok"] for det in r["detections"]]
    assert len(_visible_boxes(d)) == len(scores) > 3
    for t in (0.3, 0.5, 0.75, 0.9, 1.0):
        _set_range(d, "#box-thr", t)
        vis = _visible_boxes(d)
        assert sorted(s for _, s in vis) == sorted(s for s in scores if s >= t), t
    _set_range(d, "#box-thr", 0)
    assert len(_visible_boxes(d)) == len(scores)


def test_boxes_sit_where_the_records_put_them(browser, detect_run):
    """The cat's box, measured on screen relative to the thumbnail, matches its pixel box scaled
    by the thumbnail's displayed size (hand arithmetic on the record)."""
    recs, page, _ = detect_run
    cat = next(r for r in recs if r["source"].endswith("cat.jpg"))
    (x1, y1, x2, y2) = cat["detections"][0]["box"]
    W, H = cat["image_size"]["width"], cat["image_size"]["height"]
    d = _open(browser, page)
    geo = d.execute_script("""
        var card = Array.from(document.querySelectorAll('.card')).find(c => c.querySelector('.title').title.endsWith('cat.jpg'));
        var img = card.querySelector('.pic img').getBoundingClientRect(), b = card.querySelector('.box').getBoundingClientRect();
        return [img.left, img.top, img.width, img.height, b.left, b.top, b.width, b.height];""")
    il, it, iw, ih, bl, bt, bw, bh = geo
    assert iw / ih == pytest.approx(W / H, rel=0.02)
    assert bl - il == pytest.approx(x1 / W * iw, abs=1.5)
    assert bt - it == pytest.approx(y1 / H * ih, abs=1.5)
    assert bw == pytest.approx((x2 - x1) / W * iw, abs=1.5)
    assert bh == pytest.approx((y2 - y1) / H * ih, abs=1.5)
    assert d.execute_script("return document.querySelector('.pic img').naturalWidth") <= 320


def test_class_toggles_filters_and_sort(browser, detect_run):
    recs, page, _ = detect_run
    d = _open(browser, page)
    labels = sorted({det["label"] for r in recs if r["ok"] for det in r["detections"]})
    assert d.execute_script("return Array.from(document.querySelectorAll('#class-toggles input')).map(i => i.dataset.label)") == labels
    off = labels[0]
    d.execute_script("var i = document.querySelector('#class-toggles input[data-label=\"' + arguments[0] + '\"]'); i.click();", off)
    vis = _visible_boxes(d)
    assert off not in {lab for lab, _ in vis}
    assert len(vis) == sum(1 for r in recs if r["ok"] for det in r["detections"] if det["label"] != off)
    d.execute_script("document.querySelector('#class-toggles input[data-label=\"' + arguments[0] + '\"]').click();", off)

    def shown():
        return [r for r in d.execute_script("return window.cvReport.shown()")]

    # label filter: the records that found a cat
    d.execute_script("var s = document.getElementById('f-label'); s.value = 'cat'; s.dispatchEvent(new Event('change'));")
    assert shown() == [i for i, r in enumerate(recs) if r["ok"] and any(x["label"] == "cat" for x in r["detections"])]
    d.execute_script("var s = document.getElementById('f-label'); s.value = ''; s.dispatchEvent(new Event('change'));")
    # failures only
    d.find_element("id", "f-failed").click()
    assert shown() == [i for i, r in enumerate(recs) if not r["ok"]]
    assert len(d.find_elements("css selector", ".card")) == 2
    d.find_element("id", "f-failed").click()
    # score filter: best box at least 0.8
    _set_range(d, "#f-score", 0.8)
    best = {i: max((x["score"] for x in r.get("detections") or []), default=None) for i, r in enumerate(recs)}
    assert shown() == [i for i, s in best.items() if s is not None and s >= 0.8]
    _set_range(d, "#f-score", 0)
    # sort by score, high first; records without a score last, in input order
    d.execute_script("var s = document.getElementById('f-sort'); s.value = 'score-desc'; s.dispatchEvent(new Event('change'));")
    scored = sorted((i for i, s in best.items() if s is not None), key=lambda i: (-best[i], i))
    assert shown() == scored + [i for i, s in best.items() if s is None]
    d.execute_script("var s = document.getElementById('f-sort'); s.value = 'name'; s.dispatchEvent(new Event('change'));")
    assert [recs[i]["source"] for i in shown()] == sorted(r["source"] for r in recs)
    d.find_element("id", "f-text").send_keys("coffee")
    assert [recs[i]["source"] for i in shown()] == [str(SAMPLES / "coffee.jpg")]


def test_no_console_errors_no_network_and_csp_blocks_requests(browser, detect_run):
    recs, page, _ = detect_run
    d = browser
    d.get_log("performance")
    d.get(page.resolve().as_uri())
    d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    assert [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    urls = []
    for e in d.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m["method"] == "Network.requestWillBeSent":
            urls.append(m["params"]["request"]["url"])
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    csp = d.execute_script("return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content")
    assert "default-src 'none'" in csp and "img-src data:" in csp
    # The policy is in force: a picture from the network is refused by the page itself.
    d.execute_script("window.__v = []; document.addEventListener('securitypolicyviolation', e => window.__v.push(e.blockedURI));"
                     "var i = new Image(); i.src = 'http://127.0.0.1:9/x.png'; document.body.appendChild(i);"
                     "fetch('http://127.0.0.1:9/y').catch(() => 0);")
    import time

    time.sleep(0.3)
    assert len(d.execute_script("return window.__v")) == 2
    d.get_log("browser")


def test_screenshot_is_not_blank(browser, detect_run):
    from PIL import Image
    import io

    _, page, _ = detect_run
    d = _open(browser, page)
    png = d.get_screenshot_as_png()
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)
    assert px.std() > 20  # photos, text and boxes; a blank or failed page is nearly uniform
    # the thumbnails are the photos: the cat card's thumbnail resembles the cat photo
    uri = d.execute_script("""return Array.from(document.querySelectorAll('.card')).find(
        c => c.querySelector('.title').title.endsWith('cat.jpg')).querySelector('.pic img').src""")
    import base64

    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), np.float32)
    ref = np.asarray(Image.open(SAMPLES / "cat.jpg").convert("RGB").resize(thumb.shape[1::-1], Image.BILINEAR), np.float32)
    assert np.abs(thumb - ref).mean() < 12


def test_classify_csv_from_stdin_shows_topk_bars(browser, cli_module, tmp_path, monkeypatch):
    out = tmp_path / "labels.csv"
    res = cli_module("classify", str(SAMPLES / "cat.jpg"), str(SAMPLES / "coffee.jpg"), "-k", "3", "-o", str(out), "-q")
    assert res.exit_code == 0
    rows = list(csv.DictReader(out.open()))
    page = tmp_path / "c.html"
    res = cli_module("report", "-", "-o", str(page), input=out.read_text())
    assert res.exit_code == 0, res.stderr
    d = _open(browser, page)
    for row in rows:
        want = [[t["label"], f"{t['score']:.3f}"] for t in json.loads(row["topk"])]
        got = d.execute_script("""var c = Array.from(document.querySelectorAll('.card')).find(c => c.querySelector('.title').title === arguments[0]);
            var cells = Array.from(c.querySelectorAll('.topk > div')).map(e => e.textContent);
            var out = []; for (var i = 0; i < cells.length; i += 3) out.push([cells[i], cells[i + 2]]); return out;""", row["source"])
        assert got == want
    assert d.execute_script("return document.querySelector('#summary').textContent").count("efficientnet_lite0") == 1


def test_training_run_page_holds_eval_json(browser, cli_module, tmp_path):
    pytest.importorskip("sklearn")
    res = cli_module("train", "digits", "--model", "linear", "--epochs", "2", "--runs-dir", str(tmp_path / "runs"),
                     "--name", "t", "-q")
    assert res.exit_code == 0, res.stderr
    run = tmp_path / "runs" / "t"
    page = tmp_path / "train.html"
    assert cli_module("report", str(run), "-o", str(page)).exit_code == 0
    ev = json.loads((run / "eval.json").read_text())
    d = _open(browser, page)
    tables = d.execute_script("""return Array.from(document.querySelectorAll('table.confusion')).map(t =>
        Array.from(t.rows).slice(1).map(r => Array.from(r.cells).slice(1).map(c => +c.textContent)));""")
    assert tables == [ev[k]["confusion"] for k in ("test", "val") if k in ev]
    per = d.execute_script("return Array.from(document.querySelector('table.per-class').rows).slice(1).map(r => r.cells[0].textContent)")
    assert per == [c["class"] for c in ev["test"]["per_class"]]
    assert len(d.find_elements("css selector", ".run canvas")) == 2
    assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []


def test_ten_thousand_records_render_only_what_is_visible(browser, tmp_path):
    """Synthetic detect records over the sample photos (the page's limits, not the model, are tested)."""
    from cvtool.render.report import Loaded, write_report

    photos = sorted(str(p) for p in SAMPLES.glob("*.jpg"))
    rng = np.random.default_rng(0)
    recs = []
    for i in range(10_000):
        dets = [{"box": [10.0, 10.0, 100.0, 100.0], "score": float(round(rng.random(), 5)), "class_id": 1, "label": "person"}
                for _ in range(3)]
        recs.append({"source": photos[i % len(photos)], "frame": None, "task": "detect", "model": "m", "ok": True,
                     "error": None, "image_size": {"width": 400, "height": 300}, "detections": dets, "count": 3})
    page = tmp_path / "big.html"
    size = write_report(Loaded(records=recs), page)
    assert size < 6 * 1024 * 1024
    d = _open(browser, page)
    assert d.execute_script("return document.getElementById('shown-count').dataset.shown") == "10000"
    n_cards = len(d.find_elements("css selector", ".card"))
    assert 0 < n_cards < 100
    d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    d.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    last = d.execute_script("return Math.max(...Array.from(document.querySelectorAll('.card')).map(c => +c.dataset.i))")
    assert last == 9999
    assert len(d.find_elements("css selector", ".card")) < 100


def test_shard_folder_and_bad_inputs(cli_module, detect_run, tmp_path):
    """An --engine ray output folder (shards written by the store's own writer) reads back as
    the same records; a missing file and a broken line are named."""
    from cvtool.scale.store import OutputDir
    from cvtool.render.report import load_inputs

    recs, _, _ = detect_run
    od = OutputDir(str(tmp_path / "shards"))
    od.create()
    for k in range(0, len(recs), 3):
        od.write(f"part-{k:04d}.jsonl", "".join(json.dumps(r) + "\n" for r in recs[k:k + 3]).encode())
    got = load_inputs([str(tmp_path / "shards")]).records
    assert sorted(json.dumps(r, sort_keys=True) for r in got) == sorted(json.dumps(r, sort_keys=True) for r in recs)
    res = cli_module("report", str(tmp_path / "shards"), "-o", str(tmp_path / "s.html"), "-q")
    assert res.exit_code == 0 and (tmp_path / "s.html").stat().st_size > 10_000

    res = cli_module("report", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "x.html"))
    assert res.exit_code == 2 and res.stderr.strip() == f"cvtool: error: {tmp_path / 'nope.jsonl'}: no such file"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n{not json\n")
    res = cli_module("report", str(bad), "-o", str(tmp_path / "y.html"))
    assert res.exit_code == 1 and f"{bad}:2: not a JSON record, skipped" in res.stderr
    assert cli_module("report", str(bad), "-o", str(tmp_path / "y.html")).exit_code == 2  # exists, no --overwrite


def test_data_cannot_close_the_script_element():
    from cvtool.render.report import _json_for_script

    s = _json_for_script({"a": "</script><script>alert(1)</script><!-- \u2028 &amp;"})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s
    assert json.loads(s) == {"a": "</script><script>alert(1)</script><!-- \u2028 &amp;"}


def test_mask_overlays_follow_the_masks(tmp_path):
    """Semantic (class-index PNG) and instance (COCO RLE) overlays: opaque exactly where the mask
    is, in the VOC palette's colour; checked against masks drawn here by hand."""
    import base64
    import io

    from PIL import Image

    from cvtool.io.masks import encode_index_png, rle_encode, voc_palette
    from cvtool.render.report import Pictures

    idx = np.zeros((60, 80), np.uint8)
    idx[10:30, 20:50] = 15  # person
    idx[40:55, 5:15] = 8  # cat
    (tmp_path / "m.png").write_bytes(encode_index_png(idx))
    pics = Pictures(320, 10**9)

    def rgba(k):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(pics.uris[k].split(",", 1)[1]))).convert("RGBA"))

    a = rgba(pics.semantic_overlay(str(tmp_path / "m.png")))
    assert a.shape == (60, 80, 4)
    assert np.array_equal(a[..., 3] > 0, idx > 0)
    assert (a[15, 30, :3] == voc_palette()[15]).all() and (a[45, 10, :3] == voc_palette()[8]).all()
    m = np.zeros((60, 80), bool)
    m[5:25, 40:70] = True
    b = rgba(pics.instance_overlay("x", [{"rle": rle_encode(m), "class_id": 18}]))
    assert np.array_equal(b[..., 3] > 0, m)


def test_picture_commands_write_the_page_too(browser, cli_module, tmp_path):
    """visualize (the per-picture gradient path) with --report: the heat map the run saved is on
    the card beside the photo, and the prediction is the record's."""
    page = tmp_path / "v.html"
    res = cli_module("visualize", "gradcam", str(SAMPLES / "cat.jpg"), "--save", str(tmp_path / "vis"),
                     "--report", str(page))
    assert res.exit_code == 0, res.stderr
    rec = jsonl(res.stdout)[0]
    d = _open(browser, page)
    caps = d.execute_script("return Array.from(document.querySelectorAll('.card .cap')).map(e => e.textContent)")
    assert caps == ["heat map"]
    text = d.execute_script("return document.querySelector('.card').textContent")
    assert f"predicted {rec['prediction']['label']} {rec['prediction']['score']:.3f}" in text
    assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []
    res = cli_module("visualize", "gradcam", str(SAMPLES / "cat.jpg"), "--save", str(tmp_path / "vis2"),
                     "--report", str(page))
    assert res.exit_code == 2 and "--report" in res.stderr and "exists" in res.stderr


def test_csv_records_read_back_as_the_jsonl_ones(detect_run, tmp_path):
    """The project's CSV writer flattens records (dotted columns, JSON lists); the report reads
    them back to the same records as the JSON Lines of the same run."""
    from cvtool.io.sinks import RecordWriter
    from cvtool.render.report import load_inputs

    recs, _, _ = detect_run
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as fh:
        w = RecordWriter(fh, "csv")
        for r in recs:
            w.write(r)
        w.close()
    got = load_inputs([str(path)]).records
    assert len(got) == len(recs)
    for a, b in zip(got, recs):
        keep = {k: v for k, v in b.items() if v is not None}
        assert {k: v for k, v in a.items() if v is not None} == keep
