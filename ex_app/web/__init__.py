"""The ExApp's HTTP side: the settings forms, the routes Nextcloud calls and what they depend on."""
