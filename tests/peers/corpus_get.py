"""pydicom's corpus in by C-STORE and back by C-GET, with pynetdicom.

    python corpus_get.py HOST PORT CALLED_AE CORPUS_DIR

Stores every Part 10 file of CORPUS_DIR (one association each, the file's
own SOP class and transfer syntax, sent as-is from the file), then C-GETs
each stored instance on a context offering only its stored syntax and
prints JSON: counts and, per SOP Instance UID, the transfer syntax and
SHA-256 of the data set received, and whether the file's own data set bytes
are identical to it. The caller compares with what the archive stored.
"""
import glob
import hashlib
import json
import os
import struct
import sys

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

host, port, called, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


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

results = {}
for sop, (path, ts, cls, study, series) in stored.items():
    got = {}

    def on_store(event, got=got):
        got["bytes"] = event.request.DataSet.getvalue()
        got["ts"] = str(event.context.transfer_syntax)
        return 0x0000

    ae = new_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(cls, [ts])
    assoc = ae.associate(host, port, ae_title=called, ext_neg=[build_role(cls, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if assoc.is_established:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study, series, sop
        for _status, _ident in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
            pass
        assoc.release()
    data = got.get("bytes")
    results[sop] = {
        "ts": got.get("ts"),
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "same_as_file": data is not None and data == file_dataset(path),
    }
print(json.dumps({"stored": len(stored), "refused": refused, "instances": results}))
