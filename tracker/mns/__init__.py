"""MNS, a vendor adapter beside `vod`: the queue client and its V2 signature (mns-reference.md).

Core: imports no wing. The consumer that feeds the inbox from a queue is `tracker.ingest.queue`.
"""
