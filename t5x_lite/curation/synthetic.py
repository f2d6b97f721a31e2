"""A synthetic web-like corpus for tests, examples and benchmarks (deterministic per seed).

English prose pages (which pass every rule), mixed with the junk a crawl holds, each kind
labelled in `kind`: navigation boilerplate, spam with repeated lines, lorem ipsum, code,
German and French pages, number tables, tiny pages, exact duplicates (spacing changed) and
near duplicates (1-2% of words edited), and pages with e-mail/IP addresses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

ADJECTIVES = (
  "old", "young", "quiet", "busy", "narrow", "wooden", "famous", "small", "northern", "careful",
  "bright", "broken", "ancient", "modern", "gentle", "heavy", "patient", "curious", "distant",
  "local", "hidden", "public", "private", "early", "late", "simple", "strange", "honest",
  "proud", "tired", "clever", "silent", "golden", "frozen", "sunny", "crowded", "empty", "green",
)  # fmt: skip
NOUNS = (
  "miller", "doctor", "guide", "neighbour", "museum", "bakery", "council", "orchestra", "farmer",
  "nurse", "library", "teacher", "harbour", "editor", "bridge", "garden", "schedule", "budget",
  "letter", "road", "boat", "archive", "roof", "market", "river", "song", "wall", "recipe",
  "path", "school", "village", "station", "tower", "forest", "kitchen", "painter", "sailor",
  "student", "mayor", "clock", "window", "festival", "journey", "report", "meeting", "storm",
)  # fmt: skip
VERBS = (
  "discussed", "repaired", "described", "visited", "painted", "measured", "planned", "opened",
  "reviewed", "protected", "explained", "collected", "improved", "questioned", "celebrated",
  "followed", "carried", "watched", "cleaned", "remembered", "borrowed", "moved", "found",
)  # fmt: skip
PREPOSITIONS = ("with", "near", "for", "behind", "after", "before", "beside", "under", "of", "to")
DETERMINERS = ("the", "a", "that", "every", "one", "the", "this")


def _phrase(rng: random.Random) -> str:
  return f"{rng.choice(DETERMINERS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


GERMAN = (
  "Der Stadtrat hat gestern lange über die neue Brücke gesprochen.",
  "Die Kinder spielen im Garten, während die Eltern das Essen vorbereiten.",
  "Im Winter fahren nur wenige Busse in das kleine Dorf am See.",
  "Unsere Bibliothek bleibt wegen der Renovierung bis zum Frühling geschlossen.",
  "Der alte Müller erzählt gern Geschichten aus seiner Jugend.",
  "Nach dem Regen war die Straße zum Hafen für einige Stunden gesperrt.",
)
FRENCH = (
  "Le conseil municipal a longuement discuté du nouveau pont hier soir.",
  "Les enfants jouent dans le jardin pendant que les parents préparent le repas.",
  "En hiver, peu de bus desservent le petit village au bord du lac.",
  "Notre bibliothèque reste fermée pour travaux jusqu'au printemps prochain.",
  "Le vieux meunier aime raconter des histoires de sa jeunesse.",
  "Après la pluie, la route du port a été fermée pendant quelques heures.",
)


def sentence(rng: random.Random) -> str:
  text = (
    f"{_phrase(rng)} {rng.choice(VERBS)} {_phrase(rng)} {rng.choice(PREPOSITIONS)} {_phrase(rng)}"
  )
  if rng.random() < 0.5:
    text += f" and {rng.choice(VERBS)} {_phrase(rng)}"
  return text[0].upper() + text[1:] + rng.choice(".....!?")


def english_page(rng: random.Random) -> str:
  lines = []
  for _ in range(rng.randint(6, 14)):
    lines.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 3))))
  return "\n".join(lines)


def edit_words(text: str, rate: float, rng: random.Random) -> str:
  words = text.split(" ")
  for _ in range(max(1, round(rate * len(words)))):
    words[rng.randrange(len(words))] = rng.choice(VERBS)
  return " ".join(words)


def junk_page(kind: str, rng: random.Random) -> str:
  if kind == "boilerplate":
    items = ["Home", "About us", "Contact", "Login", "Cart", "Privacy", "Careers", "News"]
    return "\n".join(rng.sample(items, 6) + [f"Copyright {rng.randint(1990, 2030)}"])
  if kind == "spam":
    line = "BUY CHEAP WATCHES NOW best price guaranteed click here"
    return "\n".join([line] * rng.randint(10, 30) + [sentence(rng)])
  if kind == "lorem":
    return english_page(rng) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
  if kind == "code":
    return "\n".join(
      f"function f{i}(x) {{ return x * {i} + {rng.randint(0, 9)}; }}" for i in range(20)
    )
  if kind == "german":
    return "\n".join(rng.choice(GERMAN) + " " + rng.choice(GERMAN) for _ in range(8))
  if kind == "french":
    return "\n".join(rng.choice(FRENCH) + " " + rng.choice(FRENCH) for _ in range(8))
  if kind == "numbers":
    return "\n".join(
      " ".join(str(rng.randint(0, 99999)) for _ in range(12)) + "." for _ in range(10)
    )
  if kind == "tiny":
    return sentence(rng)
  raise ValueError(kind)


JUNK = ("boilerplate", "spam", "lorem", "code", "german", "french", "numbers", "tiny")


def documents(
  count: int,
  seed: int = 0,
  junk_fraction: float = 0.3,
  exact_fraction: float = 0.05,
  near_fraction: float = 0.05,
  pii_fraction: float = 0.03,
) -> Iterator[dict[str, Any]]:
  """`count` records {'id', 'text', 'url', 'kind', 'duplicate_of'} in a fixed order."""
  rng = random.Random(seed)
  clean: list[tuple[str, str]] = []  # (id, text) of clean pages, to copy
  for i in range(count):
    r = rng.random()
    kind, source = "clean", None
    if r < junk_fraction:
      kind = rng.choice(JUNK)
      text = junk_page(kind, rng)
    elif clean and r < junk_fraction + exact_fraction:
      source, text = rng.choice(clean[-500:])
      kind, text = "exact_duplicate", text.replace(" ", "  ", 3) + "\n"
    elif clean and r < junk_fraction + exact_fraction + near_fraction:
      source, text = rng.choice(clean[-500:])
      kind, text = "near_duplicate", edit_words(text, rng.uniform(0.01, 0.02), rng)
    else:
      text = english_page(rng)
      if rng.random() < pii_fraction:
        kind = "pii"
        text += f"\nWrite to editor{i}@example.org or visit 93.184.{i % 250}.{i % 199} today."
      clean.append((f"doc{seed}-{i}", text))
    yield {
      "id": f"doc{seed}-{i}",
      "text": text,
      "url": f"https://example.com/{seed}/{i}",
      "kind": kind,
      "duplicate_of": source,  # the clean page a duplicate copies (None otherwise)
    }
