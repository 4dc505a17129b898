"""Ordinary locality prompts for the synthetic splits: well-known facts and plain text.

Tables of true facts, each said with a few templates, plus free-text openings without a
gold answer (locality is then measured on the unedited model's own continuation).  The
generator removes every prompt that mentions a subject of the shipped real-world sets, so
the real-world evaluation stays out of training.
"""

from __future__ import annotations

from editor_core.data.formats import LocalityPrompt

_TABLES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "capital": (
        ("The capital of {k} is", "Q: What is the capital of {k}? A:", "{k}'s capital city is"),
        {
            "Peru": "Lima", "Chile": "Santiago", "Kenya": "Nairobi", "Egypt": "Cairo",
            "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Greece": "Athens",
            "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest",
            "Poland": "Warsaw", "Thailand": "Bangkok", "Indonesia": "Jakarta", "Cuba": "Havana",
            "Argentina": "Buenos Aires", "Colombia": "Bogota", "Denmark": "Copenhagen",
            "Belgium": "Brussels", "Iran": "Tehran", "Iraq": "Baghdad", "Vietnam": "Hanoi",
            "the Philippines": "Manila", "Ukraine": "Kyiv", "Romania": "Bucharest",
            "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Nepal": "Kathmandu",
            "Ghana": "Accra", "Ethiopia": "Addis Ababa", "Senegal": "Dakar", "Iceland": "Reykjavik",
            "Venezuela": "Caracas", "Uruguay": "Montevideo", "Malaysia": "Kuala Lumpur",
        },
    ),
    "opposite": (
        ("The opposite of {k} is", "Q: What is the opposite of {k}? A:"),
        {
            "hot": "cold", "up": "down", "big": "small", "fast": "slow", "happy": "sad",
            "light": "dark", "open": "closed", "early": "late", "rich": "poor", "wet": "dry",
            "old": "young", "strong": "weak", "hard": "soft", "loud": "quiet", "full": "empty",
            "heavy": "light", "north": "south", "east": "west", "love": "hate", "win": "lose",
            "day": "night", "good": "bad", "inside": "outside", "true": "false",
        },
    ),
    "next_day": (
        ("The day after {k} is", "Q: Which day comes after {k}? A:"),
        {
            "Monday": "Tuesday", "Tuesday": "Wednesday", "Wednesday": "Thursday",
            "Thursday": "Friday", "Friday": "Saturday", "Saturday": "Sunday", "Sunday": "Monday",
        },
    ),
    "next_month": (
        ("The month after {k} is", "Q: Which month comes after {k}? A:"),
        {
            "January": "February", "February": "March", "March": "April", "April": "May",
            "May": "June", "June": "July", "July": "August", "August": "September",
            "September": "October", "October": "November", "November": "December",
            "December": "January",
        },
    ),
    "baby_animal": (
        ("A baby {k} is called a", "Q: What is a young {k} called? A:"),
        {
            "dog": "puppy", "cat": "kitten", "cow": "calf", "horse": "foal", "sheep": "lamb",
            "goat": "kid", "pig": "piglet", "duck": "duckling", "frog": "tadpole", "bear": "cub",
            "lion": "cub", "deer": "fawn", "goose": "gosling", "kangaroo": "joey",
        },
    ),
    "colour": (
        ("The colour of {k} is usually", "Q: What colour is {k}? A:"),
        {
            "grass": "green", "snow": "white", "coal": "black", "a ripe banana": "yellow",
            "a clear sky": "blue", "blood": "red", "an orange": "orange", "chocolate": "brown",
            "a lemon": "yellow", "milk": "white", "a strawberry": "red", "the sea": "blue",
        },
    ),
    "symbol": (
        ("The chemical symbol for {k} is", "Q: What is the chemical symbol of {k}? A:"),
        {
            "gold": "Au", "silver": "Ag", "iron": "Fe", "oxygen": "O", "hydrogen": "H",
            "carbon": "C", "sodium": "Na", "potassium": "K", "lead": "Pb", "copper": "Cu",
            "helium": "He", "nitrogen": "N", "calcium": "Ca", "mercury": "Hg", "tin": "Sn",
        },
    ),
    "plural": (
        ("The plural of {k} is", "Q: What is the plural of the word {k}? A:"),
        {
            "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth",
            "goose": "geese", "man": "men", "woman": "women", "person": "people", "ox": "oxen",
            "cactus": "cacti", "leaf": "leaves", "knife": "knives", "wolf": "wolves",
        },
    ),
    "animal_sound": (
        ("The sound a {k} makes is called a", "Q: What sound does a {k} make? A:"),
        {
            "dog": "bark", "cat": "meow", "cow": "moo", "lion": "roar", "horse": "neigh",
            "snake": "hiss", "owl": "hoot", "duck": "quack", "pig": "oink", "wolf": "howl",
        },
    ),
    "author": (
        ("{k} was written by", "Q: Who wrote {k}? A:", "The author of {k} is"),
        {
            "Moby-Dick": "Herman Melville", "War and Peace": "Leo Tolstoy",
            "Don Quixote": "Miguel de Cervantes", "The Odyssey": "Homer",
            "Pride and Prejudice": "Jane Austen", "Great Expectations": "Charles Dickens",
            "The Divine Comedy": "Dante Alighieri", "Crime and Punishment": "Fyodor Dostoevsky",
            "The Old Man and the Sea": "Ernest Hemingway", "Frankenstein": "Mary Shelley",
            "Dracula": "Bram Stoker", "The Trial": "Franz Kafka", "Ulysses": "James Joyce",
            "Madame Bovary": "Gustave Flaubert", "The Great Gatsby": "F. Scott Fitzgerald",
        },
    ),
    "body": (
        ("People see with their", "People hear with their", "People smell with their",
         "People taste with their"),
        {"": ""},  # filled below: each template has its own answer
    ),
}
_BODY_ANSWERS = {"see": "eyes", "hear": "ears", "smell": "noses", "taste": "tongues"}

