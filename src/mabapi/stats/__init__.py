"""Pure statistics: numpy and scipy only, no I/O, no web, no database (docs/ARCHITECTURE.md)."""
