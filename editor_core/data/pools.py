"""Value pools (real-world values) and makers of fictional, real-looking entity names.

Values are real (cities, languages, currencies ...) so that targets are ordinary words a
model can produce; subjects are fictional so that no subject is known to the base model.
Counterfactual targets are drawn from the same pool as the true value (type-correct).
"""

from __future__ import annotations

import random

from faker import Faker

VALUE_POOLS: dict[str, tuple[str, ...]] = {
    "city": (
        "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Warsaw", "Lisbon",
        "Dublin", "Amsterdam", "Brussels", "Copenhagen", "Stockholm", "Oslo", "Helsinki",
        "Athens", "Budapest", "Zurich", "Munich", "Hamburg", "Milan", "Barcelona", "Lyon",
        "Istanbul", "Moscow", "Cairo", "Lagos", "Nairobi", "Johannesburg", "Casablanca",
        "Tokyo", "Osaka", "Seoul", "Beijing", "Shanghai", "Hong Kong", "Singapore", "Bangkok",
        "Jakarta", "Manila", "Mumbai", "Delhi", "Karachi", "Dubai", "Tehran", "Sydney",
        "Melbourne", "Auckland", "Toronto", "Montreal", "Vancouver", "Chicago", "Boston",
        "New York", "Los Angeles", "San Francisco", "Seattle", "Houston", "Miami",
        "Mexico City", "Bogota", "Lima", "Santiago", "Buenos Aires", "Sao Paulo",
        "Rio de Janeiro", "Havana", "Edinburgh", "Manchester",
    ),
    "country": (
        "France", "Germany", "Italy", "Spain", "Portugal", "Ireland", "the Netherlands",
        "Belgium", "Denmark", "Sweden", "Norway", "Finland", "Poland", "Austria",
        "Switzerland", "Greece", "Hungary", "Turkey", "Russia", "Egypt", "Nigeria", "Kenya",
        "South Africa", "Morocco", "Japan", "China", "India", "Pakistan", "Indonesia",
        "Thailand", "Vietnam", "South Korea", "Australia", "New Zealand", "Canada",
        "the United States", "Mexico", "Brazil", "Argentina", "Chile", "Peru", "Colombia",
    ),
    "language": (
        "English", "French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Swedish",
        "Norwegian", "Danish", "Finnish", "Polish", "Czech", "Hungarian", "Greek", "Turkish",
        "Russian", "Arabic", "Hebrew", "Persian", "Hindi", "Bengali", "Urdu", "Japanese",
        "Korean", "Mandarin", "Cantonese", "Thai", "Vietnamese", "Indonesian", "Swahili",
    ),
    "currency": (
        "euro", "dollar", "pound", "yen", "yuan", "rupee", "peso", "franc", "krona", "krone",
        "zloty", "forint", "ruble", "lira", "real", "rand", "dinar", "dirham", "won", "baht",
        "shilling", "rupiah", "naira",
    ),
    "continent": ("Europe", "Asia", "Africa", "North America", "South America", "Oceania"),
    "university": (
        "Harvard University", "Yale University", "Princeton University", "Stanford University",
        "the University of Oxford", "the University of Cambridge", "MIT", "Caltech",
        "Columbia University", "the University of Chicago", "ETH Zurich", "the Sorbonne",
        "the University of Tokyo", "Peking University", "the University of Toronto",
        "McGill University", "the University of Edinburgh", "Imperial College London",
        "the University of Melbourne", "Heidelberg University", "the University of Bologna",
        "Cornell University", "the University of Michigan", "Duke University",
    ),
    "field": (
        "physics", "chemistry", "biology", "mathematics", "economics", "philosophy",
        "linguistics", "sociology", "psychology", "astronomy", "geology", "medicine",
        "computer science", "history", "architecture", "law", "neuroscience", "ecology",
        "genetics", "anthropology", "statistics", "literature",
    ),
    "occupation": (
        "lawyer", "doctor", "journalist", "architect", "engineer", "teacher", "nurse",
        "pharmacist", "accountant", "diplomat", "surgeon", "photographer", "chef", "pilot",
        "economist", "historian", "novelist", "translator", "banker", "veterinarian",
    ),
    "award": (
        "Nobel Prize in Physics", "Nobel Prize in Chemistry", "Nobel Prize in Literature",
        "Nobel Peace Prize", "Fields Medal", "Turing Award", "Pulitzer Prize", "Booker Prize",
        "Pritzker Prize", "Abel Prize", "Wolf Prize", "Kyoto Prize", "Lasker Award",
        "Goethe Prize",
    ),
    "instrument": (
        "piano", "violin", "cello", "guitar", "drums", "trumpet", "saxophone", "flute",
        "clarinet", "harp", "organ", "bass guitar", "trombone", "accordion", "double bass",
        "oboe", "banjo", "viola",
    ),
    "genre": (
        "jazz", "blues", "rock", "punk rock", "heavy metal", "hip hop", "reggae", "country music",
        "folk music", "classical music", "techno", "soul music", "funk", "opera", "pop music",
        "bossa nova", "flamenco", "gospel",
    ),
    "sport": (
        "football", "basketball", "baseball", "ice hockey", "rugby", "volleyball", "cricket",
        "handball", "water polo", "American football",
    ),
    "position": (
        "goalkeeper", "defender", "midfielder", "striker", "point guard", "center", "pitcher",
        "catcher", "shortstop", "winger", "fly-half", "prop", "setter", "libero",
        "wicket-keeper", "bowler", "quarterback", "linebacker", "pivot",
    ),
    "industry": (
        "automotive industry", "banking sector", "insurance industry", "pharmaceutical industry",
        "software industry", "oil industry", "steel industry", "retail sector",
        "telecommunications industry", "aviation industry", "shipping industry",
        "food industry", "fashion industry", "mining industry", "chemical industry",
    ),
    "product_category": (
        "cars", "smartphones", "laptops", "shoes", "furniture", "toys", "beer", "chocolate",
        "bicycles", "cameras", "watches", "tyres", "medicines", "video games", "televisions",
        "aircraft", "cosmetics",
    ),
    "film_genre": (
        "comedy", "horror film", "thriller", "western", "documentary", "romantic comedy",
        "science fiction film", "musical", "war film", "crime drama", "animated film",
        "fantasy film",
    ),
}

