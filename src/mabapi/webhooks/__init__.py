"""Webhooks: subscriptions, the event outbox and its delivery loop."""
