"""A page of a list, as the users list and a user's history both serve it."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Page:
    """One page of a list. `page` is None for a page reached by cursor; `total` is
    exact unless `total_capped`, in which case there are more than `total`."""

    items: list[Any]
    page: int | None
    per_page: int
    total: int
    total_capped: bool = False
    next_after: int | None = None  # the id the next page starts after; None on the last page
    next_key: Any = None  # and the sort key it starts after
    sort: str = "id"

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.next_after is not None
