"""pydicom's corpus in by C-STORE and back by C-GET or C-MOVE, with pynetdicom.

    python corpus_retrieve.py get  HOST PORT CALLED_AE CORPUS_DIR
    python corpus_retrieve.py move HOST PORT CALLED_AE CORPUS_DIR DEST_AE DEST_PORT

Stores every Part 10 file of CORPUS_DIR (one association each, the file's
own SOP class and transfer syntax, sent as-is from the file), then
retrieves each stored instance:
  - get: C-GET on a context offering only its stored syntax;
  - move: C-MOVE to DEST_AE, a storage SCP this script runs on
    127.0.0.1:DEST_PORT that accepts each stored SOP class in every
    transfer syntax of the corpus (the archive must know DEST_AE in its
    [[remote_ae]]), so the syntax that arrives is the one the archive chose.
Prints JSON: counts and, per SOP Instance UID, the transfer syntax and
SHA-256 of the data set received, and whether the file's own data set bytes
are identical to it. The caller compares with what the archive stored.
"""
import glob
import hashlib
import json
import os
import struct
import sys
import threading

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

mode, host, port, called, corpus = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
if mode not in ("get", "move"):
    sys.exit(f"unknown mode {mode}")


def new_ae():
    ae = AE(ae_title="CORPUS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def file_dataset(path):
    raw = open(path, "rb").read()
    if raw[128:132] != b"DICM":
        return None
    (glen,) = struct.unpack("<I", raw[140:144])
    return raw[144 + glen:]


stored, refused = {}, 0
for path in sorted(glob.glob(os.path.join(corpus, "*.dcm"))):
    try:
        ds = dcmread(path, stop_before_pixels=True)
        ts, cls = str(ds.file_meta.TransferSyntaxUID), str(ds.file_meta.MediaStorageSOPClassUID)
        ids = (str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    except Exception:
        refused += 1
        continue
    ae = new_ae()
    ae.add_requested_context(cls, [ts])
    assoc = ae.associate(host, port, ae_title=called)
    status = None
    if assoc.is_established:
        try:
            status = assoc.send_c_store(path)
        except Exception:  # pynetdicom cannot send some corpus files as they are
            status = None
        assoc.release()
    if status and status.Status == 0x0000:
        stored[ids[0]] = (path, ts, cls, ids[1], ids[2])
    else:
        refused += 1

received = {}
lock = threading.Lock()


def on_store(event):
    data = event.request.DataSet.getvalue()
    with lock:
        received[str(event.request.AffectedSOPInstanceUID)] = (
            data,
            str(event.context.transfer_syntax),
        )
    return 0x0000


dest = None
if mode == "move":
    dest_ae, dest_port = sys.argv[6], int(sys.argv[7])
    dest = AE(ae_title=dest_ae)
    dest.acse_timeout = dest.dimse_timeout = dest.network_timeout = 10
    syntaxes = sorted({ts for (_p, ts, _c, _s, _r) in stored.values()})
    for cls in sorted({cls for (_p, _t, cls, _s, _r) in stored.values()}):
        dest.add_supported_context(cls, syntaxes)
    server = dest.start_server(
        ("127.0.0.1", dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )

results = {}
for sop, (path, ts, cls, study, series) in stored.items():
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study, series, sop
    ae = new_ae()
    if mode == "get":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(cls, [ts])
        assoc = ae.associate(host, port, ae_title=called, ext_neg=[build_role(cls, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        if assoc.is_established:
            for _status, _ident in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
                pass
            assoc.release()
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(host, port, ae_title=called)
        if assoc.is_established:
            for _status, _ident in assoc.send_c_move(q, dest_ae, StudyRootQueryRetrieveInformationModelMove):
                pass
            assoc.release()
    with lock:
        data, got_ts = received.pop(sop, (None, None))
    results[sop] = {
        "ts": got_ts,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "same_as_file": data is not None and data == file_dataset(path),
    }
if dest is not None:
    server.shutdown()
print(json.dumps({"stored": len(stored), "refused": refused, "instances": results}))