# Positions are consistent with the sport in the true world.
SPORT_POSITIONS: dict[str, tuple[str, ...]] = {
    "football": ("goalkeeper", "defender", "midfielder", "striker", "winger"),
    "basketball": ("point guard", "center"),
    "baseball": ("pitcher", "catcher", "shortstop"),
    "ice hockey": ("goalkeeper", "defender", "center", "winger"),
    "rugby": ("fly-half", "prop", "winger"),
    "volleyball": ("setter", "libero"),
    "cricket": ("wicket-keeper", "bowler"),
    "handball": ("goalkeeper", "pivot", "winger"),
    "water polo": ("goalkeeper", "center"),
    "American football": ("quarterback", "linebacker"),
}

_MASCOTS = (
    "Falcons", "Wolves", "Rangers", "Lions", "Hornets", "Pirates", "Comets", "Titans",
    "Bears", "Eagles", "Sharks", "Storm", "Royals", "Vikings", "Stallions", "Foxes", "Owls",
    "Panthers", "Knights", "Mariners",
)
_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Crimson", "Hollow", "Electric", "Velvet", "Distant",
    "Burning", "Frozen", "Wild", "Lonely", "Hidden", "Restless", "Scarlet", "Silver",
    "Midnight", "Paper", "Iron", "Glass", "Last", "Secret", "Quiet", "Endless", "Northern",
    "Bitter", "Sleeping", "Falling", "Wandering", "Painted",
)
_NOUNS = (
    "Harbor", "Orchard", "Lantern", "River", "Garden", "Mirror", "Horizon", "Winter", "Empire",
    "Station", "Forest", "Canyon", "Letter", "Signal", "Island", "Bridge", "Kingdom", "Tide",
    "Compass", "Meadow", "Window", "Shadow", "Harvest", "Voyage", "Engine", "Crown", "Valley",
    "Tower", "Promise", "Frontier", "Cathedral", "Ember",
)
_SYLLABLES = (
    "ka", "vel", "or", "dra", "mi", "sen", "tor", "lu", "bar", "nes", "ri", "zan", "qu",
    "el", "mon", "tav", "ara", "sil", "ven", "cor", "dol", "fen", "gar", "ist", "lor",
)
_COUNTRY_ENDINGS = ("ia", "land", "stan", "ovia", "ara", "esh", "ica", "mark")
_MODELS = ("X", "Pro", "S", "Max", "Air", "One", "GT", "Neo", "Lite", "Ultra")
_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "pl_PL", "sv_SE"]


