"""triage: AI triage for incoming CT/MR studies.

Studies arrive over DICOM, are stored and catalogued, triaged by MONAI models when complete, and
the result goes back to the PACS as a DICOM Structured Report carrying a priority.
"""

__version__ = "0.1.0"
