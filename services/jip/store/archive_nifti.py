"""One image series as a NIfTI volume inside a download zip.

Research tools (nnU-Net, FSL, ITK-SNAP, MONAI) read NIfTI. The volume is built by the
operator SDK's own loader (:func:`jip_sdk.load_image`: slices ordered along the slice
normal, modality LUT applied, LPS geometry), the code the ``convert-nifti`` operator
runs, so a download and a workflow's NIfTI agree voxel for voxel. A series that is no
stack of single-frame slices (SEG, SR, multi-frame, no geometry) goes in as the stored
DICOM, and the manifest says why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from jip.store.storage.port import BlobStorage
from jip.store.zip_stream import SeriesSelection, ZipStream, dicom_members

if TYPE_CHECKING:  # SimpleITK loads only when a NIfTI download asks for it
    import SimpleITK as sitk

INT16 = (-32768, 32767)


class NiftiWriter:
    """A :data:`jip.store.archive.SeriesWriter` that writes ``<folder>.nii.gz``.

    The volume is written to a file in ``spool_dir`` (SimpleITK writes to paths), copied
    into the zip a chunk at a time, and removed.
    """

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir

    def __call__(
        self, storage: BlobStorage, zs: ZipStream, selection: SeriesSelection
    ) -> Iterator[bytes]:
        import SimpleITK as sitk
        from jip_sdk import SeriesError, load_image

        datasets = []
        for instance in selection.instances:
            with storage.open(instance.blob_key) as source:
                datasets.append(pydicom.dcmread(source))
        try:
            image = _compact(load_image(datasets))
        except (SeriesError, ValueError, AttributeError) as exc:
            series_uid = selection.instances[0].series_instance_uid
            zs.stats.notes.append({"series": series_uid, "note": f"kept as DICOM: {exc}"[:300]})
            yield from dicom_members(storage, zs, selection)
            return
        del datasets
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.spool_dir, suffix=".nii.gz") as spooled:
            sitk.WriteImage(image, spooled.name, useCompression=True)
            size = Path(spooled.name).stat().st_size
            with open(spooled.name, "rb") as source:
                yield from zs.member(f"{selection.folder}.nii.gz", source, size)
        zs.stats.instances += len(selection.instances)
        zs.stats.stored_bytes += sum(i.size_bytes for i in selection.instances)
        zs.stats.nifti_series += 1


def _compact(image: sitk.Image) -> sitk.Image:
    """int16 when every voxel is a whole number in its range (CT in HU): half the size
    of float32, and what most CT tools expect; else the float32 volume unchanged."""
    import SimpleITK as sitk

    voxels = sitk.GetArrayViewFromImage(image)
    whole = np.array_equal(voxels, np.round(voxels))
    if whole and INT16[0] <= voxels.min() and voxels.max() <= INT16[1]:
        return sitk.Cast(image, sitk.sitkInt16)
    return image
