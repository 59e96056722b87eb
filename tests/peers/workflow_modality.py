"""A modality for the workflow tests (tests/workflow.rs), on pynetdicom.

Subcommands (each prints one JSON object on stdout):
  mpps PORT                     MPPS N-CREATE / N-SET sequence, with the
                                statuses the archive answered.
  commit PORT --files F... [--unknown UID] [--same-association] [--no-store]
                                C-STORE the files (unless --no-store), then Storage Commitment
                                N-ACTION for them (and an unknown instance).
                                With --same-association the SCP role is
                                proposed and the N-EVENT-REPORT awaited on
                                this association; otherwise the association
                                is released after the N-ACTION-RSP (also with
                                --same-association --no-wait: the SCP role is
                                proposed, but the requestor leaves at once).
  day PORT STATION DATE STATE start
                                A modality's morning: Modality Worklist
                                queries (by station AE and date, by a date
                                range, by a name without accents), then MPPS
                                N-CREATE IN PROGRESS for each item of its
                                station; the items go to the STATE file.
  day PORT STATION DATE STATE finish --files F...
                                The exams: each item's images (the files,
                                under the item's patient, accession and
                                study, fresh series and SOP UIDs) by
                                C-STORE, MPPS N-SET COMPLETED with the
                                series, then Storage Commitment for them all,
                                the report awaited on the same association.
  listen PORT OUT SECONDS       Storage Commitment SCU waiting for the
                                report on an association the archive opens
                                (accepting the SCP role it proposes); writes
                                the report as JSON to OUT.
Every wait is bounded.
"""

import json
import sys
import threading
import time

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
)

CALLING = "MODALITY"
CALLED = "PACS"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


def report_json(event_type, ds):
    committed = [
        item.ReferencedSOPInstanceUID
        for item in getattr(ds, "ReferencedSOPSequence", [])
    ]
    failed = [
        [item.ReferencedSOPInstanceUID, int(item.FailureReason)]
        for item in getattr(ds, "FailedSOPSequence", [])
    ]
    return {
        "event_type": event_type,
        "transaction_uid": str(ds.TransactionUID),
        "committed": committed,
        "failed": failed,
    }


def mpps(port):
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        print(json.dumps({"error": "association failed"}))
        return 1
    out = {}
    uid = generate_uid()

    def create(status, key, instance):
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        ds.PerformedProcedureStepID = "PPS1"
        step = Dataset()
        step.AccessionNumber = "ACC-001"
        step.ScheduledProcedureStepID = "SPS-001"
        step.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
        ds.ScheduledStepAttributesSequence = [step]
        ds.PerformedSeriesSequence = []
        st, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, instance)
        out[key] = st.Status if st else None

    def nset(status, key, instance, series=None):
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        if series:
            item = Dataset()
            item.SeriesInstanceUID = series
            ds.PerformedSeriesSequence = [item]
        st, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, instance)
        out[key] = st.Status if st else None
        if st is not None and "ErrorComment" in st:
            out[key + "_comment"] = str(st.ErrorComment)

    create("IN PROGRESS", "create", uid)
    create("IN PROGRESS", "duplicate", uid)
    create("COMPLETED", "create_completed", generate_uid())
    nset("IN PROGRESS", "set_in_progress", uid, series="1.2.826.0.1.3680043.2.1125.2")
    nset("COMPLETED", "set_completed", uid, series="1.2.826.0.1.3680043.2.1125.2")
    nset("IN PROGRESS", "set_after_completed", uid)
    nset("COMPLETED", "set_unknown", generate_uid())
    assoc.release()
    print(json.dumps(out))
    return 0


def store(assoc, files):
    refs = []
    for f in files:
        ds = dcmread(f)
        st = assoc.send_c_store(ds)
        if st is None or st.Status != 0:
            raise SystemExit(f"C-STORE of {f} failed: {st}")
        refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return refs


