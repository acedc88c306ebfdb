"""Blob storage: the port and its adapters (file, s3)."""
