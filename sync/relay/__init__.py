"""The relay: SFTP jails, the guard, and the tamper-evident audit log."""
