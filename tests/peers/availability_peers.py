"""Peers of the availability tests (tests/availability.rs), on pynetdicom.

Subcommands:
  exam PORT ACCESSION SPS_ID --files F...
                      A modality's procedure: MPPS N-CREATE (IN PROGRESS,
                      one scheduled step: ACCESSION, SPS_ID and the files'
                      Study Instance UID), C-STORE of the files, MPPS N-SET
                      COMPLETED with the Performed Series Sequence (series
                      and Referenced Image Sequence of the files). Prints
                      one JSON object: statuses, the MPPS UID, the study.
  store PORT --files F...
                      C-STORE only; prints the statuses.
  ian PORT OUT SECONDS
                      An Instance Availability Notification SCP (AE title
                      RIS). Prints {"listening": PORT} once it accepts,
                      then writes each N-CREATE it receives as JSON to OUT
                      (the first one) and ends; or ends after SECONDS.
Every wait is bounded.
"""

import json
import sys
import threading
import time

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    InstanceAvailabilityNotification,
    ModalityPerformedProcedureStep,
)

CALLING = "MODALITY"
CALLED = "PACS"


def files_of(argv):
    return argv[argv.index("--files") + 1 :]


def associate(port, files, mpps):
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    for c in sorted({str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}):
        ae.add_requested_context(c)
    if mpps:
        ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        print(json.dumps({"error": "association failed"}))
        sys.exit(1)
    return assoc


def store(assoc, files):
    statuses = []
    for f in files:
        st = assoc.send_c_store(dcmread(f))
        statuses.append(st.Status if st else None)
    return statuses


def exam(port, accession, sps_id, files):
    headers = [dcmread(f, stop_before_pixels=True) for f in files]
    study = str(headers[0].StudyInstanceUID)
    assoc = associate(port, files, True)
    uid = generate_uid()
    create = Dataset()
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.PerformedProcedureStepID = "PPS-" + sps_id
    create.PatientID = str(getattr(headers[0], "PatientID", ""))
    step = Dataset()
    step.AccessionNumber = accession
    step.ScheduledProcedureStepID = sps_id
    step.RequestedProcedureID = accession
    step.StudyInstanceUID = study
    create.ScheduledStepAttributesSequence = [step]
    create.PerformedSeriesSequence = []
    st, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
    out = {"mpps_uid": uid, "study": study, "create": st.Status if st else None}
    out["store"] = store(assoc, files)
    series = {}
    for h in headers:
        series.setdefault(str(h.SeriesInstanceUID), []).append(h)
    performed = []
    for s, items in series.items():
        item = Dataset()
        item.SeriesInstanceUID = s
        item.RetrieveAETitle = CALLED
        refs = []
        for h in items:
            r = Dataset()
            r.ReferencedSOPClassUID = h.SOPClassUID
            r.ReferencedSOPInstanceUID = h.SOPInstanceUID
            refs.append(r)
        item.ReferencedImageSequence = refs
        performed.append(item)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedSeriesSequence = performed
    st, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    out["set_completed"] = st.Status if st else None
    assoc.release()
    print(json.dumps(out))
    return 0


def ian(port, out_path, seconds):
    ae = AE(ae_title="RIS")
    ae.add_supported_context(InstanceAvailabilityNotification)
    done = threading.Event()

    def on_create(event):
        ds = event.attribute_list
        series = []
        for s in getattr(ds, "ReferencedSeriesSequence", []):
            series.append(
                {
                    "series": str(s.SeriesInstanceUID),
                    "instances": [
                        {
                            "class": str(i.ReferencedSOPClassUID),
                            "instance": str(i.ReferencedSOPInstanceUID),
                            "availability": str(i.InstanceAvailability),
                            "retrieve_ae": str(i.RetrieveAETitle),
                        }
                        for i in getattr(s, "ReferencedSOPSequence", [])
                    ],
                }
            )
        result = {
            "calling_ae": event.assoc.requestor.ae_title,
            "sop_class": str(event.request.AffectedSOPClassUID),
            "sop_instance": str(event.request.AffectedSOPInstanceUID),
            "study": str(ds.StudyInstanceUID),
            "accession": str(getattr(ds, "AccessionNumber", "")),
            "patient_id": str(getattr(ds, "PatientID", "")),
            "has_pps_sequence": "ReferencedPerformedProcedureStepSequence" in ds,
            "pps": [
                [str(p.ReferencedSOPClassUID), str(p.ReferencedSOPInstanceUID)]
                for p in getattr(ds, "ReferencedPerformedProcedureStepSequence", [])
            ],
            "series": series,
        }
        with open(out_path, "w") as f:
            json.dump(result, f)
        done.set()
        return 0x0000, ds

    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_CREATE, on_create)]
    )
    print(json.dumps({"listening": port}), flush=True)
    done.wait(seconds)
    # The N-CREATE-RSP goes out once the handler has returned.
    time.sleep(0.5)
    server.shutdown()
    return 0 if done.is_set() else 1


def main(argv):
    cmd = argv[1]
    if cmd == "exam":
        return exam(int(argv[2]), argv[3], argv[4], files_of(argv))
    if cmd == "store":
        assoc = associate(int(argv[2]), files_of(argv), False)
        out = {"store": store(assoc, files_of(argv))}
        assoc.release()
        print(json.dumps(out))
        return 0
    if cmd == "ian":
        return ian(int(argv[2]), argv[3], float(argv[4]))
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