class NameMaker:
    """Unique fictional names of every entity type, deterministic for a seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.fake = Faker(_LOCALES)
        self.fake.seed_instance(seed)
        self.en = Faker("en_US")
        self.en.seed_instance(seed + 1)
        # Word sequences of every name handed out (and of every value), and all their
        # contiguous sub-sequences: a new name may neither contain nor be contained in
        # one, so that one entity's name never appears inside another's prompt.
        self.used: set[tuple[str, ...]] = set()
        self.used_parts: set[tuple[str, ...]] = set()
        for pool in VALUE_POOLS.values():
            for value in pool:
                self._claim(value)

    @staticmethod
    def _words(name: str) -> tuple[str, ...]:
        return tuple(name.lower().replace(",", " ").split())

    @staticmethod
    def _parts(words: tuple[str, ...]) -> set[tuple[str, ...]]:
        return {words[i:j] for i in range(len(words)) for j in range(i + 1, len(words) + 1)}

    def _claim(self, name: str) -> None:
        words = self._words(name)
        self.used.add(words)
        self.used_parts |= self._parts(words)

    def _free(self, name: str) -> bool:
        words = self._words(name)
        return words not in self.used_parts and not (self._parts(words) & self.used)

    def _coined(self, n: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(n)).capitalize()

    def _one(self, kind: str) -> str:
        r = self.rng
        if kind == "person":
            return f"{self.fake.first_name()} {self.fake.last_name()}"
        if kind == "company":
            name = self.en.company() if r.random() < 0.6 else self._coined(r.randint(2, 3))
            suffix = r.choice(("", "", " Group", " Industries", " Systems", " AG", " Holdings"))
            return name + suffix
        if kind == "band":
            return r.choice((
                f"The {r.choice(_ADJECTIVES)} {r.choice(_MASCOTS)}",
                f"{r.choice(_NOUNS)} {r.choice(_NOUNS)}",
                f"The {self.en.last_name()} {r.choice(('Brothers', 'Quartet', 'Collective'))}",
            ))
        if kind == "film":
            return r.choice((
                f"The {r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}",
                f"{r.choice(_NOUNS)} of the {r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}",
                f"{r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}",
            ))
        if kind == "university":
            return r.choice((
                f"the University of {self.en.city()}",
                f"{self.en.last_name()} University",
                f"{self.en.city()} Institute of Technology",
                f"{self.en.last_name()} College",
            ))
        if kind == "country":
            return self._coined(r.randint(1, 2)) + r.choice(_COUNTRY_ENDINGS)
        if kind == "product":
            return f"{self._coined(2)} {r.choice(_MODELS)}{r.randint(2, 99)}"
        if kind == "team":
            return f"{self.en.city()} {r.choice(_MASCOTS)}"
        if kind == "label":
            return f"{self.en.last_name()} {r.choice(('Records', 'Music', 'Sound'))}"
        raise KeyError(kind)

    def make(self, kind: str) -> str:
        for _ in range(1000):
            name = self._one(kind)
            if self._free(name):
                self._claim(name)
                return name
        raise RuntimeError(f"ran out of unique {kind} names")
