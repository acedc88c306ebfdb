"""JIP, the Joint Imaging Platform."""
