"""The users' address books as Nextcloud's CardDavBackend keeps them (apps/dav/lib/CardDAV/CardDavBackend.php).

A new address book starts at sync token 1 (``createAddressBook``); every card added, changed or
deleted adds one (``addChange``). ``getctag`` and the sabre sync token both are that number.
Each user's own books live under their principal; a book shared with another user shows in that
user's home as ``<uri>_shared_by_<owner>`` (``getAddressBooksForUser``), and the system address
book of all accounts as ``z-server-generated--system`` (``UserAddressBooks::getChildren``,
``SystemAddressbook::URI_SHARED``) in every home. Guarded by the state's lock (``NextcloudState.lock``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

SYSTEM_OWNER = "system"  # principals/system/system
SYSTEM_URI_SHARED = "z-server-generated--system"


@dataclass
class AddressBook:
    """An address book: its owner, uri, display name, sync token and cards (card uri → vCard)."""

    owner: str
    uri: str
    display_name: str
    sync_token: int = 1
    cards: dict[str, str] = field(default_factory=dict)
    shared_with: set[str] = field(default_factory=set)

    def uri_for(self, user: str) -> str:
        """The book's name in user's address-book home."""
        if self.owner == SYSTEM_OWNER:
            return SYSTEM_URI_SHARED
        return self.uri if user == self.owner else f"{self.uri}_shared_by_{self.owner}"

    def principal(self) -> str:
        if self.owner == SYSTEM_OWNER:
            return "principals/system/system"
        return f"principals/users/{self.owner}"


class AddressBooks:
    """All address books of the instance."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.books: list[AddressBook] = []
        self.system = AddressBook(SYSTEM_OWNER, "system", "Accounts")

    def add(self, owner: str, uri: str = "contacts", display_name: str = "Contacts") -> AddressBook:
        """A new address book (the default one is ``contacts``, "Contacts")."""
        with self.lock:
            book = AddressBook(owner, uri, display_name)
            self.books.append(book)
            return book

    def put_card(self, book: AddressBook, card_uri: str, vcard: str) -> None:
        with self.lock:
            book.cards[card_uri] = vcard
            book.sync_token += 1

    def delete_card(self, book: AddressBook, card_uri: str) -> None:
        with self.lock:
            del book.cards[card_uri]
            book.sync_token += 1

    def home_of(self, user: str) -> list[AddressBook]:
        """What user's address-book home lists: own books, books shared with them, the system one."""
        with self.lock:
            mine = [b for b in self.books if b.owner == user]
            shared = [b for b in self.books if user in b.shared_with and b.owner != user]
            return mine + shared + [self.system]

    def find(self, user: str, name: str) -> AddressBook | None:
        return next((b for b in self.home_of(user) if b.uri_for(user) == name), None)
