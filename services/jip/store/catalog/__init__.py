"""Catalog: the rows of what is stored (tables, the write path, attribute matching)."""
