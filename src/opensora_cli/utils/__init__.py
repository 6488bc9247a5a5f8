"""Small helpers with no torch."""
