"""Reads back what the viewer saved, as another DICOM tool would.

    python tests/derived/read_saved.py BASE_URL STUDY_UID OUT_DIR [AUTH_HEADER]

Retrieves through DICOMweb (dicomweb-client) the newest measurement report
and key object selection the viewer wrote into the study, writes them to
OUT_DIR/sr.dcm and OUT_DIR/ko.dcm, parses the SR with highdicom
(ComprehensiveSR, TID 1500 measurement groups) and prints a JSON line: the
measurements found (name, value, unit, graphic type, referenced SOP) and the
key images' SOP Instance UIDs.
"""

import json
import sys
from pathlib import Path

import highdicom as hd
from dicomweb_client.api import DICOMwebClient

base, study, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
headers = {"Authorization": sys.argv[4]} if len(sys.argv) > 4 else None
client = DICOMwebClient(url=f"{base}/dicom-web", headers=headers)


def newest(modality):
    rows = client.search_for_instances(
        study_instance_uid=study,
        search_filters={"Modality": modality},
        fields=["00080070", "00200013", "00080023", "00080033", "0020000E"],
    )
    best = None
    for r in rows:
        series = r["0020000E"]["Value"][0]
        sop = r["00080018"]["Value"][0]
        ds = client.retrieve_instance(study, series, sop)
        if ds.get("ManufacturerModelName") != "Sen PACS viewer":
            continue
        key = (str(ds.get("ContentDate", "")), str(ds.get("ContentTime", "")), int(ds.get("InstanceNumber", 0)))
        if best is None or key > best[0]:
            best = (key, ds)
    return best[1] if best else None


out.mkdir(parents=True, exist_ok=True)
result = {"measurements": [], "keyImages": []}
sr = newest("SR")
if sr is not None:
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    report = hd.sr.ComprehensiveSR.from_dataset(sr)
    for group in report.content.get_planar_roi_measurement_groups():
        region = group.roi
        for m in group.get_measurements():
            result["measurements"].append(
                {
                    "name": m.name.meaning,
                    "value": float(m.value),
                    "unit": m.unit.value,
                    "graphicType": region.graphic_type.value if region is not None else None,
                    "sop": region.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    if region is not None and hasattr(region, "ReferencedSOPSequence")
                    else (
                        region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                        if region is not None
                        else None
                    ),
                }
            )
ko = newest("KO")
if ko is not None:
    ko.save_as(out / "ko.dcm", enforce_file_format=True)
    for item in ko.ContentSequence:
        if item.ValueType == "IMAGE":
            result["keyImages"].append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
print(json.dumps(result))
