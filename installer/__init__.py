"""Installing and running Zastava: the ``zastava`` command, offline media, service units."""
