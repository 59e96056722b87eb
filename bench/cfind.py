"""C-FIND latency of one peer: associate once (Study Root), run each query
shape REPEAT times, print p50/p99 in milliseconds per shape as JSON.

    python bench/cfind.py HOST PORT CALLED_AE REPEAT
"""
import json
import statistics
import sys
import time

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

host, port, called, repeat = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

SHAPES = {
    "PatientID": {"PatientID": "P001234"},
    "PatientName wildcard": {"PatientName": "Nguy*"},
    "StudyDate range": {"StudyDate": "20240101-20240131"},
}

ae = AE(ae_title="BENCH")
ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
assoc = ae.associate(host, port, ae_title=called)
if not assoc.is_established:
    sys.exit(f"association to {called} failed")
# pynetdicom leaves Nagle's algorithm on, which adds ~40 ms per exchange
# whatever the server; turn it off so the server's latency is what shows.
import socket
assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = {}
for name, keys in SHAPES.items():
    times, counts = [], []
    for _ in range(repeat):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for k in ("PatientName", "PatientID", "StudyDate", "StudyInstanceUID",
                  "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
            setattr(ds, k, "")
        for k, v in keys.items():
            setattr(ds, k, v)
        t0 = time.perf_counter()
        n = 0
        for status, ident in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01):
                n += 1
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(n)
    times.sort()
    out[name] = {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "matches": counts[0],
    }
assoc.release()
print(json.dumps(out))
