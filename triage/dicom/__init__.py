"""DICOM in and out: receive, query/retrieve, series to volume, the result SR, send."""
