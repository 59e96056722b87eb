"""Makes the AI-style derived objects the viewer's SEG/SR tests display.

    python tests/derived/make_objects.py SOURCE_SERIES_DIR OUT_DIR

Over the CT series in SOURCE_SERIES_DIR (the sample `ct-phantom-prior`, eight
256 x 256 slices) it writes, with highdicom:
- OUT_DIR/seg.dcm: a binary Segmentation (PS3.3 A.51) with two segments,
  known squares on slices 3-5, each with its recommended CIELab colour;
- OUT_DIR/sr.dcm: a TID 1500 Measurement Report (Comprehensive SR) with one
  length measurement whose SCOORD polyline lies on a known image, and a
  finding (qualitative evaluation) in the same measurement group;
- OUT_DIR/findings.dcm: a Comprehensive SR that is not a TID 1500 report:
  a "Findings" container with a coded finding, a text impression and a
  diameter whose SCOORD point-pair lies on another known image.
Prints a JSON line with what a test needs to know (UIDs, geometry, values).
"""

import json
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

# Segment squares: (segment number, label, sRGB colour, rows, columns), on
# the slices SEG_SLICES (0-based, in instance-number order).
SEGMENTS = [
    (1, "Lesion A", (255, 0, 0), (60, 100), (60, 100)),
    (2, "Lesion B", (0, 200, 0), (150, 190), (150, 190)),
]
SEG_SLICES = [2, 3, 4]
# The length measurement: image-space points (column, row), PS3.3 C.18.6.1.2
# (0.0 is the top-left corner of the top-left pixel).
SR_SLICE = 3
SR_POINTS = [(40.0, 200.0), (120.0, 200.0)]
# The free-form findings' diameter, on another image.
FINDINGS_SLICE = 6
FINDINGS_POINTS = [(200.0, 40.0), (200.0, 100.0)]


def srgb_to_dicom_lab(rgb):
    """sRGB 0-255 to the scaled CIELab of PS3.3 C.10.7.1.1 (D65)."""

    def lin(c):
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x), f(y), f(z)
    lab = (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))
    return [
        int(round(lab[0] * 65535 / 100)),
        int(round((lab[1] + 128) * 65535 / 255)),
        int(round((lab[2] + 128) * 65535 / 255)),
    ]


def comprehensive_sr(evidence, content, series_number, description):
    """A Comprehensive SR in a series of its own, about `evidence`."""
    return hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=content,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Sen PACS tests",
        series_description=description,
    )


def main():
    src_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    images = sorted(
        (pydicom.dcmread(p) for p in src_dir.glob("*.dcm")),
        key=lambda d: int(d.InstanceNumber),
    )
    rows, cols = int(images[0].Rows), int(images[0].Columns)

    mask = np.zeros((len(images), rows, cols, len(SEGMENTS)), dtype=bool)
    descriptions = []
    for i, (number, label, rgb, (r0, r1), (c0, c1)) in enumerate(SEGMENTS):
        for s in SEG_SLICES:
            mask[s, r0:r1, c0:c1, i] = True
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="Sen PACS test model",
                    version="1.0",
                    family=codes.cid7162.ArtificialIntelligence,
                ),
                display_color=hd.color.CIELabColor(
                    *[
                        v * 100 / 65535 if k == 0 else v * 255 / 65535 - 128
                        for k, v in enumerate(srgb_to_dicom_lab(rgb))
                    ]
                ),
            )
        )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Sen PACS tests",
        manufacturer_model_name="make_objects.py",
        software_versions="1",
        device_serial_number="1",
        series_description="AI segmentation",
        omit_empty_frames=True,
    )
    seg.save_as(out / "seg.dcm")

    target = images[SR_SLICE]
    spacing = [float(v) for v in target.PixelSpacing]
    (x0, y0), (x1, y1) = SR_POINTS
    length_mm = float(np.hypot((x1 - x0) * spacing[1], (y1 - y0) * spacing[0]))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Nodule 1"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array(SR_POINTS),
            source_image=hd.sr.SourceImageForRegion.from_source_image(target),
        ),
        finding_type=codes.SCT.Nodule,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Length,
                value=length_mm,
                unit=codes.UCUM.Millimeter,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept("246116008", "SCT", "Lesion morphology"),
                value=hd.sr.CodedConcept("255507004", "SCT", "Spiculated"),
            )
        ],
    )
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="Sen PACS test model"
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = comprehensive_sr(target, report[0], 901, "AI measurements")
    sr.save_as(out / "sr.dcm")

    # Free-form findings (no template): CONTAINER > CODE, TEXT, NUM > SCOORD > IMAGE.
    other = images[FINDINGS_SLICE]
    (fx0, fy0), (fx1, fy1) = FINDINGS_POINTS
    diameter_mm = float(np.hypot((fx1 - fx0) * spacing[1], (fy1 - fy0) * spacing[0]))
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    scoord = hd.sr.ScoordContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(FINDINGS_POINTS),
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    scoord.ContentSequence = [
        hd.sr.ImageContentItem(
            name=codes.SCT.Source,
            referenced_sop_class_uid=other.SOPClassUID,
            referenced_sop_instance_uid=other.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.SELECTED_FROM,
        )
    ]
    diameter = hd.sr.NumContentItem(
        name=codes.SCT.Diameter,
        value=diameter_mm,
        unit=codes.UCUM.Millimeter,
        relationship_type=contains,
    )
    diameter.ContentSequence = [scoord]
    root = hd.sr.ContainerContentItem(name=codes.DCM.Findings)
    root.ContentSequence = [
        hd.sr.CodeContentItem(
            name=codes.DCM.Finding,
            value=hd.sr.CodedConcept("65872000", "SCT", "Cyst"),
            relationship_type=contains,
        ),
        hd.sr.TextContentItem(
            name=codes.DCM.Impression, value="Simple cyst, no follow-up", relationship_type=contains
        ),
        diameter,
    ]
    findings = comprehensive_sr(other, root, 902, "AI findings")
    findings.save_as(out / "findings.dcm")

    print(
        json.dumps(
            {
                "study": str(images[0].StudyInstanceUID),
                "ctSeries": str(images[0].SeriesInstanceUID),
                "segSeries": str(seg.SeriesInstanceUID),
                "srSeries": str(sr.SeriesInstanceUID),
                "segSlices": SEG_SLICES,
                "segments": [
                    {"number": n, "label": l, "rgb": list(c), "rows": list(r), "cols": list(cc)}
                    for n, l, c, r, cc in SEGMENTS
                ],
                "srSlice": SR_SLICE,
                "srSop": str(target.SOPInstanceUID),
                "srPoints": [list(p) for p in SR_POINTS],
                "srLengthMm": length_mm,
                "findingsSeries": str(findings.SeriesInstanceUID),
                "findingsSlice": FINDINGS_SLICE,
                "findingsPoints": [list(p) for p in FINDINGS_POINTS],
                "findingsDiameterMm": diameter_mm,
            }
        )
    )


if __name__ == "__main__":
    main()
