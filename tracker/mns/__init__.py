"""VOD's events from an MNS queue: the client, its signature and the consumer (mns-reference.md)."""
