"""What authentication costs: QIDO-RS p50 and WADO-RS throughput per way of
signing in, measured in interleaved rounds, as JSON.

    python bench/auth_overhead.py MODES.json ROUNDS QIDO_REPEAT WADO_REPEAT

MODES.json lists the ways to call, each {"name", "base" (the DICOMweb root),
"study", "series", and one of: nothing (auth off), "basic": [user, password],
"bearer": TOKEN, "mint": URL (a fresh JWT fetched from the provider at each
round, as tokens live 5 minutes), "login": [user, password] (POST /login on
the server, then the session cookie)}. Every round measures every mode, in
an order rotated by one per round, each over its own keep-alive session, so
that drift of the machine's load falls on all modes alike. The answer keeps
every round's numbers and their medians.
"""
import base64
import json
import statistics
import sys
import time

import requests

modes = json.load(open(sys.argv[1]))
rounds, qido_repeat, wado_repeat = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
QIDO = {
    "qido_one_ms": "/studies?PatientID={pid}",
    "qido_page_ms": "/studies?limit=100",
}
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def session_for(mode):
    s = requests.Session()
    root = mode["base"].rsplit("/dicom-web", 1)[0]
    if "basic" in mode:
        u, p = mode["basic"]
        s.headers["Authorization"] = "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
    elif "bearer" in mode:
        s.headers["Authorization"] = "Bearer " + mode["bearer"]
    elif "mint" in mode:
        r = requests.get(mode["mint"], verify=mode.get("ca", True), timeout=30)
        r.raise_for_status()
        s.headers["Authorization"] = "Bearer " + r.text.strip()
    elif "login" in mode:
        u, p = mode["login"]
        r = s.post(root + "/login", data={"username": u, "password": p, "next": "/"}, allow_redirects=False)
        if r.status_code != 303 or not s.cookies:
            sys.exit(f"{mode['name']}: login answered {r.status_code}")
        # Sent as a plain header, as the other modes send theirs: requests'
        # cookie jar costs the client tens of microseconds a request, which
        # is not the server's cost of a session.
        s.headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
        s.cookies.clear()
    return s


def p50(s, url, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(url, headers={"Accept": "application/dicom+json"})
        r.content
        ts.append((time.perf_counter() - t0) * 1000)
        if r.status_code not in (200, 204):
            sys.exit(f"{url}: {r.status_code} {r.text[:200]}")
    return statistics.median(ts)


def wado_mb_s(s, mode, n):
    url = f"{mode['base']}/studies/{mode['study']}/series/{mode['series']}"
    rates = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(url, headers={"Accept": WADO_ACCEPT}, stream=True)
        if r.status_code != 200:
            sys.exit(f"{url}: {r.status_code}")
        size = sum(len(c) for c in r.iter_content(1 << 20))
        rates.append(size / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates)


results = {m["name"]: {"qido_one_ms": [], "qido_page_ms": [], "wado_mb_s": []} for m in modes}
for rnd in range(rounds):
    order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
    for mode in order:
        s = session_for(mode)
        # One warm-up request (connection, password cache, key fetch).
        s.get(mode["base"] + "/studies?limit=1", headers={"Accept": "application/dicom+json"}).content
        r = results[mode["name"]]
        r["qido_one_ms"].append(p50(s, mode["base"] + QIDO["qido_one_ms"].format(pid=mode["pid"]), qido_repeat))
        r["qido_page_ms"].append(p50(s, mode["base"] + QIDO["qido_page_ms"], qido_repeat))
        r["wado_mb_s"].append(wado_mb_s(s, mode, wado_repeat))
        s.close()

out = {}
for name, r in results.items():
    out[name] = {k: {"median": round(statistics.median(v), 3), "rounds": [round(x, 3) for x in v]} for k, v in r.items()}
print(json.dumps(out))
# A table for docs/benchmarks.md (the JSON above keeps every round).
base_mode = modes[0]["name"]
print("| mode | QIDO 1 match p50 (ms) | QIDO 100 studies p50 (ms) | WADO-RS series (MB/s) |", file=sys.stderr)
print("|---|---|---|---|", file=sys.stderr)
for name, r in out.items():
    cells = []
    for k in ("qido_one_ms", "qido_page_ms", "wado_mb_s"):
        v, b = r[k]["median"], out[base_mode][k]["median"]
        cells.append(f"{v:.2f}" if name == base_mode else f"{v:.2f} ({(v - b) / b * 100:+.0f} %)")
    print(f"| {name} | " + " | ".join(cells) + " |", file=sys.stderr)
