"""The one error a decoder raises: a file Recognize cannot read, with a message for the user."""


class MediaError(Exception):
    """A file could not be decoded; the message says why and is stored with the file."""
