"""liberator-cdc: free data from legacy relational databases as keyed, Avro-schematized Kafka streams."""

__version__ = "0.1.0"
