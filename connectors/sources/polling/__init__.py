"""Query-based polling source: bulk, incrementing, timestamp and timestamp+incrementing modes."""
