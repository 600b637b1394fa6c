"""Every stage's ``run(spark, conf, ...)``: what one job does, end to end, and the summary it writes.

Each module reads the stage's inputs, calls the library (``attribution/``) and the UDFs (``udfs/``),
writes the outputs and returns its typed result (:mod:`attribution.stages.results`: the summary it wrote,
the fields its callers read, the text its job prints). ``jobs/`` wraps each in a CLI.

| module | stage |
|---|---|
| ``generate`` | the embedded synthetic dataset |
| ``sessionize`` | raw events to the sessions table, quarantine and reconciliation |
| ``train`` | shards, TorchDistributor training, the leakage check |
| ``attribute`` | the attribution UDF over the sessions: the event-level table |
| ``faithfulness`` | faithfulness and agreement of the methods on a sample |
| ``report`` | the tables, picture, page and insights |
"""
