"""A local stand-in of the Nextcloud and AppAPI endpoints Recognize uses, served over real HTTP."""
