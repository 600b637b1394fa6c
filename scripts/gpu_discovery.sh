#!/usr/bin/env bash
# Spark's resource discovery script for GPUs: prints this machine's NVIDIA GPU indexes as the JSON Spark
# reads ({"name": "gpu", "addresses": ["0", "1", ...]}). Point spark.worker.resource.gpu.discoveryScript
# (standalone) or spark.executor.resource.gpu.discoveryScript (YARN, Kubernetes) at it; docs/cluster.md.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | awk 'NF {printf "%s\"%s\"", sep, $1; sep=", "}')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
