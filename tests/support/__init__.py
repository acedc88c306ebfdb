"""Helpers every test package shares: free ports, an HTTP app served in a thread."""
