"""Reports: the summary (the decision users act on), the segments listing, the daily
history and the watcher that turns changes in them into events."""
