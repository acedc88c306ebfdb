"""STORE: DICOM in and out (DIMSE, DICOMweb), blob storage and the catalog."""
