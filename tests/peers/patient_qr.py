"""C-FIND and C-GET against the archive for the patient-change tests.

    python patient_qr.py find LEVEL HOST PORT CALLED_AE KEY=VALUE...
    python patient_qr.py get STUDY_UID HOST PORT CALLED_AE
    python patient_qr.py read FILE

find: a Patient Root C-FIND at LEVEL (PATIENT or STUDY) with the keys given
plus PatientName, PatientID, IssuerOfPatientID, StudyInstanceUID as return
keys; prints a JSON list of the matches (those four as strings).
get: a Study Root C-GET of the study; prints a JSON list of what pydicom
reads in each received instance (SOPInstanceUID, PatientName, PatientID,
IssuerOfPatientID, PatientBirthDate) and the number of pixel data bytes.
read: the same for a Part 10 file read by pydicom.
Calling AE title FINDSCU.
"""
import json
import sys

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)


def describe(ds):
    px = ds.get("PixelData")
    return {
        "SOPInstanceUID": str(ds.get("SOPInstanceUID", "")),
        "PatientName": str(ds.get("PatientName", "")),
        "PatientID": str(ds.get("PatientID", "")),
        "IssuerOfPatientID": str(ds.get("IssuerOfPatientID", "")),
        "PatientBirthDate": str(ds.get("PatientBirthDate", "")),
        "PixelBytes": len(px) if px is not None else 0,
    }


def new_ae():
    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


mode = sys.argv[1]
if mode == "read":
    print(json.dumps(describe(dcmread(sys.argv[2]))))
    sys.exit(0)

if mode == "find":
    level, host, port, called = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    ae = new_ae()
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    q = Dataset()
    q.QueryRetrieveLevel = level
    q.PatientName = ""
    q.PatientID = ""
    q.IssuerOfPatientID = ""
    if level == "STUDY":
        q.StudyInstanceUID = ""
    for kv in sys.argv[6:]:
        k, v = kv.split("=", 1)
        setattr(q, k, v)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        sys.exit("association refused")
    out = []
    for status, ident in assoc.send_c_find(q, PatientRootQueryRetrieveInformationModelFind):
        if status is None:
            sys.exit("no response")
        if status.Status in (0xFF00, 0xFF01) and ident is not None:
            out.append(
                {
                    "PatientName": str(ident.get("PatientName", "")),
                    "PatientID": str(ident.get("PatientID", "")),
                    "IssuerOfPatientID": str(ident.get("IssuerOfPatientID", "")),
                    "StudyInstanceUID": str(ident.get("StudyInstanceUID", "")),
                }
            )
        elif status.Status != 0:
            sys.exit(f"C-FIND status {status.Status:04X}")
    assoc.release()
    print(json.dumps(out))
elif mode == "get":
    study, host, port, called = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    received = []

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(describe(ds))
        return 0x0000

    ae = new_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate(
        host, port, ae_title=called, ext_neg=[role], evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    if not assoc.is_established:
        sys.exit("association refused")
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    last = None
    for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
        if status is not None:
            last = status.Status
    assoc.release()
    if last != 0:
        sys.exit(f"C-GET final status {last}")
    print(json.dumps(received))
else:
    sys.exit(f"unknown mode {mode}")
