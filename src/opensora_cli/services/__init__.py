"""Services: take checked requests, return results; they never print or exit."""