# Free text: openings without a gold answer.
FREE_TEXT: tuple[str, ...] = (
    "Once upon a time, in a small village by the sea, there lived",
    "The best way to learn a new language is to",
    "After a long day at work, I like to",
    "The weather forecast for tomorrow says that it will",
    "To make a good cup of tea, you first need to",
    "The most important thing about friendship is",
    "In the morning, the children walked to",
    "The recipe calls for two cups of flour and",
    "She opened the door and saw",
    "The train to the airport leaves every",
    "My grandmother always told me that",
    "The museum is open every day except",
    "He put on his coat because it was",
    "The library has thousands of",
    "During the summer holidays, many families go to",
    "The meeting was postponed because",
    "A healthy breakfast usually includes",
    "The scientist looked through the microscope and",
    "Every year, millions of tourists visit",
    "The old bridge over the river was built",
    "When the rain stopped, the sky turned",
    "The teacher asked the students to",
    "Our neighbours have a dog that",
    "The shop on the corner sells",
    "Before going to bed, it is a good idea to",
    "The football match ended in a",
    "The company announced that its profits",
    "In the middle of the night, we heard",
    "The garden was full of",
    "The easiest way to get to the city centre is",
)


def ordinary_prompts() -> list[tuple[str, LocalityPrompt]]:
    """(group key, prompt) for every ordinary locality prompt.

    The group key (table and row) lets a split keep all phrasings of one fact together.
    """
    out: list[tuple[str, LocalityPrompt]] = []
    for table, (templates, rows) in _TABLES.items():
        if table == "body":
            for t in templates:
                verb = t.split()[1]
                out.append((f"body:{verb}", LocalityPrompt(t, _BODY_ANSWERS[verb])))
            continue
        for key, answer in rows.items():
            for t in templates:
                out.append((f"{table}:{key}", LocalityPrompt(t.format(k=key), answer)))
    out.extend((f"free:{i}", LocalityPrompt(p, None)) for i, p in enumerate(FREE_TEXT))
    return out


# Free-text openings about made-up people and real places; filled per split with names
# that are never edit subjects, so the pool can be as large as the split needs.
FREE_TEMPLATES: tuple[str, ...] = (
    "Last summer, {name} travelled to {city} and",
    "{name} opened the letter and",
    "On Sunday morning, {name} went to the market to buy",
    "The new restaurant in {city} is famous for its",
    "{name} said that the best thing about {city} is",
    "When {name} arrived at the station, the train had already",
    "In {city}, the winters are usually",
    "{name} spent the whole afternoon reading",
    "The mayor of {city} announced a plan to",
    "After the concert, {name} and her friends",
    "The museum in {city} has a famous collection of",
    "{name} likes to start the day with a cup of",
    "Every evening, {name} walks the dog along",
    "The streets of {city} were full of",
    "{name} wrote a long email to",
    "At the weekend, {name} usually",
    "The bakery next to {name}'s house sells",
    "{name} has always wanted to learn how to",
    "The flight from {city} was delayed because of",
    "{name} put the keys on the",
)
