"""Store-and-forward between sites: the relay and the pieces that talk to it."""
