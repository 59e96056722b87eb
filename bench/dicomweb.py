"""DICOMweb latency and throughput of one origin server, as JSON.

    python bench/dicomweb.py BASE_URL CT_STUDY_UID CT_SERIES_UID STOW_DIR REPEAT

BASE_URL is the DICOMweb root (e.g. http://127.0.0.1:8080/dicom-web). One
keep-alive HTTP session; each query shape REPEAT times (p50/p99 in ms).
"""
import glob
import json
import statistics
import sys
import time
import uuid

import requests

base, study, series, stow_dir, repeat = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
s = requests.Session()
out = {}


def timed(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return {"p50_ms": round(statistics.median(ts), 2), "p99_ms": round(ts[min(len(ts) - 1, int(len(ts) * 0.99))], 2)}


def get(url, **kw):
    r = s.get(url, **kw)
    r.raise_for_status()
    return r


qido = {
    "QIDO PatientID": "/studies?PatientID=P001234",
    "QIDO PatientName wildcard": "/studies?PatientName=Nguy*&limit=100",
    "QIDO StudyDate range": "/studies?StudyDate=20240101-20240131&limit=100",
    "QIDO all studies, first page": "/studies?limit=100",
}
for name, q in qido.items():
    n = len(get(base + q, headers={"Accept": "application/dicom+json"}).json())
    out[name] = timed(lambda: get(base + q, headers={"Accept": "application/dicom+json"}), repeat)
    out[name]["matches"] = n

meta = f"{base}/studies/{study}/series/{series}/metadata"
n = len(get(meta, headers={"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}).json())
out["series metadata (400 CT)"] = timed(
    lambda: get(meta, headers={"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}).content, max(3, repeat // 5))
out["series metadata (400 CT)"]["instances"] = n

rates = []
for _ in range(3):
    t0 = time.perf_counter()
    r = s.get(f"{base}/studies/{study}/series/{series}",
              headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, stream=True)
    r.raise_for_status()
    size = sum(len(c) for c in r.iter_content(1 << 20))
    rates.append(size / (time.perf_counter() - t0) / 1e6)
out["WADO-RS series retrieve MB/s"] = round(statistics.median(rates), 1)

files = sorted(glob.glob(stow_dir + "/*.dcm"))
t0 = time.perf_counter()
for i in range(0, len(files), 10):
    boundary = uuid.uuid4().hex
    body = b""
    for f in files[i:i + 10]:
        body += b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + open(f, "rb").read() + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    r = s.post(base + "/studies", data=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    if r.status_code != 200:
        sys.exit(f"STOW failed: {r.status_code} {r.text[:300]}")
out["STOW instances/s (10 per request)"] = round(len(files) / (time.perf_counter() - t0), 1)
print(json.dumps(out))
