"""Notifications: the job change log, subscriptions, signed webhook deliveries, the relay."""
