"""rfmcube-cdc: the streaming service that keeps Rfmcube equal to the shop."""
