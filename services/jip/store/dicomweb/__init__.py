"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS, rendering, multipart bodies."""
