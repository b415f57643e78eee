"""One module per pipeline stage; each stage is a Prefect task that records itself."""