def commit(port, files, unknown, same, no_store=False, no_wait=False):
    classes = sorted({str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    for c in classes:
        ae.add_requested_context(c)
    ae.add_requested_context(StorageCommitmentPushModel)
    roles = []
    got = threading.Event()
    result = {}

    def on_report(event):
        result.update(report_json(event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    handlers = []
    if same:
        roles.append(build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True))
    if same and not no_wait:
        handlers.append((evt.EVT_N_EVENT_REPORT, on_report))
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=CALLED, ext_neg=roles, evt_handlers=handlers
    )
    if not assoc.is_established:
        print(json.dumps({"error": "association failed"}))
        return 1
    if no_store:
        refs = []
        for f in files:
            ds = dcmread(f, stop_before_pixels=True)
            refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    else:
        refs = store(assoc, files)
    if unknown:
        refs.append((classes[0], unknown))
    action = Dataset()
    action.TransactionUID = generate_uid()
    items = []
    for c, i in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = c
        item.ReferencedSOPInstanceUID = i
        items.append(item)
    action.ReferencedSOPSequence = items
    st, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel, WELL_KNOWN)
    out = {
        "action_status": st.Status if st else None,
        "transaction_uid": str(action.TransactionUID),
        "stored": [i for _, i in refs if i != unknown],
    }
    if same and not no_wait:
        if got.wait(60):
            out["report"] = result
            # The N-EVENT-REPORT-RSP goes out once the handler has returned.
            time.sleep(1)
    assoc.release()
    print(json.dumps(out))
    return 0


def worklist(assoc, top, step_keys):
    """The items a Modality Worklist C-FIND returns (PS3.4 K.6)."""
    ds = Dataset()
    for kw in ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
               "RequestedProcedureID", "RequestedProcedureDescription"]:
        setattr(ds, kw, "")
    for kw, v in top.items():
        setattr(ds, kw, v)
    step = Dataset()
    for kw in ["Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
               "ScheduledProcedureStepID", "ScheduledProcedureStepDescription"]:
        setattr(step, kw, "")
    for kw, v in step_keys.items():
        setattr(step, kw, v)
    ds.ScheduledProcedureStepSequence = [step]
    items = []
    for status, ident in assoc.send_c_find(ds, ModalityWorklistInformationFind):
        if status is None or status.Status not in (0xFF00, 0xFF01):
            break
        if ident is None:
            continue
        sps = ident.ScheduledProcedureStepSequence[0]
        items.append({
            "patient_name": str(ident.PatientName),
            "patient_id": str(ident.PatientID),
            "accession": str(ident.AccessionNumber),
            "study": str(ident.StudyInstanceUID),
            "requested_procedure_id": str(ident.RequestedProcedureID),
            "sps_id": str(sps.ScheduledProcedureStepID),
            "modality": str(sps.Modality),
        })
    return items


def step_ref(item):
    ref = Dataset()
    ref.AccessionNumber = item["accession"]
    ref.ScheduledProcedureStepID = item["sps_id"]
    ref.RequestedProcedureID = item["requested_procedure_id"]
    ref.StudyInstanceUID = item["study"]
    return ref


def day_start(port, station, date, state_path):
    ae = AE(ae_title=station)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        print(json.dumps({"error": "association failed"}))
        return 1
    mine = worklist(assoc, {}, {"ScheduledStationAETitle": station,
                                "ScheduledProcedureStepStartDate": date})
    by_range = worklist(assoc, {}, {"ScheduledProcedureStepStartDate": f"{date}-{date}"})
    by_name = worklist(assoc, {"PatientName": "nguyen*"}, {})
    out = {
        "by_station": sorted(i["accession"] for i in mine),
        "by_range": sorted(i["accession"] for i in by_range),
        "by_name": sorted(i["accession"] for i in by_name),
        "create": [],
    }
    for item in mine:
        uid = generate_uid()
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepID = "PPS-" + item["accession"]
        ds.PerformedStationAETitle = station
        ds.Modality = item["modality"]
        ds.PatientName = item["patient_name"]
        ds.PatientID = item["patient_id"]
        ds.PerformedProcedureStepStartDate = date
        ds.ScheduledStepAttributesSequence = [step_ref(item)]
        ds.PerformedSeriesSequence = []
        st, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        out["create"].append(st.Status if st else None)
        item["mpps"] = uid
    assoc.release()
    with open(state_path, "w") as f:
        json.dump(mine, f)
    print(json.dumps(out))
    return 0


