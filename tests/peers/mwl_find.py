"""A modality asking the archive's Modality Worklist (pynetdicom).

usage: mwl_find.py HOST PORT CALLED_AE CALLING_AE QUERY_JSON

QUERY_JSON: {"top": {"PatientName": "...", ...}, "step": {"Modality": "CT", ...},
             "cancel_after": N (optional)}
Prints one JSON line: {"statuses": [...], "items": [{keyword: value, ..., "step": {...}}]}.
"""
import json
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

host, port, called, calling, query = sys.argv[1:6]
query = json.loads(query)

ds = Dataset()
# Return keys every modality asks for, then the matching keys.
for kw in ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
           "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
           "IssuerOfPatientID"]:
    setattr(ds, kw, "")
for kw, v in query.get("top", {}).items():
    setattr(ds, kw, v)
step = Dataset()
for kw in ["Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
           "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
           "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
           "ScheduledProcedureStepStatus"]:
    setattr(step, kw, "")
for kw, v in query.get("step", {}).items():
    setattr(step, kw, v)
ds.ScheduledProcedureStepSequence = [step]
if query.get("charset"):
    ds.SpecificCharacterSet = query["charset"]

ae = AE(ae_title=calling)
ae.add_requested_context(ModalityWorklistInformationFind)
assoc = ae.associate(host, int(port), ae_title=called)
if not assoc.is_established:
    print(json.dumps({"error": "association rejected"}))
    sys.exit(2)

statuses, items = [], []
cancel_after = query.get("cancel_after")
for status, ident in assoc.send_c_find(ds, ModalityWorklistInformationFind):
    if not status:
        statuses.append("none")
        break
    statuses.append("0x%04X" % status.Status)
    if ident is not None:
        item = {}
        for elem in ident:
            if elem.VR == "SQ":
                continue
            item[elem.keyword] = str(elem.value) if elem.value is not None else ""
        seq = ident.get("ScheduledProcedureStepSequence")
        if seq:
            item["step"] = {e.keyword: (str(e.value) if e.value is not None else "")
                            for e in seq[0] if e.VR != "SQ"}
        item["_has"] = [e.keyword for e in ident]
        items.append(item)
        if cancel_after is not None and len(items) == cancel_after:
            assoc.send_c_cancel(1, query_model=ModalityWorklistInformationFind)
assoc.release()
print(json.dumps({"statuses": statuses, "items": items}, ensure_ascii=False))
