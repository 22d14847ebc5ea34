"""Recording topics to NDJSON files and replaying them into a broker or the test harness."""
