"""End to end: `kneeai app` starts the real Streamlit server, headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) uploads an MRNet exam, and the probabilities rendered in the page must be
those `kneeai.train.predict_exams` gives for the same exam and model.

Chromium is never downloaded: `make e2e-deps` (run by `make test`) installs Debian's packages. Set
`KNEEAI_CHROMIUM` / `KNEEAI_CHROMEDRIVER` to use other binaries, `KNEEAI_SKIP_E2E=1` to skip these tests, and
`KNEEAI_APP_SCREENSHOT=PATH` to save a screenshot of the page with its results (the README's is
`nbs/images/app.png`); `KNEEAI_E2E_MODEL` and `KNEEAI_E2E_EXAM` replace the tiny untrained model and its exam (e.g.
by the `kneeai demo` model and one of its exams, for a screenshot that shows a trained model)."""
import json, os, re, time
from pathlib import Path
import pytest

if os.environ.get('KNEEAI_SKIP_E2E'): pytest.skip('KNEEAI_SKIP_E2E is set', allow_module_level=True)
pytest.importorskip('streamlit', reason='the app needs Streamlit: pip install "kneeai[app]"')
webdriver = pytest.importorskip('selenium.webdriver', reason='the end-to-end test needs Selenium: pip install "kneeai[dev]"')
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from kneeai.core import PLANES, MRNET_TASKS
from kneeai.learner import predict_exams
from conftest import app_server

CHROMIUM = os.environ.get('KNEEAI_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('KNEEAI_CHROMEDRIVER', '/usr/bin/chromedriver')
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--disable-dev-shm-usage', '--window-size=1500,1250')

@pytest.fixture(scope='module')
def server(tmp_path_factory, tiny_models):
    "`kneeai app` on a free port, with conftest's tiny model (or $KNEEAI_E2E_MODEL); yields (url, model, exam)"
    tmp = tmp_path_factory.mktemp('e2e')
    if os.environ.get('KNEEAI_E2E_MODEL'): model,exam = Path(os.environ['KNEEAI_E2E_MODEL']),Path(os.environ['KNEEAI_E2E_EXAM'])
    else: model,exam = tiny_models['mrnet'],tiny_models['exam']
    with app_server(model, tmp) as (url, _): yield url, model, exam

@pytest.fixture(scope='module')
def browser():
    "Headless Debian Chromium through its chromedriver (nothing is downloaded)"
    for exe,pkg in ((CHROMIUM, 'chromium'), (CHROMEDRIVER, 'chromium-driver')):
        if not Path(exe).exists(): pytest.fail(f'{exe} is missing: install Debian\'s {pkg} (`make e2e-deps`), or set KNEEAI_SKIP_E2E=1')
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in CHROMIUM_FLAGS: opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try: yield driver
    finally: driver.quit()

_ROW = re.compile(r'^(?:\S+\s+)?(' + '|'.join(MRNET_TASKS) + r')\s+([01]\.\d{4})\s+([01]\.\d{3})\s+(model|default)\s+(positive|negative)$')

def rendered_results(driver) -> dict:
    "task -> (probability, threshold, call) read from the results table the browser shows"
    rows = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stTable"] tr'):
        m = _ROW.match(' '.join(tr.text.split()))
        if m: rows[m[1]] = (float(m[2]), float(m[3]), m[5])
    return rows

def test_upload_exam_in_chromium(server, browser):
    url,model,exam = server
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stFileUploader"] input[type="file"]'))[0]
    upload.send_keys('\n'.join(str(exam/f'{p}.npy') for p in PLANES))
    wait.until(lambda d: len(rendered_results(d)) == len(MRNET_TASKS))
    shown = rendered_results(browser)
    ref = predict_exams(model, [exam]).iloc[0]
    thr = json.loads((model/'config.json').read_text()).get('thresholds') or {}
    for t in MRNET_TASKS:
        p,th,call = shown[t]
        assert abs(p - ref[t]) <= 5e-5 + 1e-6, (t, p, ref[t])  # shown with 4 decimals
        assert abs(th - thr.get(t, .5)) <= 5e-4
        assert call == ('positive' if ref[t] >= thr.get(t, .5) else 'negative')
    body = browser.find_element(By.TAG_NAME, 'body').text
    assert 'Download JSON' in body and 'Download CSV' in body
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    if os.environ.get('KNEEAI_APP_SCREENSHOT'):
        browser.set_window_size(1400, 1700)  # tall enough for the heatmaps under the table
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stImage"] img')) == len(PLANES))
        time.sleep(3)  # let the images and charts finish drawing
        browser.save_screenshot(os.environ['KNEEAI_APP_SCREENSHOT'])

def test_unsupported_file_is_a_message_in_the_page(server, browser, tmp_path):
    url,_,_ = server
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stFileUploader"] input[type="file"]'))[0]
    (bad := tmp_path/'notes.txt').write_text('not an image')
    upload.send_keys(str(bad))
    alert = wait.until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]') if 'notes.txt' in e.text])
    assert 'not a file kneeai can read' in alert[0].text
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
