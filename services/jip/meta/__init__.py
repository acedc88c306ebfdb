"""META: header extraction, the cohort query language and the metadata index.

``extract`` turns DICOM headers into series documents, ``fields`` lists what a document
holds, ``query`` checks and parses cohort queries, ``index`` is the port that
``index_sqlite`` (embedded shape) and ``index_opensearch`` (cluster shape) implement.
"""
