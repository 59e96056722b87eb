"""Modality Worklist benchmark helpers (pynetdicom, pydicom).

    python bench/mwl.py make DIR N          # N Orthanc-style .wl files in DIR
    python bench/mwl.py find HOST PORT CALLED_AE REPEAT
                                            # p50/p99 ms per query shape, JSON
    python bench/mwl.py hl7 HOST PORT N     # N ORM^O01 over one MLLP connection,
                                            # each waited for its ACK: messages/s
"""
import json
import os
import random
import socket
import statistics
import sys
import time

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
GIVEN = ["Văn An", "Thị Lan", "Minh Đức", "Thu Hà", "Quốc Bảo", "Ngọc Anh", "Hữu Phước"]
MODALITIES = ["CT", "MR", "US", "CR", "DX"]


def item(i):
    r = random.Random(i)
    mod = MODALITIES[i % 5]
    day = 1 + (i // 5) % 28
    return {
        "name": f"{r.choice(FAMILY)}^{r.choice(GIVEN)}",
        "pid": f"P{i:06d}",
        "acc": f"A{i:07d}",
        "mod": mod,
        "ae": f"{mod}{(i // 5) % 10}",
        "date": f"202612{day:02d}",
        "time": f"{8 + i % 10:02d}{(i * 7) % 60:02d}",
    }


def make(path, n):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    os.makedirs(path, exist_ok=True)
    for i in range(n):
        it = item(i)
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = it["name"]
        ds.PatientID = it["pid"]
        ds.AccessionNumber = it["acc"]
        ds.RequestedProcedureID = it["acc"]
        ds.StudyInstanceUID = f"2.25.{i + 1000}"
        sps = Dataset()
        sps.Modality = it["mod"]
        sps.ScheduledStationAETitle = it["ae"]
        sps.ScheduledProcedureStepStartDate = it["date"]
        sps.ScheduledProcedureStepStartTime = it["time"]
        sps.ScheduledProcedureStepID = it["acc"]
        sps.ScheduledProcedureStepDescription = "bench"
        ds.ScheduledProcedureStepSequence = [sps]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(os.path.join(path, f"{i:06d}.wl"), enforce_file_format=True)


SHAPES = {
    "station AE + date": {"step": {"ScheduledStationAETitle": "CT3", "ScheduledProcedureStepStartDate": "20261204"}},
    "modality + date range": {"step": {"Modality": "MR", "ScheduledProcedureStepStartDate": "20261210-20261211"}},
    "accession": {"top": {"AccessionNumber": "A0004242"}},
    "patient name wildcard": {"top": {"PatientName": "Trần^Thị*"}, "step": {"ScheduledProcedureStepStartDate": "20261215"}},
}


def find(host, port, called, repeat):
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        sys.exit(f"association to {called} failed")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = {}
    for name, q in SHAPES.items():
        times, counts = [], []
        for _ in range(repeat):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 192"
            for kw in ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
                       "RequestedProcedureID"]:
                setattr(ds, kw, "")
            for kw, v in q.get("top", {}).items():
                setattr(ds, kw, v)
            sps = Dataset()
            for kw in ["Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                       "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID"]:
                setattr(sps, kw, "")
            for kw, v in q.get("step", {}).items():
                setattr(sps, kw, v)
            ds.ScheduledProcedureStepSequence = [sps]
            t0 = time.perf_counter()
            n = 0
            for status, ident in assoc.send_c_find(ds, ModalityWorklistInformationFind):
                if status and status.Status in (0xFF00, 0xFF01):
                    n += 1
            times.append((time.perf_counter() - t0) * 1000)
            counts.append(n)
        times.sort()
        out[name] = {"p50_ms": round(statistics.median(times), 2),
                     "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
                     "matches": counts[0]}
    assoc.release()
    print(json.dumps(out, ensure_ascii=False))


def hl7(host, port, n):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    for i in range(n):
        it = item(100000 + i)
        obr = [""] * 28
        obr[0], obr[1], obr[4] = "OBR", "1", "CT01^CT"
        obr[18], obr[21], obr[24] = it["acc"], it["ae"], it["mod"]
        obr[27] = f"^^^{it['date']}{it['time']}00"
        msg = ("MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||ORM^O01|B%d|P|2.3.1||||||UNICODE UTF-8\r"
               "PID|1||%s^^^BV||%s||19800101|F\rORC|NW|PL%d\r%s\r") % (i, it["pid"], it["name"], i, "|".join(obr))
        s.sendall(b"\x0b" + msg.encode() + b"\x1c\x0d")
        buf = b""
        while not buf.endswith(b"\x1c\x0d"):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("connection closed")
            buf += chunk
        if b"MSA|AA" not in buf:
            sys.exit("not accepted: " + buf.decode("latin-1"))
    dt = time.perf_counter() - t0
    s.close()
    print(json.dumps({"messages": n, "seconds": round(dt, 2), "per_second": round(n / dt, 1)}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]))
    elif cmd == "find":
        find(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif cmd == "hl7":
        hl7(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
