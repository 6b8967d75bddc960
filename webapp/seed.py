"""Demo data for `seed-users`: people with plausible names and emails.

Names are drawn from first and last names of many origins; an email is made
from the name in one of the ways people's addresses are (ada.lovelace@,
alovelace@, ...), on one of the example domains (RFC 2606, never delivered).
A number is added only when that address is taken: the second
ada.lovelace@example.com is ada.lovelace2@example.com. An address a database
has already (an earlier run's) is skipped by the insert and made up again, and
each time it comes up again its number is one higher, so a run on a seeded
database converges too.
"""

import random
import unicodedata
from collections.abc import Iterator
from typing import Any


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    """
    Aaliyah Ada Adebayo Ahmed Aiko Alan Alejandro Amara Amelia Ana Anders Anika Arjun Astrid Barbara
    Beatriz Benjamin Camille Carlos Chen Chloe Claude Dara Dennis Diego Dmitri Edsger Elena Emeka Emma
    Fatima Felix Frances Freya Gabriel Grace Guido Hana Hannah Hedy Ines Ingrid Isaac Jamal Javier John
    Julia Kai Katherine Ken Kenji Lars Layla Leila Liam Linus Lucia Margaret Maria Mateo Mei Mohammed
    Nadia Naomi Niklaus Noah Nora Olga Omar Oscar Priya Rafael Ravi Rosa Sakura Samuel Sara Sofia Sven
    Tariq Thomas Tomás Valentina Vikram Wei Yara Yusuf Zainab Zoë
    """
)
LAST_NAMES = _words(
    """
    Abe Adeyemi Allen Almeida Andersson Bauer Bianchi Brown Castro Chen Costa Dijkstra Dubois Eriksen
    Fernández García Goldberg Gupta Hamilton Hansen Hopper Ibrahim Ivanova Jensen Johnson Kapoor
    Kernighan Kim Knuth Kowalski Lamarr Larsen Li Liskov Lovelace Martin Mendes Moreau Müller Nakamura
    Nguyen Novak Okafor Olsen Park Patel Petrov Ritchie Rossi Santos Sato Schmidt Shannon Silva Singh
    Suzuki Tanaka Thompson Turing Wagner Walker Wang Wirth Yamamoto Yilmaz Zhang
    """
)
DOMAINS = ("example.com", "example.org", "example.net")
# How people's addresses are made from their names: {f} first, {l} last, {i} the initial.
PATTERNS = ("{f}.{l}", "{f}.{l}", "{f}{l}", "{i}{l}", "{f}_{l}", "{i}.{l}")


def _ascii(name: str) -> str:
    """Lower-case ASCII letters of a name, as an address has them: Zoë -> zoe."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii() and c.isalpha()).lower()


def fake_users(rng: random.Random | None = None) -> Iterator[dict[str, Any]]:
    """Endless plausible users ({name, email}) whose emails differ from each other."""
    rng = rng or random.Random()
    taken: dict[str, int] = {}
    while True:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        f, l = _ascii(first), _ascii(last)  # noqa: E741
        local, domain = rng.choice(PATTERNS).format(f=f, l=l, i=f[0]), rng.choice(DOMAINS)
        base = f"{local}@{domain}"
        taken[base] = seen = taken.get(base, 0) + 1
        yield {"name": f"{first} {last}", "email": base if seen == 1 else f"{local}{seen}@{domain}"}
