"""The ExApp's long-running side: the crawl loop, the worker pool, and reading the admin
settings and users' choices from Nextcloud."""
