"""DIMSE (PS3.7/PS3.8): the listener, the C-STORE fast path, pynetdicom handlers, our SCU, peers."""
