"""Event-streaming backbone for Python services on Apache Kafka."""