def day_finish(port, station, state_path, files):
    with open(state_path) as f:
        items = json.load(f)
    classes = sorted({str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})
    ae = AE(ae_title=station)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    for c in classes:
        ae.add_requested_context(c)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(StorageCommitmentPushModel)
    got = threading.Event()
    result = {}

    def on_report(event):
        result.update(report_json(event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    roles = [build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)]
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED, ext_neg=roles,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    if not assoc.is_established:
        print(json.dumps({"error": "association failed"}))
        return 1
    out = {"store": [], "set_completed": [], "stored": {}}
    refs = []
    for item in items:
        series = generate_uid()
        images = []
        for f in files:
            ds = dcmread(f)
            ds.PatientName = item["patient_name"]
            ds.PatientID = item["patient_id"]
            ds.AccessionNumber = item["accession"]
            ds.StudyInstanceUID = item["study"]
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            st = assoc.send_c_store(ds)
            out["store"].append(st.Status if st else None)
            refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
            images.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        out["stored"][item["accession"]] = [i for _, i in images]
        performed = Dataset()
        performed.SeriesInstanceUID = series
        performed.RetrieveAETitle = CALLED
        performed.ReferencedImageSequence = []
        for c, i in images:
            ref = Dataset()
            ref.ReferencedSOPClassUID = c
            ref.ReferencedSOPInstanceUID = i
            performed.ReferencedImageSequence.append(ref)
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "COMPLETED"
        ds.PerformedSeriesSequence = [performed]
        st, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, item["mpps"])
        out["set_completed"].append(st.Status if st else None)
    action = Dataset()
    action.TransactionUID = generate_uid()
    action.ReferencedSOPSequence = []
    for c, i in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = c
        item.ReferencedSOPInstanceUID = i
        action.ReferencedSOPSequence.append(item)
    st, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel, WELL_KNOWN)
    out["action_status"] = st.Status if st else None
    if got.wait(60):
        out["report"] = result
        # The N-EVENT-REPORT-RSP goes out once the handler has returned.
        time.sleep(1)
    assoc.release()
    print(json.dumps(out))
    return 0


def listen(port, out_path, seconds):
    ae = AE(ae_title=CALLING)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    done = threading.Event()

    def on_report(event):
        result = report_json(event.event_type, event.event_information)
        result["calling_ae"] = event.assoc.requestor.ae_title
        ctx = [c for c in event.assoc.accepted_contexts if c.abstract_syntax == StorageCommitmentPushModel]
        # The requestor (the archive) acts as SCP: PS3.4 J.3.3.1.3.
        result["requestor_scp_role"] = bool(ctx) and ctx[0].as_scu
        with open(out_path, "w") as f:
            json.dump(result, f)
        done.set()
        return 0x0000, None

    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    print(json.dumps({"listening": port}), flush=True)
    done.wait(seconds)
    time.sleep(0.5)
    server.shutdown()
    return 0 if done.is_set() else 1


def main(argv):
    cmd = argv[1]
    if cmd == "mpps":
        return mpps(int(argv[2]))
    if cmd == "commit":
        port = int(argv[2])
        files, unknown, same, no_store, no_wait = [], None, False, False, False
        args = argv[3:]
        i = 0
        while i < len(args):
            if args[i] == "--files":
                i += 1
                while i < len(args) and not args[i].startswith("--"):
                    files.append(args[i])
                    i += 1
                continue
            if args[i] == "--unknown":
                unknown = args[i + 1]
                i += 2
                continue
            if args[i] == "--same-association":
                same = True
            if args[i] == "--no-store":
                no_store = True
            if args[i] == "--no-wait":
                no_wait = True
            i += 1
        return commit(port, files, unknown, same, no_store, no_wait)
    if cmd == "day":
        port, station, date, state, phase = int(argv[2]), argv[3], argv[4], argv[5], argv[6]
        if phase == "start":
            return day_start(port, station, date, state)
        files = argv[argv.index("--files") + 1:]
        return day_finish(port, station, state, files)
    if cmd == "listen":
        return listen(int(argv[2]), argv[3], float(argv[4]))
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
