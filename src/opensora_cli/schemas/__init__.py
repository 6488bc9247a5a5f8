"""pydantic models at the edge: input files, mask config, reports. No torch."""
