"""The ExApp's HTTP side: the admin settings form and the routes Nextcloud calls."""
