"""What operators watch: per-stage queue depth, throughput and latency, and Prometheus metrics."""
