"""Private helpers: device, seeding, the sklearn private API in one place."""
